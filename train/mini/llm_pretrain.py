"""Stage 3 of the mini recipe: a small Llama pre-trained on world text, with its own sentencepiece tokenizer.

The corpus is every world task (``data_builders.world.build.make_record``: captioning, generation, editing,
in-context editing, dialogues, joint outputs …) rendered through the Llama-2 chat template
(``codi2.llm.LLAMA2_CHAT_TEMPLATE``), plus plain captions of all three modalities. The LLM has no media
tokens yet (``codi2.llm.load_tokenizer`` adds them in the LoRA stages), so a media part is written as its
caption, e.g. ``[image: a small red circle at the top]``: the base model learns the world's language and
the structure of every task (which object an edit yields, what an A : A' :: B : ? analogy completes to) in
words; the later stages ground those words in the encoder's features and the heads' outputs. Records are
generated without rendering any media (only their captions are needed).

Output directory (``runs/mini/llm``): a Hugging Face ``LlamaForCausalLM`` (``config.json`` +
``model.safetensors``) and ``tokenizer.model``, usable as ``llm.path`` / ``llm.tokenizer`` in
``configs/model/mini.yaml``; ``pretrain.json`` holds the report (losses, held-out perplexity, timings).

    codi2 train-component llm configs/train/mini-llm.yaml
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from codi2.config import LLMConfig
from codi2.io import atomic_dir
from train.checkpointing import LoopCheckpoints, LoopClock, resumed_note
from train.mini.common import SPLITS, check_choice, seed_everything, set_threads

logger = logging.getLogger(__name__)

CHAT_MARKERS: tuple[str, ...] = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
TOKENIZER_FILE = "tokenizer.model"
REPORT_FILE = "pretrain.json"


@dataclass
class LLMArchitecture:
    """The Llama shape (``codi2.llm.llama_config`` fields); ``vocab_size`` comes from the trained tokenizer."""

    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0


@dataclass
class LLMPretrainConfig:
    """LLM pre-training run.

    Attributes:
        out: output directory (HF Llama dir + ``tokenizer.model``), relative to the current directory.
        arch: the Llama shape.
        vocab_size: sentencepiece pieces requested (a corpus too small for it gives fewer; the model uses
            the tokenizer's actual size).
        n_records / n_val_records: world conversations generated for training / held-out evaluation (all
            tasks in turn, train / val split); n_captions: extra plain captions per modality.
        system_prompt: written as the system message of every conversation when non-empty (match
            ``llm.system_prompt`` of the model config).
        block_size / batch_size / steps: packed sequences of ``block_size`` tokens.
        lr / min_lr / weight_decay / warmup_steps / grad_clip: AdamW, linear warm-up, cosine to ``min_lr``.
        world_seed / seed: data and torch seeds.
        eval_batches: held-out batches for the perplexity report.
        checkpoint_every: write the loop's state (weights, optimiser, generators, losses, and the trained tokenizer)
            to ``.<out name>.resume`` beside ``out`` every this many steps, so that a killed run started again with
            the same settings goes on from there and writes the same model (0: no checkpoints).
        resume: go on from that state when it holds this run's (false: discard it and start over).
    """

    out: str = "runs/mini/llm"
    arch: LLMArchitecture = field(default_factory=LLMArchitecture)
    vocab_size: int = 1024
    n_records: int = 20000
    n_val_records: int = 500
    n_captions: int = 5000
    system_prompt: str = ""
    block_size: int = 256
    batch_size: int = 16
    steps: int = 3000
    lr: float = 1e-3
    min_lr: float = 1e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    world_seed: int = 0
    seed: int = 0
    eval_batches: int = 8
    log_every: int = 100
    num_threads: int = 0
    checkpoint_every: int = 200
    resume: bool = True


# ----------------------------------------------------------------------------- corpus
def _text_only_store() -> Any:
    """A ``MediaStore`` that renders nothing: every media part gets a placeholder path (only captions matter)."""
    from data_builders.world.build import MediaStore

    class TextOnlyStore(MediaStore):
        def image(self, obj: Any, seed: int) -> str:
            return "media/image/none.png"

        def audio(self, obj: Any, seed: int) -> str:
            return "media/audio/none.wav"

        def video(self, obj: Any, direction: str, seed: int) -> str:
            return "media/video/none.mp4"

    return TextOnlyStore(Path("."))


def render_message_text(message: dict) -> str:
    """One manifest message's content as plain text: text parts as they are, media parts as
    ``[image: <caption>]`` (``[image]`` without a caption)."""
    out = []
    for part in message["content"]:
        if part["type"] == "text":
            out.append(part["text"].strip())
        else:
            cap = part.get("caption")
            out.append(f"[{part['type']}: {cap}]" if cap else f"[{part['type']}]")
    return " ".join(s for s in out if s)


def world_conversations(n: int, world_seed: int, split: str = "train",
                        tasks: Optional[Sequence[str]] = None) -> list[list[dict]]:
    """``n`` world conversations (record i has task ``tasks[i % len(tasks)]``) as chat messages
    ``[{'role', 'content': str}]`` with media written as captions."""
    from data_builders.world.build import TASKS, make_record

    check_choice("split", split, SPLITS)
    tasks = list(TASKS if tasks is None else tasks)
    store = _text_only_store()
    convs = []
    for i in range(n):
        rec = make_record(i, tasks[i % len(tasks)], store, world_seed, split)
        convs.append([{"role": m["role"], "content": render_message_text(m)} for m in rec["messages"]])
    return convs


def caption_lines(n: int, world_seed: int, split: str = "train") -> list[str]:
    """``n`` varied captions per modality, capitalised, one per line."""
    from data_builders.world import world

    rng = np.random.default_rng([world_seed, SPLITS.index(split), 0xCA])
    lines = []
    for _ in range(n):
        obj, d = world.random_object(rng), world.random_direction(rng)
        for m in ("image", "audio", "video"):
            c = world.caption(m, obj, d if m == "video" else None, rng)
            lines.append(c[:1].upper() + c[1:] + ".")
    return lines


def chat_texts(tokenizer: Any, convs: list[list[dict]], system_prompt: str = "") -> list[str]:
    """Conversations through the tokenizer's chat template (Llama-2 format; ``<s>``/``</s>`` as text)."""
    texts = []
    for conv in convs:
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + conv
        texts.append(tokenizer.apply_chat_template(msgs, tokenize=False))
    return texts


def _pack(tokenizer: Any, texts: list[str], captions: list[str]) -> torch.Tensor:
    """Every text tokenized (chat texts carry their own <s>/</s>; captions get them added), concatenated: (N,)."""
    ids: list[int] = []
    for t in texts:
        ids += tokenizer(t, add_special_tokens=False)["input_ids"]
    for c in captions:
        ids += [tokenizer.bos_token_id] + tokenizer(c, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return torch.tensor(ids, dtype=torch.long)


# ----------------------------------------------------------------------------- training
def _lr_at(step: int, cfg: LLMPretrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _batch(data: torch.Tensor, block: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` random windows of ``block + 1`` tokens: (n, block + 1)."""
    starts = torch.randint(len(data) - block - 1, (n,), generator=g)
    return torch.stack([data[s:s + block + 1] for s in starts.tolist()])


@torch.no_grad()
def _eval_loss(model: Any, data: torch.Tensor, block: int, batches: int, batch_size: int) -> float:
    """Mean next-token loss over ``batches`` fixed, consecutive windows of the held-out tokens."""
    model.eval()
    losses = []
    n = min(batches * batch_size, (len(data) - 1) // block)
    for i in range(0, n, batch_size):
        x = torch.stack([data[j * block:(j + 1) * block + 1] for j in range(i, min(n, i + batch_size))])
        logits = model(input_ids=x[:, :-1]).logits
        losses.append(float(F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())))
    model.train()
    return float(np.mean(losses))


def resume_fingerprint(cfg: LLMPretrainConfig) -> dict:
    """What makes a pre-training run the same run for resuming (:class:`~train.checkpointing.LoopCheckpoints`): the
    settings that change the tokenizer or the weights. Logging, evaluation, threads and ``out`` are left out (a
    moved run folder still resumes)."""
    skip = {"eval_batches", "log_every", "num_threads", "checkpoint_every", "resume", "out"}
    return {"run": {k: v for k, v in asdict(cfg).items() if k not in skip}}


def pretrain_llm(cfg: LLMPretrainConfig) -> dict:
    """Trains the tokenizer and the Llama, writes ``cfg.out`` atomically. Returns the report.

    Report: ``vocab_size``, ``params``, ``train_tokens``, ``steps``, ``seconds``, ``seconds_per_step``,
    ``final_loss``, ``val_loss`` / ``val_ppl`` (held-out val-split conversations), ``sample`` (greedy
    reply to a held-out prompt); ``resumed_after_step`` when the run went on from a checkpoint (``seconds`` then
    adds up every run's).
    """
    from transformers import LlamaForCausalLM

    from codi2.llm import llama_config, load_tokenizer, train_sentencepiece

    if cfg.steps < 1 or cfg.batch_size < 1 or cfg.block_size < 8:
        raise ValueError(f"steps = {cfg.steps}, batch_size = {cfg.batch_size}, block_size = {cfg.block_size}; "
                         "need steps >= 1, batch_size >= 1, block_size >= 8")
    if cfg.block_size > cfg.arch.max_position_embeddings:
        raise ValueError(f"block_size = {cfg.block_size} exceeds arch.max_position_embeddings = "
                         f"{cfg.arch.max_position_embeddings}")
    set_threads(cfg.num_threads)
    out = Path(cfg.out)
    ckpt = LoopCheckpoints(out.with_name(f".{out.name}.resume"), resume_fingerprint(cfg), cfg.checkpoint_every,
                           cfg.resume)
    seed_everything(cfg.seed)
    t0 = time.time()
    train_convs = world_conversations(cfg.n_records, cfg.world_seed, "train")
    val_convs = world_conversations(cfg.n_val_records, cfg.world_seed, "val")
    train_caps = caption_lines(cfg.n_captions, cfg.world_seed, "train")
    logger.info("corpus: %d conversations, %d captions (%.1f s)", len(train_convs), len(train_caps), time.time() - t0)

    with atomic_dir(cfg.out) as tmp:
        # 1. tokenizer: sentencepiece on the chat-formatted corpus (markers kept whole)
        #    (a resumed run takes the one its checkpoints were trained with)
        kept = ckpt.kept(TOKENIZER_FILE)
        if kept is not None:
            shutil.copyfile(kept, tmp / TOKENIZER_FILE)
            logger.info("tokenizer: the resumed run's, from %s", kept)
        else:
            plain = [m["content"] for conv in train_convs for m in conv] + train_caps
            model_file = train_sentencepiece(plain, cfg.vocab_size, tmp / "tokenizer", hard_vocab_limit=False,
                                             user_defined_symbols=CHAT_MARKERS)
            model_file.rename(tmp / TOKENIZER_FILE)
            (tmp / "tokenizer.vocab").unlink(missing_ok=True)
            ckpt.keep(TOKENIZER_FILE, tmp / TOKENIZER_FILE)
        tok = load_tokenizer(LLMConfig(tokenizer=str(tmp / TOKENIZER_FILE)), special_tokens=[])
        train_ids = _pack(tok, chat_texts(tok, train_convs, cfg.system_prompt), train_caps)
        val_ids = _pack(tok, chat_texts(tok, val_convs, cfg.system_prompt), [])
        if len(train_ids) <= cfg.block_size + 1 or len(val_ids) <= cfg.block_size + 1:
            raise ValueError(f"corpus too small for block_size = {cfg.block_size}: {len(train_ids)} train / "
                             f"{len(val_ids)} val tokens; raise n_records / n_val_records or lower block_size")
        logger.info("tokenizer: %d pieces; %d train tokens, %d val tokens", tok.vocab_size, len(train_ids), len(val_ids))

        # 2. model
        a = cfg.arch
        lcfg = LLMConfig(vocab_size=tok.vocab_size, hidden_size=a.hidden_size, intermediate_size=a.intermediate_size,
                         num_hidden_layers=a.num_hidden_layers, num_attention_heads=a.num_attention_heads,
                         num_key_value_heads=a.num_key_value_heads, max_position_embeddings=a.max_position_embeddings,
                         rope_theta=a.rope_theta)
        model = LlamaForCausalLM(llama_config(lcfg)).train()
        n_params = sum(p.numel() for p in model.parameters())
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
        logger.info("Llama: %s parameters, %d steps x %d x %d tokens", f"{n_params:,}", cfg.steps, cfg.batch_size,
                    cfg.block_size)

        # 3. train
        g = torch.Generator().manual_seed(cfg.seed)
        state = ({"model": model}, opt, {"g": g})
        done, extra = ckpt.restore("llm", *state)
        losses: list[float] = extra.get("losses", [])
        clock = LoopClock(extra)
        bar = tqdm(range(done, cfg.steps), initial=done, total=cfg.steps, desc="llm", unit="step")
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, cfg)
            x = _batch(train_ids, cfg.block_size, cfg.batch_size, g)  # (B, T+1)
            logits = model(input_ids=x[:, :-1]).logits  # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
            if cfg.log_every and (step + 1) % cfg.log_every == 0:
                logger.info("step %d: loss %.4f (lr %.2e)", step + 1, float(np.mean(losses[-cfg.log_every:])),
                            _lr_at(step, cfg))
            ckpt.save("llm", step + 1, cfg.steps, *state, {"losses": losses, **clock.totals()})
        seconds, cpu_seconds = clock.totals().values()
        val_loss = _eval_loss(model, val_ids, cfg.block_size, cfg.eval_batches, cfg.batch_size)
        sample = _greedy_reply(model, tok, val_convs[0][:1], cfg.system_prompt)
        logger.info("held-out loss %.4f (ppl %.2f); sample reply to %r: %r", val_loss, math.exp(val_loss),
                    val_convs[0][0]["content"], sample)

        # 4. save
        model.eval()
        model.save_pretrained(str(tmp))
        report = {"vocab_size": tok.vocab_size, "params": n_params, "train_tokens": len(train_ids),
                  "val_tokens": len(val_ids), "steps": cfg.steps, "seconds": round(seconds, 1),
                  "seconds_per_step": round(seconds / cfg.steps, 4),
                  "cpu_seconds_per_step": round(cpu_seconds / cfg.steps, 4), "threads": torch.get_num_threads(),
                  "final_loss": float(np.mean(losses[-20:])),
                  "val_loss": val_loss, "val_ppl": math.exp(val_loss), "sample": sample, "config": asdict(cfg),
                  **resumed_note(done)}
        (tmp / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    ckpt.clear()
    logger.info("saved the mini LLM to %s (%.1f s training, %.3f s/step)", cfg.out, seconds, seconds / cfg.steps)
    return report


@torch.no_grad()
def _greedy_reply(model: Any, tok: Any, conv: list[dict], system_prompt: str, max_new_tokens: int = 32) -> str:
    """Greedy continuation of the chat-formatted ``conv`` (ending with a user turn), up to ``</s>``."""
    text = chat_texts(tok, [conv], system_prompt)[0]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    model.eval()
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    model.train()
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m train.mini.llm_pretrain CONFIG [key=value …]``."""
    from train.mini import run_stage

    return run_stage("llm", argv)


if __name__ == "__main__":
    raise SystemExit(main())
