"""The language model of codi2: Llama + tokenizer + special tokens + chat template; LoRA / QLoRA.

Everything here is plain transformers / peft / sentencepiece, composed:

- :data:`LLAMA2_CHAT_TEMPLATE`: a Jinja chat template for the Llama-2 chat format, prefix-stable.
- :func:`train_sentencepiece`: trains a Llama-style sentencepiece BPE model in-process (tiny / mini scales).
- :func:`load_tokenizer`: tokenizer from a sentencepiece ``.model`` or a Hugging Face directory, with the
  codi2 special tokens added atomically, a pad token and the chat template set.
- :func:`load_llm` -> :class:`LLM`: the peft-wrapped ``LlamaForCausalLM`` (random init or a local HF dir,
  optional 4/8-bit), its embeddings resized to the tokenizer, only the new token rows and LoRA trainable.
- :func:`llama_param_count`: parameter counts on the meta device (no allocation).

Trainable new token rows use peft's ``trainable_token_indices`` (LoRA on) or ``TrainableTokensConfig``
(LoRA off). In peft 0.21.2 both wrap ``embed_tokens`` and, when the output embeddings are not tied (Llama-2),
``lm_head`` too; the adapter file stores the *full* rows (the parameter is named ``trainable_tokens_delta``
but its values replace the base rows via ``index_copy``), so the base model's own values for those rows do not
matter when loading. ``PeftModel.from_pretrained(base, dir)`` restores them, provided ``base`` has first been
resized to ``len(tokenizer)`` (``base.resize_token_embeddings(len(tokenizer))``).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import torch
from torch import nn

from codi2.config import LLMConfig, resolve_path

if TYPE_CHECKING:
    from transformers import LlamaConfig, PreTrainedModel, PreTrainedTokenizerBase
    from transformers.cache_utils import Cache

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
QUANTIZATIONS = (None, "4bit", "8bit")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

# ----------------------------------------------------------------------------- chat template
# Llama-2 chat format (Meta's `chat_completion`, with <s>/</s> written as text so that they tokenize to the
# BOS/EOS ids):
#   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST] ...
# Each message renders its own piece, so rendering messages[:k] is a prefix of rendering messages[:k+1]:
#   system    -> "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
#   user      -> "{user} [/INST]" after a system message, else "<s>[INST] {user} [/INST]"
#   assistant -> " {assistant} </s>"
# A user turn already ends with "[/INST]", which is Llama-2's generation prompt, so add_generation_prompt
# adds nothing (it only checks that the last message is a user message). Contents are stripped, as Meta does.
# Tokenize the rendered string with add_special_tokens=False (the template writes <s> itself).
# Note: transformers 5's LlamaTokenizer adds no "▁" to text that follows a special token, so "<s>[INST]"
# becomes "[", "INST", "]" where Meta's sentencepiece call gave "▁[", "INST", "]" (one token differs per turn).
LLAMA2_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- set prev = messages[loop.index0 - 1]['role'] if loop.index0 > 0 else none -%}"
    "{%- if message['content'] is not string -%}"
    "{{ raise_exception('message content must be a string (render media placeholders into it); got a non-string in message ' ~ loop.index0) }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- if not loop.first -%}"
    "{{ raise_exception('a system message is only allowed first; found one at message ' ~ loop.index0) }}"
    "{%- endif -%}"
    "{{- bos_token ~ '[INST] <<SYS>>\\n' ~ (message['content'] | trim) ~ '\\n<</SYS>>\\n\\n' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- if prev == 'user' -%}"
    "{{ raise_exception('roles must alternate user/assistant; two user messages in a row at message ' ~ loop.index0) }}"
    "{%- elif prev == 'system' -%}"
    "{{- (message['content'] | trim) ~ ' [/INST]' -}}"
    "{%- else -%}"
    "{{- bos_token ~ '[INST] ' ~ (message['content'] | trim) ~ ' [/INST]' -}}"
    "{%- endif -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{%- if prev != 'user' -%}"
    "{{ raise_exception('an assistant message must follow a user message; message ' ~ loop.index0 ~ ' follows ' ~ (prev or 'nothing')) }}"
    "{%- endif -%}"
    "{{- ' ' ~ (message['content'] | trim) ~ ' ' ~ eos_token -}}"
    "{%- else -%}"
    "{{ raise_exception('unknown role ' ~ message['role'] ~ '; allowed: system, user, assistant') }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt and (messages | length == 0 or messages[-1]['role'] != 'user') -%}"
    "{{ raise_exception('add_generation_prompt needs the last message to be a user message') }}"
    "{%- endif -%}"
)


# ----------------------------------------------------------------------------- sentencepiece
def train_sentencepiece(texts: Iterable[str], vocab_size: int, out_prefix: "str | Path", *,
                        character_coverage: float = 0.99995, user_defined_symbols: Iterable[str] = (),
                        num_threads: int = 1, hard_vocab_limit: bool = True) -> Path:
    """Trains a Llama-style sentencepiece model in-process and writes ``{out_prefix}.model`` / ``.vocab``.

    Llama's trainer settings: BPE, byte fallback, digits split, no normalization, no whitespace cleanup,
    ``<unk>``=0, ``<s>``=1, ``</s>``=2, no pad piece. Texts are split into lines (sentencepiece trains on
    lines), so ``\\n`` is never inside a piece and encodes as the byte token ``<0x0A>``, as in Llama.

    Args:
        texts: training texts.
        vocab_size: total pieces, including the 3 control pieces and the 256 byte pieces.
        out_prefix: output path without suffix; parent directories are created.
        character_coverage: fraction of characters covered by pieces (the rest fall back to bytes).
        user_defined_symbols: pieces that are always kept whole.
        num_threads: trainer threads.
        hard_vocab_limit: if False, a corpus too small for ``vocab_size`` gives a smaller vocabulary
            instead of an error.

    Returns:
        The path of the ``.model`` file.
    """
    import sentencepiece as spm

    if vocab_size < 3 + 256 + 1:
        raise ValueError(f"vocab_size = {vocab_size} is too small: byte fallback needs 3 control + 256 byte "
                         f"pieces, so use at least 260")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    lines = [line for text in texts for line in text.split("\n") if line.strip()]
    if not lines:
        raise ValueError("train_sentencepiece got no non-empty text")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(out_prefix), vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        split_by_unicode_script=True, split_by_whitespace=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        character_coverage=character_coverage, user_defined_symbols=list(user_defined_symbols),
        num_threads=num_threads, hard_vocab_limit=hard_vocab_limit, minloglevel=2,
    )
    model_path = out_prefix.with_name(out_prefix.name + ".model")
    logger.info("trained sentencepiece model %s on %d lines (vocab %d)", model_path, len(lines), vocab_size)
    return model_path


# ----------------------------------------------------------------------------- tokenizer
def load_tokenizer(cfg: LLMConfig, special_tokens: list[str], base_dir: "str | Path | None" = None
                   ) -> "PreTrainedTokenizerBase":
    """Loads the tokenizer, adds the codi2 special tokens, sets the pad token and the chat template.

    Source: ``cfg.tokenizer`` (a sentencepiece ``.model`` file or a Hugging Face tokenizer directory), else
    ``cfg.path``. A ``.model`` file is read by ``LlamaTokenizer`` (tokenizers-backed in transformers 5; it
    converts the sentencepiece proto and matches ``SentencePieceProcessor.encode`` on ordinary text; it differs
    only on text that starts with a space, where transformers 5 does not add a second ``▁``).

    Special tokens are added as special, unnormalized ``AddedToken``s: ``"<img>[IMG_IN][IMG_IN]</img>"``
    tokenizes to exactly those four ids. Their ids follow the base vocabulary in the given order.

    Pad token: Llama-2 has none; we use ``<unk>`` (id 0) as pad, as LLaVA does, so no embedding row is added
    for padding. Padded positions must be masked (attention mask, labels = -100).

    Args:
        cfg: the LLM config.
        special_tokens: the tokens to add (``codi2.modality.special_tokens(n_out)``).
        base_dir: relative paths in ``cfg`` are resolved against it.
    """
    from transformers import AddedToken, AutoTokenizer, LlamaTokenizer

    if len(set(special_tokens)) != len(special_tokens):
        dupes = sorted({t for t in special_tokens if special_tokens.count(t) > 1})
        raise ValueError(f"special_tokens contains duplicates: {dupes}")
    field_name, value = ("llm.tokenizer", cfg.tokenizer) if cfg.tokenizer is not None else ("llm.path", cfg.path)
    if value is None:
        raise ValueError("no tokenizer configured: set llm.tokenizer (a sentencepiece .model file or a Hugging "
                         "Face tokenizer directory) or llm.path (a Hugging Face Llama directory)")
    src = resolve_path(value, field_name, base_dir,
                       expect="a sentencepiece .model file or a Hugging Face tokenizer directory")
    if src.is_file() and src.suffix == ".model":
        tok = LlamaTokenizer.from_pretrained(str(src), local_files_only=True, add_bos_token=True)
    elif src.is_dir():
        tok = AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    else:
        raise ValueError(f"{field_name} = {value!r} is neither a sentencepiece .model file nor a directory")
    for name in ("bos_token", "eos_token", "unk_token"):
        if getattr(tok, name) is None:
            raise ValueError(f"tokenizer {src} has no {name}; a Llama tokenizer needs <s>, </s> and <unk>")

    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens], special_tokens=True)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token
    tok.chat_template = LLAMA2_CHAT_TEMPLATE

    # Self-check: the special tokens must be atomic (one id each, nothing in between).
    ids = tok.encode("".join(special_tokens), add_special_tokens=False)
    expected = tok.convert_tokens_to_ids(special_tokens)
    if ids != expected:
        raise RuntimeError(f"special tokens are not atomic in tokenizer {src}: "
                           f"{tok.convert_ids_to_tokens(ids)} != {special_tokens}")
    logger.info("tokenizer %s: %d base tokens + %d added", src, tok.vocab_size, len(tok) - tok.vocab_size)
    return tok


# ----------------------------------------------------------------------------- model
def llama_config(cfg: LLMConfig) -> "LlamaConfig":
    """The ``LlamaConfig`` for a randomly initialised Llama built from the architecture fields of ``cfg``.

    Output embeddings are untied, as in Llama-2.
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.rms_norm_eps, rope_theta=cfg.rope_theta, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )


