"""Tests for codi2.llm on a tiny sentencepiece tokenizer and a tiny random Llama (CPU, seconds)."""
from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from codi2.config import LLMConfig, LoRAConfig
from codi2.llm import (LLAMA2_CHAT_TEMPLATE, llama_param_count, load_llm, load_tokenizer,
                       train_sentencepiece)
from codi2.modality import Modality, special_tokens

WORDS = ("the a red blue green yellow circle square triangle small large left right top bottom moves up down "
         "sound image video make it describe this here is what you see hello world pitch higher lower and of "
         "picture audio clip shows").split()
SPECIALS = special_tokens({Modality.IMAGE: 4, Modality.AUDIO: 2, Modality.VIDEO: 2})


def tiny_texts(n: int = 1500, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + rng.choice([".", "?", "!", ""])
             for _ in range(n)]
    return texts + ["Numbers 123 4567, (a, b) [c] {d}: 8/9", "[INST] <<SYS>> [/INST] <</SYS>>"]


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    return train_sentencepiece(tiny_texts(), 400, tmp_path_factory.mktemp("sp") / "tiny")


def tiny_llm_cfg(sp_model, **lora) -> LLMConfig:
    """A tiny LLMConfig: hidden 32, 2 layers, 4 heads, vocab = the tiny sentencepiece (400)."""
    return LLMConfig(path=None, tokenizer=str(sp_model), vocab_size=400, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                     lora=LoRAConfig(**{"r": 4, "alpha": 8, "dropout": 0.0, **lora}))


@pytest.fixture(scope="module")
def tok(sp_model):
    return load_tokenizer(tiny_llm_cfg(sp_model), SPECIALS)


@pytest.fixture(scope="module")
def hf_dir(sp_model, tmp_path_factory):
    """A tiny random Llama saved in the Hugging Face layout (stands in for a local Llama-2 directory)."""
    from transformers import LlamaForCausalLM

    from codi2.llm import llama_config

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(llama_config(tiny_llm_cfg(sp_model))).save_pretrained(d)
    return d


