"""CoDi2Pipeline: load, save and chat with a whole codi2 model directory.

Directory layout (everything a chat needs; paths in ``config.yaml`` are relative to the directory
unless absolute — real weights at full scale stay where they are and are referenced by path)::

    config.yaml                     ModelConfig
    tokenizer/                      tokenizer with codi2's special tokens and chat template
    adapter/                        LoRA + new token rows, standard peft format (PeftModel.from_pretrained loads it)
    projectors_heads.safetensors    input projectors and output heads (strictly checked)
    llm/                            base Llama weights   (only when not an external path: tiny/mini)
    encoder/imagebind.pth           encoder weights      (only when not an external path: tiny/mini)
    decoders/{image,audio,video}/   diffusers pipelines  (only when not external paths: tiny/mini)
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from .checkpoint import PROJECTORS_HEADS_FILE, CheckpointError, load_trainable, save_trainable
from .config import ModelConfig, load_config, to_yaml
from .conversation import Message
from .generation import ChatSession, Event, SamplingOptions
from .modality import Modality

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
ADAPTER_DIR = "adapter"


class CoDi2Pipeline:
    """Inference wrapper around a :class:`~codi2.model.CoDi2Model`."""

    def __init__(self, model: Any, directory: Optional[Path] = None):
        self.model = model
        self.directory = directory

    @property
    def config(self) -> ModelConfig:
        return self.model.cfg

    # ------------------------------------------------------------------ load / save
    @classmethod
    def from_pretrained(cls, directory: "str | Path", device: "str | torch.device | None" = None,
                        overrides: Sequence[str] = ()) -> "CoDi2Pipeline":
        """Loads a pipeline directory strictly (missing adapter, projector or head weights raise)."""
        from .model import CoDi2Model

        d = Path(directory)
        if not (d / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{d} is not a codi2 model directory: {CONFIG_FILE} is missing "
                                    f"(create one with `codi2 init CONFIG --out DIR` or by training)")
        cfg = load_config(ModelConfig, d / CONFIG_FILE, overrides)
        model = CoDi2Model(cfg, base_dir=d, device=device)
        if not (d / ADAPTER_DIR).is_dir():
            raise CheckpointError(f"{d / ADAPTER_DIR}: missing; the LoRA adapter and new token rows are stored there")
        model.llm.load_adapter(d / ADAPTER_DIR)
        load_trainable(model, d / PROJECTORS_HEADS_FILE)
        model.eval()
        return cls(model, d)

    def save_pretrained(self, directory: "str | Path", self_contained: bool = False) -> Path:
        """Writes the directory described in the module docstring.

        Components named by an absolute path (local real weights: the base LLM, the encoder ``.pth``, decoder
        pipelines) are referenced, not copied, unless ``self_contained``: then every part is written into the
        directory and the config names it relatively, so the folder can be moved or shipped (the bundled mini
        model)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        m = self.model
        cfg = dataclasses.replace(self.config)
        src = self.directory or m.base_dir
        # tokenizer
        m.tokenizer.save_pretrained(str(d / "tokenizer"))
        llm_cfg = dataclasses.replace(cfg.llm, tokenizer="tokenizer")
        # base LLM: external paths stay; internal or random weights are written
        if self_contained or cfg.llm.path is None or not Path(cfg.llm.path).is_absolute():
            _save_base_llm(m.llm, d / "llm")
            llm_cfg = dataclasses.replace(llm_cfg, path="llm")
        cfg = dataclasses.replace(cfg, llm=llm_cfg)
        # encoder
        if self_contained or cfg.encoder.weights is None or not Path(cfg.encoder.weights).is_absolute():
            (d / "encoder").mkdir(exist_ok=True)
            torch.save(m.encoder.model.state_dict(), d / "encoder" / "imagebind.pth")
            cfg = dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights="encoder/imagebind.pth"))
        # decoders: relative dirs are copied along, absolute ones referenced
        mods = {}
        for name, mc in cfg.modalities.items():
            p = mc.decoder.path
            if p is not None and (self_contained or not Path(p).is_absolute()):
                if src is None and not Path(p).is_absolute():
                    raise ValueError(f"modalities.{name}.decoder.path={p!r} is relative but the model has no directory")
                target = d / "decoders" / name
                source = Path(p) if Path(p).is_absolute() else Path(src) / p
                if source.resolve() != target.resolve():
                    if target.exists():
                        shutil.rmtree(target)
                    shutil.copytree(source, target)
                mc = dataclasses.replace(mc, decoder=dataclasses.replace(mc.decoder, path=f"decoders/{name}"))
            mods[name] = mc
        cfg = dataclasses.replace(cfg, modalities=mods)
        m.llm.save_adapter(d / ADAPTER_DIR, base_model=cfg.llm.path)
        save_trainable(m, d / PROJECTORS_HEADS_FILE)
        (d / CONFIG_FILE).write_text(to_yaml(cfg))
        return d

    # ------------------------------------------------------------------ chat
    def session(self, history: Sequence[Message] = (), **kwargs: Any) -> ChatSession:
        """A new conversation; ``history`` (user, assistant, user, assistant, … messages) is replayed into its
        context first, as if those turns had been generated (the OpenAI-style API is stateless: each request
        brings its whole history). Replaying runs the LLM, so hold the model lock while calling it."""
        s = ChatSession(self.model, **kwargs)
        replay(s, history)
        return s

    def chat(self, message: "Message | str", options: Optional[SamplingOptions] = None,
             history: Sequence[Message] = ()) -> Message:
        """One reply on a fresh session (history is replayed into the session's context first)."""
        s = self.session()
        replay(s, history)
        return s.send(message, options)

    def stream(self, message: "Message | str", options: Optional[SamplingOptions] = None) -> Iterator[Event]:
        return self.session().stream(message, options)