def _check_cfg(cfg: LLMConfig) -> torch.dtype:
    if cfg.dtype not in DTYPES:
        raise ValueError(f"llm.dtype = {cfg.dtype!r}; allowed: {', '.join(DTYPES)}")
    if cfg.quantization not in QUANTIZATIONS:
        raise ValueError(f"llm.quantization = {cfg.quantization!r}; allowed: null, 4bit, 8bit")
    if cfg.lora.enabled and not cfg.lora.target_modules:
        raise ValueError("llm.lora.enabled is true but llm.lora.target_modules is empty")
    return DTYPES[cfg.dtype]


# What ``LlamaForCausalLM.from_pretrained`` reads, in its order of preference: one safetensors file, sharded
# safetensors (an index names the shards), one PyTorch pickle, sharded pickles.
LLAMA_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                      "pytorch_model.bin.index.json")


def llama_weight_files(path: "str | Path") -> list[Path]:
    """The weight files of a Hugging Face Llama directory that transformers loads (the first layout of
    :data:`LLAMA_WEIGHT_FILES` present; with an index, the index and the shards it names), or [] when there are
    none. An index that is not one, or that names a missing shard, is an error naming the file."""
    d = Path(path)
    for name in LLAMA_WEIGHT_FILES:
        f = d / name
        if not f.is_file():
            continue
        if not name.endswith(".index.json"):
            return [f]
        try:
            shards = sorted(set(json.loads(f.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            raise ValueError(f"{f}: not a weight index (expected JSON with a 'weight_map' of tensor -> shard file)") from None
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{f} names {len(missing)} shard(s) that are not in {d}, e.g. {missing[0]}")
        return [f] + [d / s for s in shards]
    return []


def _load_base(cfg: LLMConfig, dtype: torch.dtype, device: torch.device, base_dir) -> "PreTrainedModel":
    """The plain ``LlamaForCausalLM``: from ``cfg.path`` or randomly initialised (caller seeds torch)."""
    from transformers import BitsAndBytesConfig, LlamaForCausalLM

    if cfg.path is None:
        if cfg.quantization is not None:
            raise ValueError(f"llm.quantization = {cfg.quantization!r} needs pretrained weights: set llm.path "
                             f"to a Hugging Face Llama directory, or set llm.quantization=null")
        model = LlamaForCausalLM(llama_config(cfg))
        return model.to(device=device, dtype=dtype)

    path = resolve_path(cfg.path, "llm.path", base_dir,
                        expect="a Hugging Face Llama directory with config.json and its weights")
    weights = llama_weight_files(path)
    if not (path / "config.json").is_file() or not weights:
        raise FileNotFoundError(f"llm.path = {cfg.path!r} ({path}) lacks config.json or weights; expected a Hugging "
                                f"Face Llama directory (save_pretrained layout) with one of "
                                f"{', '.join(LLAMA_WEIGHT_FILES)} (*.safetensors or *.bin shards beside an index)")
    logger.debug("llm.path %s: weights %s", path, ", ".join(p.name for p in weights[:3]))
    kwargs: dict = {"dtype": dtype, "local_files_only": True}
    if cfg.quantization is not None:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=cfg.quantization == "4bit", load_in_8bit=cfg.quantization == "8bit",
            bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype,
        )
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        kwargs["device_map"] = {"": device}
    model = LlamaForCausalLM.from_pretrained(str(path), **kwargs)
    if cfg.quantization is None:
        model = model.to(device)
    return model


@torch.no_grad()
def _resize_mean_init(model: "PreTrainedModel", new_vocab: int) -> None:
    """Resizes input and output embeddings to ``new_vocab`` rows; new rows = mean of the old rows."""
    old_vocab = model.get_input_embeddings().weight.shape[0]
    if new_vocab == old_vocab:
        return
    model.resize_token_embeddings(new_vocab, mean_resizing=False)
    mats = [model.get_input_embeddings().weight]
    out = model.get_output_embeddings()
    if out is not None and out.weight is not mats[0]:
        mats.append(out.weight)
    for w in mats:  # (V, D)
        w[old_vocab:] = w[:old_vocab].float().mean(dim=0).to(w.dtype)


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def load_llm(cfg: LLMConfig, tokenizer: "PreTrainedTokenizerBase", device: "str | torch.device | None" = None,
             base_dir: "str | Path | None" = None, *, training: bool = True) -> "LLM":
    """Builds the LLM: base Llama, embeddings resized to the tokenizer, LoRA + trainable new token rows.

    Steps: 1. base model (``cfg.path`` or random init from the architecture fields; 4/8-bit via
    bitsandbytes when ``cfg.quantization``); 2. resize embeddings to ``len(tokenizer)``, new rows = mean of
    old rows (input and output embeddings); 3. kbit preparation / gradient checkpointing (non-reentrant, so
    ``inputs_embeds`` need not require grad); 4. peft: LoRA on ``cfg.lora.target_modules`` when enabled, and
    the new rows of ``embed_tokens`` (and of an untied ``lm_head``) trainable; every other base weight frozen.

    The base model's embedding rows must equal either the tokenizer's base vocabulary (``tokenizer.vocab_size``;
    the usual case, resized here) or ``len(tokenizer)`` (a base saved after resizing, e.g. inside a pipeline
    directory; its new rows are then overwritten by :meth:`LLM.load_adapter`). The new token ids are the
    tokenizer's added tokens, ``range(tokenizer.vocab_size, len(tokenizer))``.

    Args:
        cfg: the LLM config (random init: ``vocab_size`` must equal ``tokenizer.vocab_size``).
        tokenizer: from :func:`load_tokenizer`.
        device: where the model lives (default cpu).
        base_dir: relative paths in ``cfg`` are resolved against it.
        training: False freezes the adapters too (inference) and skips kbit training preparation.
    """
    from peft import LoraConfig, TrainableTokensConfig, get_peft_model, prepare_model_for_kbit_training

    dtype = _check_cfg(cfg)
    device = torch.device(device if device is not None else "cpu")
    model = _load_base(cfg, dtype, device, base_dir)
    # The new rows are the tokenizer's added tokens. The base either has the base vocabulary (resized here,
    # new rows = mean) or was saved already resized (e.g. by a pipeline; the adapter holds the new rows).
    base_vocab = model.get_input_embeddings().weight.shape[0]
    if base_vocab not in (tokenizer.vocab_size, len(tokenizer)):
        raise ValueError(f"the LLM has {base_vocab} embedding rows but the tokenizer has {tokenizer.vocab_size} base "
                         f"tokens ({len(tokenizer)} with the added ones); set llm.vocab_size = "
                         f"{tokenizer.vocab_size} (random init) or use the tokenizer that belongs to llm.path")
    _resize_mean_init(model, len(tokenizer))
    new_ids = list(range(tokenizer.vocab_size, len(tokenizer)))

    gc_kwargs = {"use_reentrant": False}
    if cfg.quantization is not None and training:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)

    embed_name = _module_name(model, model.get_input_embeddings())
    out = model.get_output_embeddings()
    tied = out.weight is model.get_input_embeddings().weight
    token_modules = [embed_name] if tied else [embed_name, _module_name(model, out)]
    if cfg.lora.enabled:
        peft_cfg = LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=list(cfg.lora.target_modules), bias="none", task_type="CAUSAL_LM",
            trainable_token_indices={name: new_ids for name in token_modules} if new_ids else None,
            inference_mode=not training,
        )
    elif new_ids:
        peft_cfg = TrainableTokensConfig(target_modules=token_modules, token_indices=new_ids,
                                         inference_mode=not training)
    else:
        raise ValueError("nothing to adapt: llm.lora.enabled is false and the tokenizer adds no new tokens")
    model = get_peft_model(model, peft_cfg)
    model.train(training)
    llm = LLM(model, tokenizer, new_ids)
    counts = {k: sum(p.numel() for p in v) for k, v in llm.trainable_parameters().items()}
    logger.info("LLM: %s frozen params, trainable %s, %d new tokens, dtype %s, quantization %s, device %s",
                f"{sum(p.numel() for p in model.parameters()) - sum(counts.values()):,}", counts, len(new_ids),
                cfg.dtype, cfg.quantization, device)
    return llm