def perturb_adapters(llm, seed: int = 0) -> None:
    """LoRA B starts at zero and the new rows at the mean; perturb them so adapter tests can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for params in llm.trainable_parameters().values():
            for p in params:
                p.add_(0.5 * torch.randn(p.shape, generator=g))


def prompt_ids(tok, llm) -> torch.Tensor:
    text = tok.apply_chat_template([{"role": "user", "content": "<img>[IMG_IN]</img> make it blue"},
                                    {"role": "assistant", "content": "here <img>"}], tokenize=False)
    return torch.tensor([tok.encode(text, add_special_tokens=False)])


# ----------------------------------------------------------------------------- template
CONV = [{"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Draw <img>[IMG_IN]</img> in blue"},
        {"role": "assistant", "content": "Sure: <img>[IMG_OUT_0]</img>"}]


def test_chat_template_exact_llama2_string(tok):
    text = tok.apply_chat_template(CONV[:4], tokenize=False)
    assert text == ("<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHi there [/INST] Hello! </s>"
                    "<s>[INST] Draw <img>[IMG_IN]</img> in blue [/INST]")
    assert tok.apply_chat_template(CONV[1:2], tokenize=False) == "<s>[INST] Hi there [/INST]"
    assert tok.apply_chat_template(CONV[:4], tokenize=False, add_generation_prompt=True) == text


def test_chat_template_prefix_stable(tok):
    for convo in (CONV, CONV[1:]):
        texts = [tok.apply_chat_template(convo[:k], tokenize=False) for k in range(1, len(convo) + 1)]
        for a, b in zip(texts, texts[1:]):
            assert b.startswith(a) and len(b) > len(a)
        # token level too: every piece ends at "\n\n" (byte pieces), "]" or "</s>", where BPE cannot merge
        ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        for a, b in zip(ids, ids[1:]):
            assert b[:len(a)] == a


def test_chat_template_errors(tok):
    with pytest.raises(Exception, match="alternate"):
        tok.apply_chat_template([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], tokenize=False)
    with pytest.raises(Exception, match="system message is only allowed first"):
        tok.apply_chat_template(CONV[1:3] + CONV[:1], tokenize=False)
    with pytest.raises(Exception, match="last message to be a user"):
        tok.apply_chat_template(CONV[:3], tokenize=False, add_generation_prompt=True)


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_matches_sentencepiece(tok, sp_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(sp_model))
    assert (sp.piece_to_id("<unk>"), sp.piece_to_id("<s>"), sp.piece_to_id("</s>")) == (0, 1, 2)
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    for text in tiny_texts(50, seed=1) + ["Café naïve — ünïcode 日本", "two\nlines", "tabs\tand  spaces 2024"]:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text), text
    assert tok.encode("red")[0] == tok.bos_token_id
    assert sp.encode("a\nb").count(13) == 1  # "\n" -> <0x0A> byte piece, as in Llama


def test_special_tokens_atomic(tok):
    ids = tok.encode("<img>[IMG_IN][IMG_IN]</img>", add_special_tokens=False)
    assert ids == tok.convert_tokens_to_ids(["<img>", "[IMG_IN]", "[IMG_IN]", "</img>"])
    assert tok.convert_tokens_to_ids(SPECIALS) == list(range(400, 400 + len(SPECIALS)))
    ids = tok.encode("a red<aud>[AUD_OUT_1]</aud>blue", add_special_tokens=False)
    aud = tok.convert_tokens_to_ids(["<aud>", "[AUD_OUT_1]", "</aud>"])
    start = ids.index(aud[0])
    assert ids[start:start + 3] == aud and not set(aud) & set(ids[:start] + ids[start + 3:])
    assert tok.decode(ids) == "a red<aud>[AUD_OUT_1]</aud>blue"
    assert tok.decode(ids, skip_special_tokens=True) == "a redblue"  # media tokens count as special


def test_tokenizer_save_reload(tok, sp_model, tmp_path):
    """A tokenizer saved with its special tokens (as a pipeline would) reloads from the directory unchanged."""
    tok.save_pretrained(tmp_path / "tok")
    again = load_tokenizer(dataclasses.replace(tiny_llm_cfg(sp_model), tokenizer=str(tmp_path / "tok")), SPECIALS)
    assert (again.vocab_size, len(again)) == (tok.vocab_size, len(tok)) == (400, 400 + len(SPECIALS))
    text = tok.apply_chat_template(CONV, tokenize=False)
    assert again.apply_chat_template(CONV, tokenize=False) == text
    assert again.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)


def test_load_tokenizer_errors(sp_model, tmp_path):
    with pytest.raises(ValueError, match="duplicates"):
        load_tokenizer(tiny_llm_cfg(sp_model), ["<img>", "<img>"])
    with pytest.raises(FileNotFoundError, match="llm.tokenizer"):
        load_tokenizer(dataclasses.replace(tiny_llm_cfg(sp_model), tokenizer=str(tmp_path / "nope.model")), SPECIALS)
    with pytest.raises(ValueError, match="llm.tokenizer"):
        load_tokenizer(dataclasses.replace(tiny_llm_cfg(sp_model), tokenizer=None), SPECIALS)


# ----------------------------------------------------------------------------- model
def test_forward_shapes_and_embed(tok, sp_model):
    torch.manual_seed(0)
    llm = load_llm(tiny_llm_cfg(sp_model), tok)
    assert (llm.hidden_size, llm.vocab_size) == (32, len(tok))
    assert llm.new_token_ids == list(range(400, len(tok)))
    assert llm.token_id("[IMG_OUT_3]") == tok.convert_tokens_to_ids("[IMG_OUT_3]")
    with pytest.raises(KeyError, match="NOPE"):
        llm.token_id("[NOPE]")
    ids = torch.randint(0, len(tok), (2, 7))
    emb = llm.embed(ids)
    assert emb.shape == (2, 7, 32)
    logits, hidden, cache = llm(emb)
    assert logits.shape == (2, 7, len(tok)) and hidden.shape == (2, 7, 32) and cache is None
    # the hidden state is post-norm: lm_head(hidden) == logits
    torch.testing.assert_close(llm.base.lm_head(hidden), logits)
    # new rows start at the mean of the old rows
    w = llm.base.model.embed_tokens.weight
    torch.testing.assert_close(w[400], w[:400].mean(0))
    assert llm(emb, logits_to_keep=1)[0].shape == (2, 1, len(tok))
    with pytest.raises(ValueError, match="inputs_embeds"):
        llm(emb[..., :16])


@pytest.mark.parametrize("lora_enabled", [True, False])
def test_only_lora_and_new_rows_train(tok, sp_model, lora_enabled):
    torch.manual_seed(0)
    llm = load_llm(tiny_llm_cfg(sp_model, enabled=lora_enabled), tok)
    perturb_adapters(llm)  # LoRA B = 0 would give LoRA A a zero gradient
    groups = llm.trainable_parameters()
    assert bool(groups["lora"]) == lora_enabled
    assert len(groups["new_token_rows"]) == 2  # embed_tokens + untied lm_head
    n_new = len(llm.new_token_ids)
    assert all(p.shape == (n_new, 32) for p in groups["new_token_rows"])
    if lora_enabled:
        assert sum(p.numel() for p in groups["lora"]) == 2 * 4 * 4 * (32 + 32)  # layers·targets·r·(in+out)
    ids = torch.tensor([[1, 5, 400, 402, 401, 9, 2]])
    logits, hidden, _ = llm(llm.embed(ids))
    (logits.logsumexp(-1).sum() + hidden.sum()).backward()
    trainable = {id(p) for ps in groups.values() for p in ps}
    for name, p in llm.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert not p.requires_grad and p.grad is None, name


def test_gradient_checkpointing_same_grads(tok, sp_model):
    grads = []
    for gc in (False, True):
        torch.manual_seed(0)
        llm = load_llm(dataclasses.replace(tiny_llm_cfg(sp_model), gradient_checkpointing=gc), tok)
        perturb_adapters(llm)
        llm.train()
        emb = llm.embed(torch.tensor([[1, 5, 400, 402, 401, 9]]))
        emb = emb + torch.zeros_like(emb, requires_grad=False)  # features spliced in need not require grad
        logits, _, _ = llm(emb)
        logits.square().mean().backward()
        grads.append([p.grad.clone() for ps in llm.trainable_parameters().values() for p in ps])
    assert llm.base.model.gradient_checkpointing
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_cache_incremental_equals_full(tok, sp_model):
    torch.manual_seed(0)
    llm = load_llm(tiny_llm_cfg(sp_model), tok, training=False)
    perturb_adapters(llm)
    emb = llm.embed(torch.randint(0, len(tok), (2, 9)))
    with torch.no_grad():
        full, full_h, _ = llm(emb)
        a, _, cache = llm(emb[:, :5], use_cache=True)
        b, b_h, cache = llm(emb[:, 5:8], past_key_values=cache, use_cache=True)
        c, _, cache = llm(emb[:, 8:], past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == 9
    torch.testing.assert_close(torch.cat([a, b, c], 1), full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b_h, full_h[:, 5:8], atol=1e-5, rtol=1e-4)


def test_adapter_roundtrip_and_peft_from_pretrained(tok, sp_model, hf_dir, tmp_path):
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    cfg = dataclasses.replace(tiny_llm_cfg(sp_model), path=str(hf_dir))
    torch.manual_seed(0)
    llm = load_llm(cfg, tok)
    perturb_adapters(llm)
    llm.eval()
    ids = prompt_ids(tok, llm)
    with torch.no_grad():
        ref = llm(llm.embed(ids))[0]
    out = llm.save_adapter(tmp_path / "adapter")
    saved = json.loads((out / "adapter_config.json").read_text())
    assert saved["trainable_token_indices"] == {"model.embed_tokens": llm.new_token_ids, "lm_head": llm.new_token_ids}

    torch.manual_seed(1)  # different LoRA A init
    fresh = load_llm(cfg, tok, training=False)
    with torch.no_grad():
        assert not torch.allclose(fresh(fresh.embed(ids))[0], ref)
        fresh.load_adapter(out)
        torch.testing.assert_close(fresh(fresh.embed(ids))[0], ref)

    base = LlamaForCausalLM.from_pretrained(hf_dir)
    base.resize_token_embeddings(len(tok))  # values of the new rows don't matter: the adapter stores full rows
    peft_model = PeftModel.from_pretrained(base, out).eval()
    with torch.no_grad():
        torch.testing.assert_close(peft_model(input_ids=ids).logits, ref)

    # a base saved already resized (as a pipeline directory holds it) loads too; the adapter restores the rows
    resized = LlamaForCausalLM.from_pretrained(hf_dir)
    resized.resize_token_embeddings(len(tok))
    resized.save_pretrained(tmp_path / "resized")
    again = load_llm(dataclasses.replace(cfg, path=str(tmp_path / "resized")), tok, training=False)
    assert again.new_token_ids == llm.new_token_ids
    again.load_adapter(out)
    with torch.no_grad():
        torch.testing.assert_close(again(again.embed(ids))[0], ref)


def test_load_adapter_is_strict(tok, sp_model, tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    llm = load_llm(tiny_llm_cfg(sp_model), tok)
    out = llm.save_adapter(tmp_path / "adapter")
    state = load_file(out / "adapter_model.safetensors")
    lora_key = next(k for k in state if "lora_A" in k)
    rows_key = next(k for k in state if "trainable_tokens_delta" in k)
    for drop in (lora_key, rows_key):
        bad = tmp_path / f"bad_{drop.split('.')[-2]}"
        bad.mkdir()
        (bad / "adapter_config.json").write_text((out / "adapter_config.json").read_text())
        save_file({k: v for k, v in state.items() if k != drop}, bad / "adapter_model.safetensors")
        with pytest.raises(ValueError, match="missing keys") as e:
            llm.load_adapter(bad)
        assert drop in str(e.value)
    other = load_llm(tiny_llm_cfg(sp_model, r=8), tok)
    with pytest.raises(ValueError, match="r: adapter 4 vs model 8"):
        other.load_adapter(out)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        llm.load_adapter(tmp_path)


def test_load_adapter_widens_to_more_target_modules(tok, sp_model, hf_dir, tmp_path):
    """An attention-only adapter loads into a model that also adapts the MLP: same outputs until trained."""
    from safetensors.torch import load_file

    attn = ["q_proj", "k_proj", "v_proj", "o_proj"]
    cfg = lambda targets: dataclasses.replace(tiny_llm_cfg(sp_model, target_modules=targets), path=str(hf_dir))
    torch.manual_seed(0)
    llm = load_llm(cfg(attn), tok, training=False)
    perturb_adapters(llm)
    ids = prompt_ids(tok, llm)
    with torch.no_grad():
        ref = llm(llm.embed(ids))[0]
    out = llm.save_adapter(tmp_path / "adapter")

    torch.manual_seed(1)
    wide = load_llm(cfg(attn + ["gate_proj", "up_proj", "down_proj"]), tok)
    wide.load_adapter(out)
    wide.eval()
    with torch.no_grad():
        torch.testing.assert_close(wide(wide.embed(ids))[0], ref)
    mlp_lora = [n for n, p in wide.model.named_parameters() if "mlp" in n and "lora_" in n]
    assert len(mlp_lora) == 2 * 3 * 2  # A and B x gate/up/down x 2 layers
    assert all(p.requires_grad for n, p in wide.model.named_parameters() if n in mlp_lora)
    # the widened model's own adapter holds the MLP too, and loads back strictly
    wide_out = wide.save_adapter(tmp_path / "wide")
    assert any("up_proj.lora_B" in k for k in load_file(wide_out / "adapter_model.safetensors"))
    # narrowing is not allowed: the saved MLP LoRA would be dropped
    narrow = load_llm(cfg(attn), tok)
    with pytest.raises(ValueError, match="target_modules"):
        narrow.load_adapter(wide_out)


def test_load_llm_errors(tok, sp_model, tmp_path):
    with pytest.raises(ValueError, match="llm.dtype"):
        load_llm(dataclasses.replace(tiny_llm_cfg(sp_model), dtype="float8"), tok)
    with pytest.raises(ValueError, match="needs pretrained weights"):
        load_llm(dataclasses.replace(tiny_llm_cfg(sp_model), quantization="4bit"), tok)
    with pytest.raises(ValueError, match="llm.vocab_size"):
        load_llm(dataclasses.replace(tiny_llm_cfg(sp_model), vocab_size=500), tok)
    with pytest.raises(FileNotFoundError, match="llm.path"):
        load_llm(dataclasses.replace(tiny_llm_cfg(sp_model), path=str(tmp_path / "missing")), tok)
    with pytest.raises(FileNotFoundError, match="pytorch_model.bin"):  # names the weight layouts it takes
        load_llm(dataclasses.replace(tiny_llm_cfg(sp_model), path=str(tmp_path)), tok)


@pytest.mark.parametrize("quantization,layer", [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_quantized_tiny(tok, sp_model, hf_dir, quantization, layer):
    """bitsandbytes 0.50 runs 4/8-bit on CPU; QLoRA path incl. prepare_model_for_kbit_training."""
    pytest.importorskip("bitsandbytes")
    cfg = dataclasses.replace(tiny_llm_cfg(sp_model), path=str(hf_dir), quantization=quantization,
                              dtype="bfloat16", gradient_checkpointing=True)
    torch.manual_seed(0)
    llm = load_llm(cfg, tok)
    perturb_adapters(llm)
    assert type(llm.base.model.layers[0].self_attn.q_proj.base_layer).__name__ == layer
    assert type(llm.base.model.layers[0].mlp.up_proj).__name__ == layer  # not a LoRA target: plain quantized
    ids = prompt_ids(tok, llm)
    logits, hidden, _ = llm(llm.embed(ids))
    assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    groups = llm.trainable_parameters()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for ps in groups.values() for p in ps)


def save_bin(model, d, shards: int = 1) -> None:
    """``model`` as transformers 4 wrote it with ``save_pretrained(safe_serialization=False)`` (transformers 5 only
    writes safetensors): ``pytorch_model.bin``, or ``pytorch_model-0000i-of-0000n.bin`` shards with
    ``pytorch_model.bin.index.json``."""
    d.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(d)
    sd = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    if shards == 1:
        torch.save(sd, d / "pytorch_model.bin")
        return
    keys, weight_map = list(sd), {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: sd[k] for k in keys[i::shards]}
        torch.save(part, d / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(v.numel() * v.element_size() for v in sd.values())
    (d / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                "weight_map": weight_map}))


@pytest.mark.parametrize("layout", ["bin", "safetensors-shards", "bin-shards"])
def test_llama_directory_with_bin_or_sharded_weights_loads(tok, sp_model, hf_dir, tmp_path, layout):
    """Many Llama-2 copies ship ``pytorch_model.bin`` or shards with an index; each loads to the same model as
    the single-safetensors directory."""
    import shutil

    from transformers import LlamaForCausalLM

    from codi2.llm import llama_weight_files

    base = LlamaForCausalLM.from_pretrained(str(hf_dir))
    d = tmp_path / layout
    if layout == "safetensors-shards":
        size = sum(v.numel() * v.element_size() for v in base.state_dict().values())
        base.save_pretrained(d, max_shard_size=size // 3)
    else:
        save_bin(base, d, shards=1 if layout == "bin" else 3)
    names = sorted(p.name for p in d.iterdir())
    assert any(n.endswith(".safetensors") for n in names) == (layout == "safetensors-shards")
    index = "model.safetensors.index.json" if layout == "safetensors-shards" else "pytorch_model.bin.index.json"
    if layout == "bin":
        assert llama_weight_files(d) == [d / "pytorch_model.bin"]
    else:
        assert index in names and len(llama_weight_files(d)) > 2  # the index and >= 2 shards
    cfg = lambda path: dataclasses.replace(tiny_llm_cfg(sp_model), path=str(path))  # noqa: E731
    torch.manual_seed(0)
    want = load_llm(cfg(hf_dir), tok)
    torch.manual_seed(0)
    got = load_llm(cfg(d), tok)
    ids = prompt_ids(tok, want)
    assert torch.equal(want(want.embed(ids))[0], got(got.embed(ids))[0])
    if layout != "bin":  # an index naming a missing shard is an error naming it
        shard = sorted(set(json.loads((d / index).read_text())["weight_map"].values()))[-1]
        shutil.move(d / shard, tmp_path / shard)
        with pytest.raises(FileNotFoundError, match=shard):
            load_llm(cfg(d), tok)


# ----------------------------------------------------------------------------- counting
def test_param_counts_llama2_7b():
    cfg = LLMConfig()  # defaults are the Llama-2-7B shapes, LoRA r=128 on q,k,v,o
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (32000, 4096, 11008, 32)
    counts = llama_param_count(cfg, n_new_tokens=10)
    assert counts["base"] == 6_738_415_616
    assert counts["lora"] == 134_217_728
    assert counts["new_token_rows"] == 2 * 10 * 4096


def test_param_count_matches_built_tiny(tok, sp_model):
    torch.manual_seed(0)
    llm = load_llm(tiny_llm_cfg(sp_model), tok)
    counts = llama_param_count(tiny_llm_cfg(sp_model), n_new_tokens=len(llm.new_token_ids))
    groups = llm.trainable_parameters()
    assert counts["lora"] == sum(p.numel() for p in groups["lora"])
    assert counts["new_token_rows"] == sum(p.numel() for p in groups["new_token_rows"])