def replay(session: ChatSession, history: Sequence[Message]) -> None:
    """Seeds a session with an existing history (as if those turns had been generated)."""
    from .generation import Turn

    if len(history) % 2:
        raise ValueError("history must alternate user/assistant messages and end with an assistant message")
    for i in range(0, len(history), 2):
        u, a = history[i], history[i + 1]
        if u.role != "user" or a.role != "assistant":
            raise ValueError(f"history[{i}:{i + 2}] must be a user message then an assistant message")
    if history:
        session.restore([Turn(history[i], history[i + 1]) for i in range(0, len(history), 2)])


def write_reply(message: Message, out_dir: "str | Path", stem: str = "reply") -> dict:
    """Saves a reply's media to ``out_dir`` and returns its manifest form (paths relative to out_dir)."""
    from .media import save_audio, save_image, save_video

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    content = []
    for i, p in enumerate(message.content):
        if p.type == "text":
            content.append({"type": "text", "text": p.text})
            continue
        if p.media is None:
            content.append({"type": p.type, "path": None})
            continue
        ext = {"image": "png", "audio": "wav", "video": "mp4"}[p.type]
        name = f"{stem}-{i}-{p.type}.{ext}"
        {"image": save_image, "audio": save_audio, "video": save_video}[p.type](p.media, out / name)
        p.path = name
        content.append({"type": p.type, "path": name})
    return {"role": message.role, "content": content}


# ----------------------------------------------------------------------------- building new models
TINY_WORDS = ("a the this that it is are was make turn show draw play give here there what which with and of to "
               "in on at for from image picture photo sound audio video clip song noise red green blue yellow "
               "black white circle square triangle star small big large left right top bottom center up down "
               "moving louder quieter higher lower pitch like but same as before now again please thanks "
               "one two three four first second third describe caption edit change into color colour shape").split()


def tiny_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """A small deterministic English-ish corpus to train a tiny tokenizer (tests, ``codi2 init`` of tiny)."""
    import random as _random

    rng = _random.Random(seed)
    template = ["[INST] <<SYS>>", "<</SYS>>", "[/INST]"] * 20  # the Llama-2 chat markers get whole pieces
    return template + [" ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(4, 14))).capitalize() + rng.choice(".?!")
            for _ in range(n)]