class LLM(nn.Module):
    """The peft-wrapped Llama plus its tokenizer; what :class:`codi2.model.CoDi2Model` calls.

    Attributes:
        model: the ``PeftModel`` around ``LlamaForCausalLM``.
        tokenizer: the tokenizer (special tokens added).
        new_token_ids: ids of the rows added by the resize (trainable).
    """

    def __init__(self, model: nn.Module, tokenizer: "PreTrainedTokenizerBase", new_token_ids: list[int]):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.new_token_ids = list(new_token_ids)

    # -- properties
    @property
    def base(self) -> "PreTrainedModel":
        """The ``LlamaForCausalLM`` (with peft layers injected)."""
        return self.model.get_base_model()

    @property
    def hidden_size(self) -> int:
        return self.base.config.hidden_size

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding matrices (= ``len(tokenizer)``)."""
        return self.base.get_input_embeddings().weight.shape[0]

    @property
    def device(self) -> torch.device:
        return self.base.get_input_embeddings().weight.device

    def token_id(self, name: str) -> int:
        """The id of a single token (e.g. ``"<img>"``); KeyError if it is not one token of the vocabulary."""
        tid = self.tokenizer.convert_tokens_to_ids(name)
        if tid is None or (tid == self.tokenizer.unk_token_id and name != self.tokenizer.unk_token):
            raise KeyError(f"token {name!r} is not in the vocabulary (was it passed to load_tokenizer?)")
        return tid

    # -- compute
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings, new (trainable) rows included.

        Args:
            input_ids: (B, T) token ids.
        Returns:
            (B, T, D) embeddings.
        """
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, past_key_values: "Optional[Cache]" = None,
                use_cache: bool = False, output_hidden_states: bool = True, logits_to_keep: int = 0,
                ) -> tuple[torch.Tensor, Optional[torch.Tensor], "Optional[Cache]"]:
        """Runs the decoder on embeddings.

        Args:
            inputs_embeds: (B, T, D) token embeddings with media features spliced in.
            attention_mask: (B, P+T) 1 = attend, 0 = padding (P = cached length); None = all ones.
            position_ids: (B, T); None = P .. P+T-1.
            past_key_values: a ``DynamicCache`` (updated in place) or None.
            use_cache: return the cache (a new ``DynamicCache`` when none was passed).
            output_hidden_states: return the last hidden state (else None).
            logits_to_keep: if > 0, logits only for the last that many positions.
        Returns:
            logits: (B, T, V) (T = logits_to_keep if > 0), in the model dtype.
            last_hidden: (B, T, D) after the final RMSNorm, before lm_head (what the output heads read).
            cache: the cache, or None when ``use_cache`` is False.
        """
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.hidden_size:
            raise ValueError(f"inputs_embeds must be (B, T, {self.hidden_size}); got {tuple(inputs_embeds.shape)}")
        base = self.base
        out = base.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, use_cache=use_cache)
        hidden = out.last_hidden_state  # (B, T, D)
        logits = base.lm_head(hidden[:, -logits_to_keep:] if logits_to_keep > 0 else hidden)  # (B, T, V)
        return logits, (hidden if output_hidden_states else None), (out.past_key_values if use_cache else None)

    # -- parameters
    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by kind: ``lora`` (LoRA A/B) and ``new_token_rows`` (the new rows of the
        input and output embeddings). Raises if any other parameter is trainable."""
        groups: dict[str, list[nn.Parameter]] = {"lora": [], "new_token_rows": []}
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_" in name:
                groups["lora"].append(p)
            elif "trainable_tokens_delta" in name:
                groups["new_token_rows"].append(p)
            else:
                raise RuntimeError(f"unexpected trainable LLM parameter {name}; only LoRA and new token rows "
                                   f"should train")
        return groups

    # -- adapter I/O
    def save_adapter(self, directory: "str | Path", base_model: Optional[str] = None) -> Path:
        """Writes the standard peft adapter (``adapter_config.json``, ``adapter_model.safetensors``).

        Loadable by :meth:`load_adapter` or ``PeftModel.from_pretrained(base, directory)`` where ``base`` is
        the same Llama resized to ``len(tokenizer)``. Embedding matrices are not saved (only the new rows).

        ``base_model`` is written as the config's ``base_model_name_or_path`` (peft otherwise records the
        folder the base weights were loaded from, an absolute path of the machine that saved it); a
        :class:`~codi2.pipeline.CoDi2Pipeline` directory passes its config's ``llm.path`` (``"llm"``, relative
        to the directory, when the base is stored inside it).
        """
        directory = Path(directory)
        self.model.save_pretrained(str(directory), save_embedding_layers=False)
        if base_model is not None:
            cfg_path = directory / ADAPTER_CONFIG
            saved = json.loads(cfg_path.read_text())
            saved["base_model_name_or_path"] = str(base_model)
            cfg_path.write_text(json.dumps(saved, indent=2, sort_keys=True))  # as peft writes it
            card = directory / "README.md"  # peft's model card names the base too, in its front matter
            if card.is_file():
                lines = card.read_text().split("\n")
                for i, line in enumerate(lines):
                    if line.startswith("base_model:"):
                        lines[i] = f"base_model: {base_model}"
                    elif line.startswith("- base_model:adapter:"):
                        lines[i] = f"- base_model:adapter:{base_model}"
                card.write_text("\n".join(lines))
        return directory

    def load_adapter(self, directory: "str | Path") -> None:
        """Loads an adapter written by :meth:`save_adapter`, strictly.

        One difference is allowed, and logged: this model's LoRA may target *more* module kinds than the
        adapter did (e.g. ``llm.lora.target_modules`` widened by a training config's model overrides from the
        attention projections to the MLP too). The saved modules are loaded; the new ones keep peft's
        initialisation (B = 0), so the model computes exactly what the saved adapter did until it is trained.

        Raises:
            FileNotFoundError: the adapter files are missing.
            ValueError: the adapter's config differs from this model's (type, r, alpha, token ids, or targets
                other than a widening), or keys are missing / unexpected / of the wrong shape (named in the
                message).
        """
        from peft import get_peft_model_state_dict, set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(directory)
        for f in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if not (directory / f).is_file():
                raise FileNotFoundError(f"adapter {directory} lacks {f}; expected a directory written by "
                                        f"LLM.save_adapter / PeftModel.save_pretrained")
        saved_cfg = json.loads((directory / ADAPTER_CONFIG).read_text())
        ours = self.model.peft_config["default"].to_dict()
        mismatch, widened = [], set()
        for key in ("peft_type", "r", "lora_alpha", "target_modules", "trainable_token_indices", "token_indices"):
            a, b = saved_cfg.get(key), ours.get(key)
            if isinstance(a, list) and isinstance(b, (list, set)) and key == "target_modules":
                a, b = sorted(a), sorted(b)
                if set(a) < set(b):  # a widening: the extra kinds start at B = 0
                    widened = set(b) - set(a)
                    continue
            if isinstance(b, set):
                b = sorted(b)
            if a != b:
                mismatch.append(f"{key}: adapter {a!r} vs model {b!r}")
        if mismatch:
            raise ValueError(f"adapter {directory} does not match this LLM's config: " + "; ".join(mismatch))

        state = load_file(str(directory / ADAPTER_WEIGHTS), device=str(self.device))
        expected = get_peft_model_state_dict(self.model, save_embedding_layers=False)
        missing = sorted(set(expected) - set(state))
        new_kinds = [k for k in missing if _lora_module_kind(k) in widened]
        missing = [k for k in missing if k not in new_kinds]
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(f"adapter {directory} does not fit this LLM: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        bad = [f"{k}: {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
               if k in state and state[k].shape != v.shape]
        if bad:
            raise ValueError(f"adapter {directory} has wrong shapes: {bad}")
        result = set_peft_model_state_dict(self.model, state)
        if result.unexpected_keys:
            raise ValueError(f"adapter {directory}: peft did not place keys {sorted(result.unexpected_keys)}")
        logger.info("loaded adapter %s (%d tensors)", directory, len(state))
        if widened:
            logger.warning("adapter %s targets %s; this model also adapts %s: those %d LoRA tensors start at "
                           "peft's initialisation (B = 0, no change to the outputs until trained)", directory,
                           sorted(saved_cfg["target_modules"]), sorted(widened), len(new_kinds))


def _lora_module_kind(key: str) -> str:
    """``…layers.0.mlp.up_proj.lora_A.weight`` -> ``up_proj`` (the name LoRA's target_modules match)."""
    parts = key.split(".")
    for i, p in enumerate(parts):
        if p.startswith("lora_") and i > 0:
            return parts[i - 1]
    return ""


# ----------------------------------------------------------------------------- counting
def llama_param_count(cfg: LLMConfig, n_new_tokens: int = 0) -> dict[str, int]:
    """Parameter counts for the configured Llama shapes, built on the meta device (nothing allocated).

    Returns:
        ``base`` (all Llama weights at ``cfg.vocab_size``), ``lora`` (r·(in+out) per targeted linear, 0 when
        LoRA is off), ``new_token_rows`` (n_new_tokens·D for the input and the untied output embeddings),
        ``trainable`` (lora + new_token_rows).
        Llama-2-7B shapes give base 6,738,415,616; r=128 on q,k,v,o gives lora 134,217,728.
    """
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(cfg))
    base = sum(p.numel() for p in model.parameters())
    lora = 0
    if cfg.lora.enabled:
        targets = set(cfg.lora.target_modules)
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in targets:
                lora += cfg.lora.r * (m.in_features + m.out_features)
    rows = n_new_tokens * cfg.hidden_size * 2  # untied input + output embeddings
    return {"base": base, "lora": lora, "new_token_rows": rows, "trainable": lora + rows}
