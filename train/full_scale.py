"""The full-scale configs at toy size: the codi2-7b model config with dimension overrides only, and local
weights in the layouts the real ones come in (what ``benchmarks/train_memory.py``,
``benchmarks/precompute_targets.py`` and the rehearsal ``python -m train.rehearse`` build on).

:func:`write_weights` writes, under one folder:

* ``llama/`` (and ``llama-bin/``): a Llama as ``transformers`` saves it — ``config.json``,
  ``generation_config.json``, ``model.safetensors`` (``pytorch_model.bin`` in ``llama-bin/``) and the tokenizer
  files (a sentencepiece model trained on a small corpus, saved by ``LlamaTokenizer.save_pretrained``);
* ``imagebind_huge.pth``: an ImageBind state dict with the reference keys (``modality_preprocessors.vision…``);
* ``unclip/``, ``audioldm2/``, ``zeroscope/``: diffusers pipeline folders (``StableUnCLIPImg2ImgPipeline``,
  ``AudioLDM2Pipeline``, ``TextToVideoSDPipeline``) with tiny components.

and returns the environment variables that ``configs/model/codi2-7b.yaml`` reads (``CODI2_LLAMA`` …). The model
is then built the way a person with the real weights builds it::

    codi2 init configs/model/codi2-7b.yaml --out DIR <TINY_MODEL_OVERRIDES>
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

# Dimensions only: encoder, LoRA and head sizes, token counts, decoder output sizes and steps. Paths, dtypes,
# the LoRA targets, losses, schedulers and every other setting stay those of configs/model/codi2-7b.yaml.
TINY_ENCODER = {
    "video_frames": 2, "kernel_size": "[2,8,8]", "image_size": 32, "out_embed_dim": 16,
    "vision_embed_dim": 32, "vision_num_blocks": 2, "vision_num_heads": 2,
    "text_embed_dim": 32, "text_num_blocks": 2, "text_num_heads": 2,
    "audio_embed_dim": 16, "audio_num_blocks": 1, "audio_num_heads": 2, "audio_kernel_size": 8,
    "audio_stride": 8, "audio_num_mel_bins": 16, "audio_target_len": 48, "audio_clip_duration": 0.5,
    "video_spatial_crops": 1, "video_clips_per_sample": 2,
}
TINY_LLAMA = {"vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024}
IMAGE_EMBED = 16            # = encoder out_embed_dim (image targets are encoder embeddings)
AUDIO_GEN = (8, 16)         # generated_prompt_embeds (AudioLDM2: 8 × 768)
AUDIO_T5 = (8, 16)          # prompt_embeds (AudioLDM2: T × 1024)
VIDEO_TEXT = (16, 16)       # prompt_embeds (Zeroscope: 77 × 1024)

TINY_MODEL_OVERRIDES: list[str] = (
    [f"encoder.{k}={v}" for k, v in TINY_ENCODER.items()]
    + [f"llm.{k}={v}" for k, v in TINY_LLAMA.items()]
    + ["llm.lora.r=4", "llm.lora.alpha=8", "generation.max_new_tokens=24",
       "modalities.image.n_in=17", "modalities.image.n_out=2", "modalities.image.head.hidden=32",
       f"modalities.image.head.targets.image_embeds=[{IMAGE_EMBED}]",
       "modalities.image.decoder.steps=2", "modalities.image.decoder.height=16", "modalities.image.decoder.width=16",
       "modalities.audio.n_out=2", "modalities.audio.head.hidden=32", "modalities.audio.head.num_layers=1",
       "modalities.audio.head.num_heads=2",
       f"modalities.audio.head.targets.generated_prompt_embeds=[{AUDIO_GEN[0]},{AUDIO_GEN[1]}]",
       f"modalities.audio.head.targets.prompt_embeds=[{AUDIO_T5[0]},{AUDIO_T5[1]}]",
       f"modalities.audio.decoder.prompt_len={AUDIO_T5[0]}",
       "modalities.audio.decoder.steps=2", "modalities.audio.decoder.audio_seconds=0.5",
       "modalities.video.n_in=4", "modalities.video.n_out=2", "modalities.video.head.hidden=32",
       "modalities.video.head.num_layers=1", "modalities.video.head.num_heads=2",
       f"modalities.video.head.targets.prompt_embeds=[{VIDEO_TEXT[0]},{VIDEO_TEXT[1]}]",
       "modalities.video.decoder.steps=2", "modalities.video.decoder.num_frames=2",
       "modalities.video.decoder.height=16", "modalities.video.decoder.width=16"])

ENV_NAMES = ("CODI2_LLAMA", "CODI2_IMAGEBIND", "CODI2_UNCLIP", "CODI2_AUDIOLDM2", "CODI2_ZEROSCOPE")


def write_llama(out: "str | Path", safetensors: bool = True, seed: int = 0) -> Path:
    """A tiny random Llama and its sentencepiece tokenizer, saved with ``save_pretrained`` (``model.safetensors``
    or, with ``safetensors=False``, ``pytorch_model.bin``)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    from codi2.llm import train_sentencepiece
    from codi2.pipeline import tiny_corpus

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sp = train_sentencepiece(tiny_corpus(seed=seed), TINY_LLAMA["vocab_size"], out / ".sp" / "tokenizer",
                             hard_vocab_limit=False)
    tok = LlamaTokenizer.from_pretrained(str(sp), local_files_only=True, add_bos_token=True)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=TINY_LLAMA["vocab_size"], hidden_size=TINY_LLAMA["hidden_size"],
                      intermediate_size=TINY_LLAMA["intermediate_size"],
                      num_hidden_layers=TINY_LLAMA["num_hidden_layers"],
                      num_attention_heads=TINY_LLAMA["num_attention_heads"],
                      num_key_value_heads=TINY_LLAMA["num_key_value_heads"],
                      max_position_embeddings=TINY_LLAMA["max_position_embeddings"], tie_word_embeddings=False,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0, torch_dtype="float16")
    model = LlamaForCausalLM(cfg).to(torch.float16)
    model.save_pretrained(str(out))
    if not safetensors:  # the older layout many copies of Llama-2 have: pytorch_model.bin (a torch.save'd state dict)
        from safetensors.torch import load_file

        torch.save(load_file(str(out / "model.safetensors")), out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()
    tok.save_pretrained(str(out))
    import shutil

    shutil.copy(sp, out / "tokenizer.model")  # Llama-2 repositories ship the sentencepiece file too
    shutil.rmtree(out / ".sp")
    return out


def write_imagebind(path: "str | Path", seed: int = 0, overrides: "dict | None" = None) -> Path:
    """An ImageBind state dict with the reference keys (what ``imagebind_huge.pth`` holds), at the toy sizes
    (``overrides``: other encoder sizes)."""
    import dataclasses

    import torch

    from codi2.config import ImageBindConfig
    from codi2.encoders import ImageBindEncoder

    kw = {k: (json.loads(v) if isinstance(v, str) else v) for k, v in {**TINY_ENCODER, **(overrides or {})}.items()}
    torch.manual_seed(seed)
    enc = ImageBindEncoder(dataclasses.replace(ImageBindConfig(), **kw))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(enc.model.state_dict(), path)
    return path


def write_weights(root: "str | Path", seed: int = 0, bin_variant: bool = True) -> dict[str, str]:
    """Writes every component (module docstring) under ``root`` once; returns the ``CODI2_*`` variables."""
    from codi2.decoders import tiny

    root = Path(root)
    env = {"CODI2_LLAMA": str(root / "llama"), "CODI2_IMAGEBIND": str(root / "imagebind_huge.pth"),
           "CODI2_UNCLIP": str(root / "unclip"), "CODI2_AUDIOLDM2": str(root / "audioldm2"),
           "CODI2_ZEROSCOPE": str(root / "zeroscope")}
    done = root / "weights.json"
    if done.is_file():
        return json.loads(done.read_text())["env"]
    write_llama(root / "llama", safetensors=True, seed=seed)
    if bin_variant:  # the same weights in the older layout: pytorch_model.bin (a torch.save'd state dict)
        import shutil

        import torch
        from safetensors.torch import load_file

        shutil.copytree(root / "llama", root / "llama-bin", ignore=shutil.ignore_patterns("*.safetensors"))
        torch.save(load_file(str(root / "llama" / "model.safetensors")), root / "llama-bin" / "pytorch_model.bin")
    write_imagebind(root / "imagebind_huge.pth", seed=seed)
    tiny.save_tiny_unclip(root / "unclip", image_embed_dim=IMAGE_EMBED, seed=seed)
    tiny.save_tiny_audioldm2(root / "audioldm2", gen_dim=AUDIO_GEN[1], gen_len=AUDIO_GEN[0], t5_dim=AUDIO_T5[1],
                             seed=seed)
    tiny.save_tiny_text_to_video(root / "zeroscope", text_dim=VIDEO_TEXT[1], text_len=VIDEO_TEXT[0], seed=seed)
    done.write_text(json.dumps({"env": env, "llama_bin": str(root / "llama-bin") if bin_variant else None},
                               indent=1))
    return env


def init_model(out: "str | Path", env: dict[str, str], extra: Sequence[str] = (), seed: int = 0,
               config: str = "configs/model/codi2-7b.yaml") -> Path:
    """``codi2 init configs/model/codi2-7b.yaml --out OUT`` with :data:`TINY_MODEL_OVERRIDES` (in-process)."""
    from codi2.config import load_model_config
    from codi2.pipeline import init_pipeline

    out = Path(out)
    if (out / "config.yaml").is_file():
        return out
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        cfg = load_model_config(config, [*TINY_MODEL_OVERRIDES, *extra])
        init_pipeline(cfg, out, seed=seed, config_dir=Path(config).parent)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out