def _save_base_llm(llm: Any, directory: Path) -> None:
    """Saves the base Llama without the LoRA / trainable-token wrappers, in the Hugging Face layout.

    Key map (peft wrapper -> plain Llama): ``X.token_adapter.base_layer.weight -> X.weight``,
    ``X.base_layer.weight -> X.weight``; ``lora_*`` and ``trainable_tokens_delta`` live in the adapter.
    """
    from transformers import LlamaForCausalLM

    base = llm.base
    clean = {}
    for k, v in base.state_dict().items():
        if "lora_" in k or "trainable_tokens_delta" in k:
            continue
        clean[k.replace(".token_adapter.base_layer.", ".").replace(".base_layer.", ".")] = v
    with torch.device("meta"):
        expected = set(LlamaForCausalLM(base.config).state_dict())
    if set(clean) != expected:
        raise RuntimeError(f"base LLM key map is incomplete: missing {sorted(expected - set(clean))[:5]}, "
                           f"unexpected {sorted(set(clean) - expected)[:5]}")
    base.save_pretrained(str(directory), state_dict=clean)


def save_tiny_decoder(m: Modality, path: Path, targets: dict, seed: int = 0) -> Path:
    """A tiny random diffusers pipeline whose conditioning shapes equal the head's ``targets``."""
    from .decoders import tiny

    t = {k: tuple(int(x) for x in v) for k, v in targets.items()}
    need = {Modality.IMAGE: {"image_embeds"}, Modality.AUDIO: {"generated_prompt_embeds", "prompt_embeds"},
            Modality.VIDEO: {"prompt_embeds"}}[m]
    if set(t) != need:
        raise ValueError(f"modalities.{m.value}.head.targets has {sorted(t)}; the {m.value} decoder takes {sorted(need)}")
    if m is Modality.IMAGE:
        return tiny.save_tiny_unclip(path, image_embed_dim=t["image_embeds"][0], seed=seed)
    if m is Modality.AUDIO:
        (gl, gd), (_, td) = t["generated_prompt_embeds"], t["prompt_embeds"]
        return tiny.save_tiny_audioldm2(path, gen_dim=gd, gen_len=gl, t5_dim=td, seed=seed)
    (tl, td), = (t["prompt_embeds"],)
    return tiny.save_tiny_text_to_video(path, text_dim=td, text_len=tl, seed=seed)


def init_pipeline(cfg: ModelConfig, out_dir: "str | Path", seed: int = 0, config_dir: "str | Path | None" = None) -> Path:
    """Builds a model from ``cfg`` and saves it as a pipeline directory.

    Components with a path load from it (real weights); components without one are created:
    a tiny sentencepiece tokenizer (trained on :func:`tiny_corpus`), a random Llama, a random
    encoder, and tiny diffusers pipelines whose conditioning shapes match the heads' targets.
    """
    from .model import CoDi2Model

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if config_dir is not None:
        cfg = absolute_paths(cfg, Path(config_dir))
    llm = cfg.llm
    if llm.tokenizer is None and llm.path is None:
        from .llm import train_sentencepiece

        model_file = train_sentencepiece(tiny_corpus(seed=seed), llm.vocab_size, out / "tokenizer-src" / "tokenizer",
                                         hard_vocab_limit=False)
        llm = dataclasses.replace(llm, tokenizer=str(model_file.resolve()))
    mods = {}
    for name, mc in cfg.modalities.items():
        if mc.enabled and mc.n_out > 0 and mc.decoder.path is None:
            target = out / "decoders" / name
            save_tiny_decoder(Modality(name), target, mc.head.targets, seed=seed)
            mc = dataclasses.replace(mc, decoder=dataclasses.replace(mc.decoder, path=f"decoders/{name}"))
        mods[name] = mc
    cfg = dataclasses.replace(cfg, llm=llm, modalities=mods)
    model = CoDi2Model(cfg, base_dir=out)
    pipe = CoDi2Pipeline(model, out)
    pipe.save_pretrained(out)
    if (out / "tokenizer-src").exists():
        shutil.rmtree(out / "tokenizer-src")
    return out


def absolute_paths(cfg: ModelConfig, base: Path) -> ModelConfig:
    """Makes every relative path field of ``cfg`` absolute against ``base`` (a config file's folder)."""
    def fix(p: Optional[str]) -> Optional[str]:
        return p if p is None or Path(p).is_absolute() else str((base / p).resolve())

    mods = {k: dataclasses.replace(v, decoder=dataclasses.replace(v.decoder, path=fix(v.decoder.path)))
            for k, v in cfg.modalities.items()}
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, weights=fix(cfg.encoder.weights)),
                               llm=dataclasses.replace(cfg.llm, path=fix(cfg.llm.path), tokenizer=fix(cfg.llm.tokenizer)),
                               modalities=mods)
