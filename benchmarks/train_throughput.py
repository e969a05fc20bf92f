"""Training throughput: our training step against a plain PEFT + PyTorch loop, and length-grouped
batches against random ones. Side by side in one run, on the same random model; JSON out.

1. ``step``: tokens/s of one optimizer step (forward, backward, AdamW) on the *same* text batch, for
   (a) codi2's step (``train.step.TrainModule`` through ``train.loop.PlainEngine``, as ``python -m train``
   runs it: CoDi-2 embedding path, LM head on the supervised positions only, new token rows trainable, fused
   AdamW) and (b) a plain loop: ``LlamaForCausalLM`` of the
   same shape with ``peft.get_peft_model(LoraConfig(..., trainable_token_indices=<the new token ids>))``, so that
   it trains the same LLM parameters, ``model(input_ids, attention_mask, labels)``, ``AdamW`` (and, for
   reference, the same without the new token rows: ``plain_peft_lora_only``). Each round times (a) then (b) back to back; ``ratio_codi2_over_plain`` is the median over rounds
   of plain time / our time (≥ 1 means we are at least as fast), which a busy machine disturbs least; the
   fastest and median step times of each are reported too.
2. ``grouping``: real (non-padding) tokens/s over one epoch of phase-homogeneous batches drawn by
   ``train.phases.PhaseSampler`` from conversations of varied length, with ``group_by_length`` on and off
   (collate + step timed, the fastest of ``--repeats`` per batch, batches of the two alternating), and the
   padding fraction of each.

    python benchmarks/train_throughput.py --out train_throughput.json
    python benchmarks/train_throughput.py llm.hidden_size=512 llm.num_hidden_layers=8 --batch-size 8
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

# A small but not trivial LLM so that the step is dominated by the model, not by Python overhead.
DEFAULT_OVERRIDES = ["llm.hidden_size=256", "llm.intermediate_size=688", "llm.num_hidden_layers=4",
                     "llm.num_attention_heads=4", "llm.num_key_value_heads=4", "llm.lora.r=16", "llm.lora.alpha=32"]


def _conversations(n: int, lo: int, hi: int, seed: int):
    from codi2.conversation import Message
    from codi2.pipeline import TINY_WORDS

    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(TINY_WORDS) for _ in range(k))  # noqa: E731
    return [[Message("user", words(rng.randint(lo, hi))), Message("assistant", words(rng.randint(lo, hi)))]
            for _ in range(n)]


def _plain_peft(cfg, vocab: int, new_ids: Sequence[int]):
    """The baseline: transformers Llama of the same shape + peft LoRA on the same modules, and (when ``new_ids``)
    the same new token rows trainable in the input and output embeddings, the standard peft way
    (``trainable_token_indices``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from codi2.llm import llama_config

    lcfg = llama_config(cfg.llm)
    lcfg.vocab_size = vocab
    rows = {"embed_tokens": list(new_ids), "lm_head": list(new_ids)} if new_ids else None
    model = get_peft_model(LlamaForCausalLM(lcfg), LoraConfig(
        r=cfg.llm.lora.r, lora_alpha=cfg.llm.lora.alpha, lora_dropout=cfg.llm.lora.dropout,
        target_modules=list(cfg.llm.lora.target_modules), task_type="CAUSAL_LM", trainable_token_indices=rows))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, opt


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("override", nargs="*", help="key=value model-config overrides (on top of the defaults above)")
    p.add_argument("--config", default="tiny")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=16, help="alternating rounds of the step comparison")
    p.add_argument("--steps", type=int, default=1, help="steps per round")
    p.add_argument("--records", type=int, default=48, help="conversations in the grouping comparison")
    p.add_argument("--repeats", type=int, default=3, help="timings per grouping batch (the fastest counts)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: steadiest on a shared CPU; 0: torch's default)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from codi2.config import load_model_config
    from codi2.llm import train_sentencepiece
    from codi2.model import CoDi2Model
    from codi2.pipeline import tiny_corpus
    from train.config import TrainConfig
    from train.loop import PlainEngine
    from train.phases import PhaseSampler
    from train.step import TrainModule, set_stage

    cfg = load_model_config(args.config, DEFAULT_OVERRIDES + list(args.override))
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_sentencepiece(tiny_corpus(), cfg.llm.vocab_size, Path(tmp) / "tok", hard_vocab_limit=False)
        cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, tokenizer=str(tok)))
        torch.manual_seed(0)
        model = CoDi2Model(cfg)
    set_stage(model, "instruction_tuning")
    module = TrainModule(model, all_modules=False).train()  # one process, as `python -m train`
    tcfg = TrainConfig(grad_accum=1)
    tcfg.optim.grad_clip = 0.0  # the plain loop does not clip either
    ours = PlainEngine(module, tcfg, torch.device("cpu"))
    plain = {"plain_peft": _plain_peft(cfg, model.llm.vocab_size, model.llm.new_token_ids),
             "plain_peft_lora_only": _plain_peft(cfg, model.llm.vocab_size, ())}

    # ---------------------------------------------------------------- 1. the step, same batch
    convs = _conversations(args.batch_size, 15, 25, seed=0)
    batch = model.collate(convs)
    ids, mask, labels = batch.input_ids, batch.attention_mask, batch.labels
    tokens = int(mask.sum())

    def our_step():
        out = ours.forward(batch)
        ours.backward(out.loss)
        ours.step()

    def plain_step(name: str):
        base, base_opt = plain[name]
        loss = base(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        base_opt.step()
        base_opt.zero_grad(set_to_none=True)

    fns = {"codi2": our_step, **{k: (lambda k=k: plain_step(k)) for k in plain}}
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t) / args.steps)
    tps = {k: tokens / min(v) for k, v in times.items()}
    # each round times both back to back, so its ratio sees the same machine load: the median of those is the
    # figure least moved by other processes
    paired = {k: statistics.median(p / o for o, p in zip(times["codi2"], times[k])) for k in plain}
    step = {"batch": [int(s) for s in ids.shape], "tokens_per_batch": tokens,
            "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
            "step_ms_min": {k: round(1000 * min(v), 2) for k, v in times.items()},
            "step_ms_median": {k: round(1000 * statistics.median(v), 2) for k, v in times.items()},
            "ratio_codi2_over_plain": round(paired["plain_peft"], 3),
            "ratio_codi2_over_plain_lora_only": round(paired["plain_peft_lora_only"], 3),
            "ratio_of_fastest_rounds": round(tps["codi2"] / tps["plain_peft"], 3),
            "note": "plain_peft trains what codi2 trains in the LLM (LoRA + the new token rows, peft "
                    "trainable_token_indices); plain_peft_lora_only trains LoRA alone (less work: no gradient "
                    "into the embeddings)"}

    # ---------------------------------------------------------------- 2. length-grouped vs random batches
    pool = _conversations(args.records, 2, 60, seed=1)
    lengths = {i: len(model.builder.encode(c)) for i, c in enumerate(pool)}
    n_batches = args.records // args.batch_size
    samplers = {name: PhaseSampler({"text": list(range(len(pool)))}, args.batch_size, seed=0, lengths=lengths,
                                   group_by_length=grouped)
                for name, grouped in (("random", False), ("length_grouped", True))}
    acc = {name: {"real": 0, "padded": 0, "seconds": 0.0} for name in samplers}
    for _ in range(n_batches):  # one epoch each, batches alternating between the two so load hits both alike
        for name, sampler in samplers.items():
            b = sampler.next_batch()
            best = float("inf")
            for _ in range(args.repeats):  # fastest of a few repeats: robust to other processes' bursts
                t = time.perf_counter()
                mb = model.collate([pool[i] for i in b.indices])
                out = ours.forward(mb)
                ours.backward(out.loss)
                ours.step()
                best = min(best, time.perf_counter() - t)
            a = acc[name]
            a["seconds"] += best
            a["real"] += int(mb.attention_mask.sum())
            a["padded"] += mb.attention_mask.numel()
    grouping = {name: {"real_tokens_per_s": round(a["real"] / a["seconds"], 1), "seconds": round(a["seconds"], 3),
                       "padding_fraction": round(1 - a["real"] / a["padded"], 3), "batches": n_batches}
                for name, a in acc.items()}
    grouping["speedup_grouped_over_random"] = round(
        grouping["length_grouped"]["real_tokens_per_s"] / grouping["random"]["real_tokens_per_s"], 3)

    result = {"benchmark": "train_throughput", "device": "cpu", "threads": torch.get_num_threads(),
              "model": {"config": args.config, "overrides": DEFAULT_OVERRIDES + list(args.override),
                        "trainable": {k: sum(p.numel() for p in v) for k, v in model.trainable_parameters().items()}},
              "step": step, "grouping": grouping}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
