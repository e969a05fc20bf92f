"""Full scale on a GPU: codi2-7b's speed and memory against the device's own limits, from one script.

    python benchmarks/gpu_check.py                       # on a CUDA machine: benchmarks/results/gpu_check.json + .md
    python benchmarks/gpu_check.py --only decoders chat_turn --out /tmp/second_try.json
    python benchmarks/gpu_check.py --tiny --out /tmp/t.json   # the same code paths on CPU, tiny shapes, seconds

Every model is built on the device with random weights (speed and memory do not depend on the values), in the
shapes of the real configs: Llama-2-7B, LoRA r=128 and imagebind_huge from ``configs/model/codi2-7b.yaml``; the
SD-2.1-unCLIP-H, AudioLDM2 and Zeroscope v2 576w UNet / VAE / vocoder configs written out below (nothing can be
downloaded). Sections, in order (each in its own process on CUDA, with its own time limit; a section that fails
or runs out of time is recorded with the reason, never with a number it did not measure):

``peaks``
    device name, device-to-device copy bandwidth (a copy of >= 1 GiB; bytes read + written per second) and the
    bf16 matmul rate (a large ``torch.matmul``), the two limits the other figures are compared with.
``llm_decode``
    Llama-2-7B bf16, batch 1, a 1,024-token context given as embeddings (as codi2 feeds its multimodal context),
    greedy ``generate`` with the KV cache: time to first token and tokens/s, eager (dynamic cache) and static
    cache; against the HBM bound (weight bytes / copy bandwidth); a profile of 16 eager tokens (the kernels with
    the most device time, and the share of the wall time the device was busy at all).
``lora_train``
    one optimizer step of codi2's trainer (``train.step.TrainModule`` through ``train.loop.PlainEngine``, as
    ``python -m train`` runs it): LoRA r=128 on q,k,v,o, bf16 autocast, gradient checkpointing, sequences of
    1,024 tokens holding one 257-token image span and one image output, the last quarter supervised; the
    micro-batch doubled until it no longer fits; tokens/s, model FLOP/s and MFU against the measured matmul
    rate, peak memory, a profile of one step. Then the model is saved as a pipeline directory (about 16 GB in
    ``--work``) for the sections below.
``qlora_train``
    the same step with the base loaded in 4 bit through bitsandbytes (``llm.quantization=4bit``; CUDA only).
``chat_turn``
    one chat turn end to end through ``CoDi2Pipeline.from_pretrained`` and ``ChatSession``: image in, image out
    (the reply is prefilled with ``<img>``), 4-bit LLM, the decoders loaded on first use, one at a time, with
    the configured offload: time to first token, time to the image, total, peak memory (a cold and a warm turn).
``decoders``
    each decoder through ``codi2.decoders.build_decoder`` at the configured size, steps and scheduler (SD-2.1-
    unCLIP 768 px, 50 DDIM steps; AudioLDM2 10 s, 200 DDIM steps; Zeroscope 576x320x24, 40 DPM++ steps):
    seconds per output and peak memory with ``offload: none`` and ``offload: model``. Their text encoders are
    narrow stand-ins of the right width (codi2 frees them after computing the unconditional embeddings; they
    take no part in decoding).
``deepspeed_zero2`` / ``deepspeed_zero3``
    one bf16 step on one GPU (world size 1) of ``train.loop.Trainer(use_deepspeed=True)``, the trainer
    ``train/train.py`` runs, on the saved pipeline and a small generated image-phase manifest (setup, then two
    steps timed; the final checkpoint and export are not written). ZeRO-2 uses ``configs/deepspeed/zero2.json``;
    ZeRO-3 uses ``zero3-offload.json`` without its offload blocks (DeepSpeedCPUAdam is a JIT-compiled op).
``llm_decode_compile``
    the decode of ``llm_decode`` with the static cache under ``torch.compile`` (transformers' ``CompileConfig``,
    mode ``reduce-overhead``); last because compiling takes the longest.

``--tiny`` runs every section on the CPU with ``configs/model/tiny.yaml`` and tiny decoders, in one process;
what needs CUDA (bitsandbytes 4 bit, accelerate offload) is recorded as skipped with the reason. On a GPU the
whole run is bounded by ``--budget`` seconds (default 290); sections that would start too late are recorded as
skipped, and ``--only`` runs the rest in a second try (give both runs the same ``--work`` so the second reuses the
saved pipeline and decoders: about 25 GB of disk). The JSON and the table are rewritten after every section.

JSON: ``meta`` (device, versions, start and end in UTC, the command), ``sections`` (each with ``status`` ok /
skipped / failed / timeout, a ``reason`` where not ok, and its measurements), ``derived`` (decode against the HBM
bound, MFU: ratios of numbers measured in the same run).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SECTIONS = ("peaks", "llm_decode", "lora_train", "qlora_train", "chat_turn", "decoders", "deepspeed_zero2",
            "deepspeed_zero3", "llm_decode_compile")
# Seconds each section may take on the GPU (the whole run is also bounded by --budget).
SECTION_LIMIT_S = {"peaks": 30, "llm_decode": 60, "lora_train": 120, "qlora_train": 90, "chat_turn": 90,
                   "decoders": 180, "deepspeed_zero2": 90, "deepspeed_zero3": 120, "llm_decode_compile": 120}
MIN_START_S = 20  # a section is not started with less time than this left
GIB = 1024 ** 3
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check.json"

# ----------------------------------------------------------------------------- real decoder shapes
# The denoising components as the diffusers model cards define them (unet/, vae/, vocoder/ config.json of
# stabilityai/stable-diffusion-2-1-unclip, cvssp/audioldm2, cerspense/zeroscope_v2_576w). Schedulers, the
# image normaliser and the conditioning widths come from codi2.decoders.tiny with the real dimensions.
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=768, scaling_factor=0.18215)
UNCLIP_UNET = dict(
    sample_size=96, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True,
    class_embed_type="projection", projection_class_embeddings_input_dim=2048, norm_num_groups=32,
    flip_sin_to_cos=True, freq_shift=0, act_fn="silu")
ZEROSCOPE_UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
    up_block_types=["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
    attention_head_dim=64, cross_attention_dim=1024, norm_num_groups=32, act_fn="silu")
AUDIOLDM2_UNET = dict(
    sample_size=256, in_channels=8, out_channels=8, layers_per_block=2, block_out_channels=[128, 256, 384, 640],
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    attention_head_dim=8, cross_attention_dim=[[None, 768, 1024]] * 4, norm_num_groups=32, act_fn="silu")
AUDIOLDM2_VAE = dict(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=[128, 256, 512],
                     down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
                     layers_per_block=2, norm_num_groups=32, act_fn="silu", sample_size=1024,
                     scaling_factor=0.4110932946205139)
AUDIOLDM2_VOCODER = dict(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024,
                         upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
                         resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
                         leaky_relu_slope=0.1, normalize_before=False)


# ----------------------------------------------------------------------------- context
@dataclasses.dataclass
class Ctx:
    tiny: bool
    device: torch.device
    work: Path
    out_file: Optional[Path] = None  # where a section in its own process writes its results as it goes

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def config_name(self) -> str:
        return "tiny" if self.tiny else "codi2-7b"

    def flush(self, res: dict) -> None:
        if self.out_file is not None:
            tmp = self.out_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(res, indent=1, default=_jsonable))
            os.replace(tmp, self.out_file)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def memory(self) -> dict:
        """Peak memory since the last :meth:`reset_peak` (CUDA), or the process's peak RSS (CPU)."""
        if self.cuda:
            return {"peak_allocated_gib": torch.cuda.max_memory_allocated(self.device) / GIB,
                    "peak_reserved_gib": torch.cuda.max_memory_reserved(self.device) / GIB,
                    "allocated_now_gib": torch.cuda.memory_allocated(self.device) / GIB}
        import resource

        return {"process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def _jsonable(x: Any) -> Any:
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, torch.dtype):
        return str(x)
    return repr(x)


def _profile(ctx: Ctx, fn: Callable[[], Any], top: int = 12) -> dict:
    """Where the time of one call goes: the ops with the most self time on the device (CUDA) or the CPU, and
    how much of the wall time the device was busy at all (a low share: launch or Python overhead bound)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.cuda else [])
    with profile(activities=acts) as prof:
        wall, _ = _timed(ctx, fn)
    from torch.autograd import DeviceType

    events = list(prof.key_averages())
    if ctx.cuda:  # the kernels themselves (an aten op's own row repeats its kernels' time)
        key = "self_device_time_total"
        events = [e for e in events if e.device_type == DeviceType.CUDA]
    else:
        key = "self_cpu_time_total"
    busy = sum(getattr(e, key) for e in events if getattr(e, key) > 0) / 1e6
    rows = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:top]
    return {"wall_s": wall, "clock": "device" if ctx.cuda else "cpu", "busy_s": busy,
            "busy_fraction_of_wall": busy / wall if wall > 0 else None,
            "top_ops": [{"name": e.key[:120], "calls": e.count, "self_s": getattr(e, key) / 1e6,
                         "share_of_busy": getattr(e, key) / 1e6 / busy if busy else None} for e in rows]}


def _timed(ctx: Ctx, fn: Callable[[], Any]) -> tuple[float, Any]:
    ctx.sync()
    t = time.perf_counter()
    r = fn()
    ctx.sync()
    return time.perf_counter() - t, r


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]


# ----------------------------------------------------------------------------- building models
def model_config(ctx: Ctx, overrides: Sequence[str] = ()):
    """The model config (tiny or codi2-7b) with the random-weight parts this script builds: no weight paths, the
    tokenizer from :func:`tokenizer_file`, the decoders from :func:`decoder_dir`."""
    from codi2.config import load_model_config

    base = load_model_config(REPO / "configs" / "model" / f"{ctx.config_name}.yaml")
    ov = ["llm.path=null", f"llm.tokenizer={tokenizer_file(ctx, base.llm.vocab_size)}", "encoder.weights=null"]
    ov += [f"modalities.{m}.decoder.path={decoder_dir(ctx, m, create=False)}" for m in base.modalities]
    if not ctx.cuda:
        ov += ["llm.dtype=float32", "encoder.dtype=float32"] + [f"modalities.{m}.decoder.dtype=float32"
                                                               for m in base.modalities]
    return load_model_config(REPO / "configs" / "model" / f"{ctx.config_name}.yaml", ov + list(overrides))


def tokenizer_file(ctx: Ctx, vocab_size: int) -> Path:
    """A Llama-style sentencepiece model with exactly ``vocab_size`` pieces (32,000 at full scale): trained on
    codi2's tiny corpus, then padded with pieces that never occur, so the embeddings have Llama-2's shape."""
    path = ctx.work / f"tokenizer-{vocab_size}.model"
    if path.is_file():
        return path
    from sentencepiece import sentencepiece_model_pb2 as pb

    from codi2.llm import train_sentencepiece
    from codi2.pipeline import tiny_corpus

    src = train_sentencepiece(tiny_corpus(), min(vocab_size, 320), ctx.work / "tokenizer-src" / "tok",
                              hard_vocab_limit=False)
    proto = pb.ModelProto()
    proto.ParseFromString(src.read_bytes())
    low = min(p.score for p in proto.pieces)
    for i in range(vocab_size - len(proto.pieces)):
        piece = proto.pieces.add()
        piece.piece = f"\u2581qz{i:05d}qz"
        piece.score = low - 1.0 - i * 1e-3
        piece.type = pb.ModelProto.SentencePiece.NORMAL
    if len(proto.pieces) != vocab_size:
        raise RuntimeError(f"tokenizer has {len(proto.pieces)} pieces, wanted {vocab_size}")
    path.write_bytes(proto.SerializeToString())
    return path


def build_model(ctx: Ctx, cfg):
    """CoDi2Model with random weights, every tensor created on the device (no host-side initialisation)."""
    from codi2.model import CoDi2Model

    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = CoDi2Model(cfg, device=ctx.device)
    return model


def decoder_dir(ctx: Ctx, modality: str, create: bool = True) -> Path:
    """A diffusers directory for ``modality``: tiny (``--tiny``) or with the real denoising components."""
    d = ctx.work / "decoders" / modality
    if not create or (d / "model_index.json").is_file():
        return d
    from codi2.decoders import tiny

    if ctx.tiny:
        from codi2.config import load_model_config
        from codi2.modality import Modality
        from codi2.pipeline import save_tiny_decoder

        cfg = load_model_config(REPO / "configs" / "model" / "tiny.yaml")
        save_tiny_decoder(Modality(modality), d, cfg.modalities[modality].head.targets)
        return d
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dtype = torch.bfloat16
    from diffusers import AutoencoderKL

    parts: dict[str, Any] = {}
    with torch.device(ctx.device):
        torch.manual_seed(0)
        if modality == "image":
            from diffusers import UNet2DConditionModel

            tiny.save_tiny_unclip(tmp, image_embed_dim=1024, text_dim=1024)
            parts = {"unet": UNet2DConditionModel(**UNCLIP_UNET), "vae": AutoencoderKL(**SD_VAE)}
        elif modality == "video":
            from diffusers import UNet3DConditionModel

            tiny.save_tiny_text_to_video(tmp, text_dim=1024, text_len=77)
            parts = {"unet": UNet3DConditionModel(**ZEROSCOPE_UNET), "vae": AutoencoderKL(**SD_VAE)}
        else:
            from diffusers import AudioLDM2UNet2DConditionModel
            from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

            tiny.save_tiny_audioldm2(tmp, gen_dim=768, gen_len=8, t5_dim=1024, mel_bins=64)
            parts = {"unet": AudioLDM2UNet2DConditionModel(**AUDIOLDM2_UNET), "vae": AutoencoderKL(**AUDIOLDM2_VAE),
                     "vocoder": SpeechT5HifiGan(SpeechT5HifiGanConfig(**AUDIOLDM2_VOCODER))}
    for name, module in parts.items():
        shutil.rmtree(tmp / name)
        module.to(dtype).save_pretrained(str(tmp / name))
    del parts
    ctx.free()
    os.replace(tmp, d)
    return d


def pipeline_dir(ctx: Ctx, model=None) -> Path:
    """The saved codi2 pipeline (base Llama, encoder, adapter, heads, tokenizer) the later sections load."""
    d = ctx.work / "pipeline"
    if (d / "config.yaml").is_file():
        return d
    from codi2.pipeline import CoDi2Pipeline

    own = model is None
    if own:
        model = build_model(ctx, model_config(ctx))
    tmp = d.with_name("pipeline.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    CoDi2Pipeline(model, None).save_pretrained(tmp)
    os.replace(tmp, d)
    if own:
        del model
        ctx.free()
    return d


# ----------------------------------------------------------------------------- sections
def sec_peaks(ctx: Ctx, res: dict) -> None:
    """Copy bandwidth and matmul rate."""
    res.update(device_info(ctx))
    ctx.flush(res)
    n = (1 * GIB if ctx.cuda else 32 * 1024 ** 2) // 4  # float32 elements
    a = torch.empty(n, dtype=torch.float32, device=ctx.device).uniform_()
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    reps = 20 if ctx.cuda else 5
    dt, _ = _timed(ctx, lambda: [b.copy_(a) for _ in range(reps)])
    res["copy"] = {"bytes": n * 4, "repeats": reps, "seconds": dt,
                   "bandwidth_gb_s": 2 * n * 4 * reps / dt / 1e9, "counts": "bytes read + bytes written"}
    del a, b
    ctx.free()
    ctx.flush(res)
    size, dtype = (8192, torch.bfloat16) if ctx.cuda else (256, torch.float32)
    x = torch.randn(size, size, device=ctx.device, dtype=dtype)
    y = torch.randn(size, size, device=ctx.device, dtype=dtype)
    for _ in range(3):
        torch.matmul(x, y)
    reps = 100 if ctx.cuda else 5
    dt, _ = _timed(ctx, lambda: [torch.matmul(x, y) for _ in range(reps)])
    res["matmul"] = {"size": size, "dtype": str(dtype), "repeats": reps, "seconds": dt,
                     "tflop_s": 2 * size ** 3 * reps / dt / 1e12}


def device_info(ctx: Ctx) -> dict:
    info: dict[str, Any] = {"device": str(ctx.device)}
    if ctx.cuda:
        p = torch.cuda.get_device_properties(ctx.device)
        info.update(name=p.name, total_memory_gib=p.total_memory / GIB, capability=f"{p.major}.{p.minor}",
                    multiprocessors=p.multi_processor_count, cuda_runtime=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), driver=_nvidia_smi("driver_version"))
    else:
        info.update(name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def _nvidia_smi(field: str) -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


class _Stamps:
    """A ``generate`` streamer recording when each token arrives (``put`` gets the tokens on the CPU, which
    waits for the device)."""

    def __init__(self):
        self.t: list[float] = []

    def put(self, value) -> None:
        self.t.append(time.perf_counter())

    def end(self) -> None:
        pass


def _decode_model(ctx: Ctx):
    from transformers import LlamaForCausalLM

    from codi2.llm import llama_config

    cfg = model_config(ctx)
    dtype = torch.bfloat16 if ctx.cuda else torch.float32
    torch.manual_seed(0)
    with torch.device(ctx.device):
        model = LlamaForCausalLM(llama_config(cfg.llm)).to(dtype).eval()
    return cfg, model


def _context_embeds(ctx: Ctx, cfg, model, length: int) -> torch.Tensor:
    """(1, length, D): token embeddings with one image span of n_in projected-feature-sized vectors."""
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, cfg.llm.vocab_size, (1, length), generator=g).to(ctx.device)
    with torch.no_grad():
        emb = model.get_input_embeddings()(ids)
    n_img = cfg.modalities["image"].n_in
    span = torch.randn(1, n_img, emb.shape[-1], generator=g) * float(emb.float().std())
    emb[:, 8:8 + n_img] = span.to(emb.device, emb.dtype)
    return emb


def _decode_run(ctx: Ctx, model, emb: torch.Tensor, new_tokens: int, **gen_kwargs) -> dict:
    """Greedy generate from embeddings; the first call warms up, the second is timed token by token."""
    mask = torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
    kw = dict(inputs_embeds=emb, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
              do_sample=False, pad_token_id=0, **gen_kwargs)
    t0 = time.perf_counter()
    with torch.no_grad():
        model.generate(**kw, streamer=_Stamps())
    warm = time.perf_counter() - t0
    runs = []
    for _ in range(2 if gen_kwargs.get("compile_config") is not None else 1):
        s = _Stamps()
        ctx.sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**kw, streamer=s)
        ctx.sync()
        total = time.perf_counter() - t0
        tok = s.t[1:]  # the first put is the (empty) prompt
        if len(tok) != new_tokens:
            raise RuntimeError(f"the streamer saw {len(tok)} tokens, wanted {new_tokens}")
        runs.append({"ttft_s": tok[0] - t0, "total_s": total, "tokens": len(tok),
                     "decode_tokens_per_s": (len(tok) - 1) / (tok[-1] - tok[0])})
    best = max(runs, key=lambda r: r["decode_tokens_per_s"])
    if out.shape[-1] != new_tokens:
        raise RuntimeError(f"generate returned {out.shape[-1]} tokens, wanted {new_tokens}")
    return {**best, "first_call_s": warm, "new_tokens": new_tokens}


def sec_llm_decode(ctx: Ctx, res: dict) -> None:
    cfg, model = _decode_model(ctx)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    ctx_len = 1024 if not ctx.tiny else 64
    new = 64 if not ctx.tiny else 8
    res.update(context_tokens=ctx_len, batch=1, dtype=str(next(model.parameters()).dtype),
               parameters=sum(p.numel() for p in model.parameters()), weight_bytes=weight_bytes,
               kv_cache_bytes_at_context=2 * cfg.llm.num_hidden_layers * ctx_len * cfg.llm.num_key_value_heads
               * (cfg.llm.hidden_size // cfg.llm.num_attention_heads) * next(model.parameters()).element_size())
    emb = _context_embeds(ctx, cfg, model, ctx_len)
    ctx.reset_peak()
    for name, kw in (("eager", {}), ("static_cache", {"cache_implementation": "static", "disable_compile": True})):
        try:
            res[name] = _decode_run(ctx, model, emb, new, **kw)
        except Exception as e:  # noqa: BLE001 - recorded, the next variant still runs
            res[name] = {"skipped": _err(e)}
        ctx.flush(res)
    res["memory"] = ctx.memory()
    try:  # where the time of eager decoding goes: 16 tokens (the prefill is a small part of it)
        mask = torch.ones(emb.shape[:2], dtype=torch.long, device=emb.device)
        with torch.no_grad():
            res["profile_eager_16_tokens"] = _profile(ctx, lambda: model.generate(
                inputs_embeds=emb, attention_mask=mask, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                pad_token_id=0))
    except Exception as e:  # noqa: BLE001
        res["profile_eager_16_tokens"] = {"skipped": _err(e)}


def sec_llm_decode_compile(ctx: Ctx, res: dict) -> None:
    from transformers import CompileConfig

    cfg, model = _decode_model(ctx)
    ctx_len = 1024 if not ctx.tiny else 64
    new = 64 if not ctx.tiny else 8
    cc = (CompileConfig(fullgraph=False, mode="reduce-overhead") if ctx.cuda
          else CompileConfig(backend="eager", mode="default"))  # --tiny: the code path, not a compiler
    if not ctx.cuda:
        cc._compile_all_devices = True  # transformers compiles on CUDA only unless told (its documented test flag)
    res.update(context_tokens=ctx_len, backend=cc.backend, mode=cc.mode,
               weight_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
    emb = _context_embeds(ctx, cfg, model, ctx_len)
    res["static_cache_compiled"] = _decode_run(ctx, model, emb, new, cache_implementation="static",
                                               compile_config=cc)


def _synthetic_batch(ctx: Ctx, model, batch: int, seq: int):
    """``batch`` conversations of ``seq`` tokens: one image-input span (n_in slots) near the start, one image
    output span (n_out slots) in the supervised last quarter, as :meth:`CoDi2Model.collate` lays them out."""
    from codi2.losses import IGNORE_INDEX
    from codi2.modality import Modality
    from codi2.model import Batch, SpanBatch

    g = torch.Generator().manual_seed(batch)
    img = Modality.IMAGE
    n_in, n_out = model.n_in[img], model.n_out[img]
    ids = torch.randint(3, model.tokenizer.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq, dtype=torch.long)
    labels = torch.full((batch, seq), IGNORE_INDEX, dtype=torch.long)
    sup = seq - seq // 4
    labels[:, sup:] = ids[:, sup:]
    rows = torch.arange(batch)
    d_enc = model.encoder.out_dim
    inputs = {img: SpanBatch(rows, torch.full((batch,), 8), features=torch.randn(batch, n_in, d_enc, generator=g))}
    targets = {k: torch.randn(batch, *shape, generator=g) for k, shape in model.heads[img.value].shapes.items()}
    outputs = {img: SpanBatch(rows, torch.full((batch,), seq - n_out - 4), targets=targets,
                              reply=torch.ones(batch, dtype=torch.long))}
    return Batch(ids, mask, labels, inputs, outputs).to(ctx.device), sup


def _flops_per_step(model, batch: int, seq: int, supervised: int) -> dict:
    """Model FLOPs of one step (MFU counts these; the checkpointing recompute is not counted).

    Per token: frozen linear weights 2 (forward) + 2 (backward to the activations); LoRA weights 2 + 2 + 2
    (their weight gradients too); attention 12 · layers · d · seq (scores and values, forward and backward,
    no causal discount); the LM head 4 · V · d on the supervised tokens only (codi2's text loss)."""
    cfg = model.llm.base.config
    lin = lora = 0
    for name, m in model.llm.base.model.named_modules():  # modules, not parameters: 4-bit weights are packed
        if isinstance(m, torch.nn.Linear):
            if "lora_" in name:
                lora += m.in_features * m.out_features
            else:
                lin += m.in_features * m.out_features
    attn = 12 * cfg.num_hidden_layers * cfg.hidden_size * seq
    head = 4 * model.llm.vocab_size * cfg.hidden_size
    per_token = 4 * lin + 6 * lora + attn
    total = batch * seq * per_token + batch * (seq - supervised) * head
    return {"flops": float(total), "frozen_linear_params": lin, "lora_params": lora,
            "formula": "B*T*(4*N_frozen_linear + 6*N_lora + 12*L*d*T) + B*T_sup*4*V*d"}


def _train_steps(ctx: Ctx, model, res: dict, prefix: str) -> None:
    """Doubles the micro-batch until a step no longer fits (or the memory is nearly full), then times the
    largest that fitted."""
    from codi2.modality import Modality
    from train.config import TrainConfig
    from train.loop import PlainEngine
    from train.step import TrainModule, set_stage

    set_stage(model, "instruction_tuning")
    module = TrainModule(model, all_modules=False).train()
    model.encoder.eval()
    tcfg = TrainConfig(bf16=ctx.cuda, grad_accum=1)
    engine = PlainEngine(module, tcfg, ctx.device)
    seq = 1024 if not ctx.tiny else 64
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    res.update(seq=seq, trainable_params=trainable, bf16_autocast=tcfg.bf16,
               gradient_checkpointing=model.cfg.llm.gradient_checkpointing, lora_r=model.cfg.llm.lora.r,
               image_span=model.n_in[Modality.IMAGE], quantization=model.cfg.llm.quantization)

    def step(b):
        out = engine.forward(b)
        engine.backward(out.loss)
        engine.step()
        return float(out.loss.detach())

    total = torch.cuda.get_device_properties(ctx.device).total_memory if ctx.cuda else None
    tries: list[dict] = []
    best = None
    sizes = (1, 2, 4, 8, 16, 32, 64) if not ctx.tiny else (1, 2)
    t_end = time.monotonic() + (25 if ctx.cuda else 60)
    for bs in sizes:
        ctx.reset_peak()
        try:
            batch, sup = _synthetic_batch(ctx, model, bs, seq)
            dt, loss = _timed(ctx, lambda: step(batch))
        except torch.OutOfMemoryError as e:
            tries.append({"micro_batch": bs, "fits": False, "reason": _err(e)})
            engine.optimizer.zero_grad(set_to_none=True)
            batch = None
            ctx.free()
            break
        mem = ctx.memory()
        tries.append({"micro_batch": bs, "fits": True, "first_step_s": dt, "loss": loss, **mem})
        best = (bs, batch, sup)
        res[f"{prefix}search"] = tries
        ctx.flush(res)
        if total is not None and mem["peak_reserved_gib"] * GIB > 0.8 * total:
            break
        if time.monotonic() + 3 * dt > t_end:
            tries[-1]["stopped"] = "time budget of the search"
            break
    res[f"{prefix}search"] = tries
    if best is None:
        raise RuntimeError("no micro-batch fitted")
    bs, batch, sup = best
    ctx.reset_peak()
    reps = 2 if ctx.cuda else 1
    times = []
    for _ in range(reps):
        dt, loss = _timed(ctx, lambda: step(batch))
        times.append(dt)
    fl = _flops_per_step(model, bs, seq, sup)
    t = min(times)
    res.update(micro_batch=bs, step_s=t, step_times_s=times, tokens_per_s=bs * seq / t, loss=loss,
               model_tflop_per_step=fl["flops"] / 1e12, model_tflop_s=fl["flops"] / t / 1e12, flop_count=fl,
               memory=ctx.memory())
    ctx.flush(res)
    try:
        res["profile_one_step"] = _profile(ctx, lambda: step(batch))
    except Exception as e:  # noqa: BLE001
        res["profile_one_step"] = {"skipped": _err(e)}
    engine.optimizer.zero_grad(set_to_none=True)


def sec_lora_train(ctx: Ctx, res: dict) -> None:
    cfg = model_config(ctx)
    t0 = time.perf_counter()
    model = build_model(ctx, cfg)
    ctx.sync()
    res["build_on_device_s"] = time.perf_counter() - t0
    res["parameters"] = sum(p.numel() for p in model.parameters())
    _train_steps(ctx, model, res, "")
    ctx.flush(res)
    # the later sections load this model from disk, as codi2 does
    for p in model.parameters():
        p.grad = None
    t0 = time.perf_counter()
    pipeline_dir(ctx, model)
    res["save_pipeline_s"] = time.perf_counter() - t0


def sec_qlora_train(ctx: Ctx, res: dict) -> None:
    if not ctx.cuda:
        res["skipped"] = "bitsandbytes 4-bit needs CUDA (codi2 loads a 4-bit base only on a CUDA device)"
        return
    from codi2.pipeline import CoDi2Pipeline

    d = pipeline_dir(ctx)
    ctx.reset_peak()
    t0 = time.perf_counter()
    pipe = CoDi2Pipeline.from_pretrained(d, device=ctx.device, overrides=["llm.quantization=4bit",
                                                                          "llm.gradient_checkpointing=true"])
    res["load_4bit_s"] = time.perf_counter() - t0
    res["load_memory"] = ctx.memory()
    _train_steps(ctx, pipe.model, res, "")


def _chat_image(ctx: Ctx):
    import numpy as np
    from PIL import Image

    side = 512 if not ctx.tiny else 32
    return Image.fromarray((np.random.default_rng(0).random((side, side, 3)) * 255).astype("uint8"))


def sec_chat_turn(ctx: Ctx, res: dict) -> None:
    from codi2.conversation import Message, Part
    from codi2.generation import MediaDone, SamplingOptions, TextDelta, TurnDone
    from codi2.modality import Modality
    from codi2.pipeline import CoDi2Pipeline

    d = pipeline_dir(ctx)
    decoder_dir(ctx, "image")
    overrides = ["llm.quantization=4bit"] if ctx.cuda else []
    res["llm_quantization"] = "4bit" if ctx.cuda else "none (bitsandbytes 4-bit needs CUDA)"
    ctx.reset_peak()
    t0 = time.perf_counter()
    pipe = CoDi2Pipeline.from_pretrained(d, device=ctx.device, overrides=overrides)
    res["load_s"] = time.perf_counter() - t0
    res["after_load"] = ctx.memory()
    dcfg = pipe.config.modalities["image"].decoder
    res["image_decoder"] = {"steps": dcfg.steps, "scheduler": dcfg.scheduler, "height": dcfg.height,
                            "width": dcfg.width, "offload": dcfg.offload, "dtype": dcfg.dtype}
    max_new = 64 if not ctx.tiny else 8
    res["max_new_tokens"] = max_new
    ctx.flush(res)
    for label in ("cold", "warm"):
        msg = Message("user", [Part(type="image", media=_chat_image(ctx)), Part.from_text("Make it blue.")])
        opts = SamplingOptions(max_new_tokens=max_new, seed=0, prefix="Here: <img>",
                               allowed_outputs=[Modality.IMAGE], max_media=1)
        session = pipe.session()
        ctx.sync()
        t0 = time.perf_counter()
        first = image_at = None
        n_images, tokens = 0, None
        for ev in session.stream(msg, opts):
            now = time.perf_counter()
            if isinstance(ev, TextDelta) and first is None:
                first = now - t0
            elif isinstance(ev, MediaDone):
                image_at = now - t0
                n_images += int(ev.media is not None)
            elif isinstance(ev, TurnDone):
                tokens = ev.new_tokens
        ctx.sync()
        total = time.perf_counter() - t0
        if n_images != 1:
            raise RuntimeError(f"the turn produced {n_images} images, wanted 1")
        res[label] = {"ttft_s": first, "time_to_image_s": image_at, "total_s": total, "images": n_images,
                      "tokens_fed": tokens, **ctx.memory()}
        ctx.flush(res)
    if ctx.cuda:
        res["fits_24_gib"] = max(res[k]["peak_reserved_gib"] for k in ("cold", "warm")) < 24.0


def sec_decoders(ctx: Ctx, res: dict) -> None:
    from codi2.decoders import build_decoder

    cfg = model_config(ctx)
    for m in ("image", "audio", "video"):
        r: dict[str, Any] = {}
        res[m] = r
        try:
            t0 = time.perf_counter()
            path = decoder_dir(ctx, m)
            r["make_dir_s"] = time.perf_counter() - t0
        except Exception as e:  # noqa: BLE001
            r["skipped"] = _err(e)
            ctx.flush(res)
            continue
        base = dataclasses.replace(cfg.modalities[m].decoder, path=str(path))
        if ctx.tiny and m == "audio":  # the tiny vocoder's hop is 4 samples: 0.5 s is 4,000 latent positions
            base = dataclasses.replace(base, audio_seconds=0.064)
        hw = f"{base.width}x{base.height}" if base.height and base.width else "default size"
        r.update(steps=base.steps, scheduler=base.scheduler, guidance=base.guidance, dtype=base.dtype,
                 size={"image": hw, "audio": f"{base.audio_seconds} s", "video": f"{hw}x{base.num_frames}"}[m])
        for offload in ("none", "model"):
            key = f"offload_{offload}"
            if offload != "none" and not ctx.cuda:
                r[key] = {"skipped": "accelerate CPU offload needs CUDA (codi2 ignores it on the CPU)"}
                continue
            try:
                dec = build_decoder(m, dataclasses.replace(base, offload=offload), device=ctx.device)
                ctx.reset_peak()
                t_load, _ = _timed(ctx, dec.load)
                cond = {k: torch.randn(1, *shape) for k, shape in dec.target_spec().items()}
                dec.decode(cond, steps=1, seed=0)  # warm-up (kernels, allocator)
                ctx.reset_peak()
                dt, media = _timed(ctx, lambda: dec.decode(cond, seed=0))
                if len(media) != 1:
                    raise RuntimeError(f"decoded {len(media)} outputs, wanted 1")
                r[key] = {"load_s": t_load, "seconds_per_output": dt, **ctx.memory()}
                dec.unload()
                del dec
            except Exception as e:  # noqa: BLE001
                r[key] = {"skipped": _err(e)}
            ctx.free()
            ctx.flush(res)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deepspeed(ctx: Ctx, res: dict, stage: int) -> None:
    from train.config import DataConfig, ModelSource, TrainConfig
    from train.tiny_data import write_tiny_manifest

    if not ctx.cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # noqa: F401  (after DS_ACCELERATOR)
    from train.loop import Trainer

    d = pipeline_dir(ctx)
    manifest = ctx.work / "ds_data" / "manifest.jsonl"
    if not manifest.is_file():
        write_tiny_manifest(ctx.work / "ds_data", per_phase=8, phases=("image",))
    if stage == 2:
        ds_path = REPO / "configs" / "deepspeed" / "zero2.json"
    else:
        ds = json.loads((REPO / "configs" / "deepspeed" / "zero3-offload.json").read_text())
        for k in ("offload_optimizer", "offload_param"):
            ds["zero_optimization"].pop(k, None)
        ds_path = ctx.work / "zero3.json"
        ds_path.write_text(json.dumps(ds, indent=1))
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    out = ctx.work / f"ds_zero{stage}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = TrainConfig(output_dir=str(out), model=ModelSource(pipeline=str(d)),
                      data=DataConfig(manifests=[str(manifest)], workers=0), batch_size=4, max_steps=2,
                      bf16=ctx.cuda, gradient_checkpointing=True, deepspeed=str(ds_path), resume="none",
                      log_every=1, save_every=0, export=False, tensorboard=False, device=str(ctx.device))
    res.update(config=str(ds_path.relative_to(REPO) if ds_path.is_relative_to(REPO) else ds_path.name),
               zero_stage=stage, bf16=cfg.bf16, world_size=1, micro_batch=cfg.batch_size)
    trainer = None
    try:
        ctx.reset_peak()
        trainer = Trainer(cfg, use_deepspeed=True)
        t_setup, _ = _timed(ctx, trainer.setup)
        res["setup_s"] = t_setup
        res["zero_stage_engine"] = trainer.engine.zero_stage
        steps = []
        for i in range(2):
            ctx.sync()
            t0 = time.perf_counter()
            slog = trainer.micro_batch()
            stepped = trainer.engine.step()
            ctx.sync()
            steps.append({"seconds": time.perf_counter() - t0, "tokens": slog.tokens, "stepped": bool(stepped),
                          "loss": slog.parts.get("total"), "skipped": slog.skipped})
            trainer.step += 1
        res["steps"] = steps
        res["step_s"] = steps[-1]["seconds"]
        res["tokens_per_s"] = steps[-1]["tokens"] / steps[-1]["seconds"]
        res["memory"] = ctx.memory()
    finally:
        if trainer is not None and getattr(trainer, "log_file", None) is not None:
            trainer.log_file.close()
        del trainer
        # the process group stays: DeepSpeed keeps its own references to it (a second section in this
        # process reuses it; on CUDA each section has its own process)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(out, ignore_errors=True)
        ctx.free()


def sec_deepspeed_zero2(ctx: Ctx, res: dict) -> None:
    _deepspeed(ctx, res, 2)


def sec_deepspeed_zero3(ctx: Ctx, res: dict) -> None:
    _deepspeed(ctx, res, 3)


SECTION_FNS: dict[str, Callable[[Ctx, dict], None]] = {
    "peaks": sec_peaks, "llm_decode": sec_llm_decode, "lora_train": sec_lora_train, "qlora_train": sec_qlora_train,
    "chat_turn": sec_chat_turn, "decoders": sec_decoders, "deepspeed_zero2": sec_deepspeed_zero2,
    "deepspeed_zero3": sec_deepspeed_zero3, "llm_decode_compile": sec_llm_decode_compile}


# ----------------------------------------------------------------------------- running sections
def run_in_process(ctx: Ctx, name: str) -> dict:
    res: dict[str, Any] = {}
    t0 = time.perf_counter()
    try:
        SECTION_FNS[name](ctx, res)
        res.setdefault("status", "skipped" if "skipped" in res else "ok")
    except Exception as e:  # noqa: BLE001 - recorded; the next section runs
        res["status"] = "failed"
        res["reason"] = _err(e)
        res["traceback_tail"] = traceback.format_exc().strip().splitlines()[-6:]
    res["wall_s"] = time.perf_counter() - t0
    ctx.free()
    return res


def run_isolated(ctx: Ctx, name: str, limit: float) -> dict:
    """The section in its own process (its own CUDA memory, its own time limit); partial results survive."""
    out = ctx.work / "sections" / f"{name}.json"
    log = ctx.work / "sections" / f"{name}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--section-out", str(out),
           "--work", str(ctx.work)] + (["--tiny"] if ctx.tiny else [])
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            rc = None
    res = json.loads(out.read_text()) if out.is_file() else {}
    if rc is None and res.get("finished"):
        res["note"] = f"finished, but its process was still exiting at the time limit of {limit:.0f} s"
    elif rc is None:
        res.update(status="timeout", reason=f"stopped after its time limit of {limit:.0f} s")
    elif rc != 0 and res.get("status") != "failed":
        res.update(status="failed", reason=f"exit code {rc}")
    if res.get("status") in ("failed", "timeout"):
        res["log_tail"] = log.read_text(errors="replace").strip().splitlines()[-8:]
    res["wall_s"] = time.perf_counter() - t0
    return res


def section_main(args) -> int:
    """``--section NAME``: one section in this process, results to ``--section-out``."""
    ctx = Ctx(tiny=args.tiny, device=_device(args.tiny), work=Path(args.work), out_file=Path(args.section_out))
    _threads(args.tiny)
    res = run_in_process(ctx, args.section)
    res["finished"] = True
    ctx.flush(res)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no interpreter teardown: library threads (profiler, NCCL, tokenizers) can hold it up


def _threads(tiny: bool) -> None:
    if tiny:  # tiny ops run fastest on one thread of a shared CPU
        torch.set_num_threads(1)


def _device(tiny: bool) -> torch.device:
    return torch.device("cpu") if tiny else torch.device("cuda", 0)


# ----------------------------------------------------------------------------- report
def _versions() -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    for pkg in ("transformers", "peft", "diffusers", "deepspeed", "bitsandbytes", "accelerate"):
        try:
            v[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            v[pkg] = None
    return v


def _git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def derive(sections: dict) -> dict:
    """Ratios against the limits measured in the same run (only from numbers that were measured)."""
    d: dict[str, Any] = {}
    peaks = sections.get("peaks", {})
    bw = peaks.get("copy", {}).get("bandwidth_gb_s")
    peak = peaks.get("matmul", {}).get("tflop_s")
    for sec in ("llm_decode", "llm_decode_compile"):
        s = sections.get(sec, {})
        wb = s.get("weight_bytes")
        if not (bw and wb):
            continue
        bound = bw * 1e9 / wb
        d["decode_hbm_bound_tokens_per_s"] = bound
        for k, v in s.items():
            if isinstance(v, dict) and "decode_tokens_per_s" in v:
                d[f"decode_{k}_fraction_of_hbm_bound"] = v["decode_tokens_per_s"] / bound
    for sec in ("lora_train", "qlora_train"):
        s = sections.get(sec, {})
        if peak and s.get("model_tflop_s"):
            d[f"{sec}_mfu"] = s["model_tflop_s"] / peak
    return d


def markdown(report: dict) -> str:
    m, s, d = report["meta"], report["sections"], report["derived"]
    dev = s.get("peaks", {}).get("name", m.get("device"))
    lines = [f"# gpu_check ({'tiny, CPU' if m['tiny'] else 'codi2-7b shapes'})", "",
             f"{dev}; torch {m['versions']['torch']}, CUDA {m['versions']['cuda']}; {m['started_utc']}; "
             f"{m['wall_s']:.0f} s", "", "| figure | value |", "|---|---|"]

    def row(name: str, value: Any) -> None:
        lines.append(f"| {name} | {value} |")

    def f(x: Any, unit: str = "", nd: int = 2) -> str:
        if not isinstance(x, (int, float)):
            return "—"
        return f"{x:.{nd}f}{unit}" if abs(x) >= 10 ** -nd or x == 0 else f"{x:.2g}{unit}"

    def why(sec: dict) -> str:
        return f"{sec.get('status')}: {sec.get('reason') or sec.get('skipped') or ''}".strip()

    p = s.get("peaks")
    if p is not None:
        row("copy bandwidth", f(p.get("copy", {}).get("bandwidth_gb_s"), " GB/s", 1) if p.get("copy") else why(p))
        row("matmul rate", f(p.get("matmul", {}).get("tflop_s"), " TFLOP/s", 1) if p.get("matmul") else why(p))
    for sec, label in (("llm_decode", ""), ("llm_decode_compile", "")):
        x = s.get(sec, {})
        variants = [k for k, v in x.items() if isinstance(v, dict) and "decode_tokens_per_s" in v]
        for k in variants:
            frac = d.get(f"decode_{k}_fraction_of_hbm_bound")
            row(f"decode {k}, batch 1, {x.get('context_tokens')} ctx",
                f"{f(x[k]['decode_tokens_per_s'], ' tok/s', 1)} ({f(frac and 100 * frac, ' % of HBM bound', 0)}), "
                f"TTFT {f(x[k]['ttft_s'], ' s', 3)}")
        for k, v in x.items():
            if isinstance(v, dict) and "skipped" in v:
                row(f"decode {k}", f"skipped: {v['skipped']}")
        if not variants and sec in s:
            row(sec, why(x))
    if "decode_hbm_bound_tokens_per_s" in d:
        row("decode HBM bound (weights / copy bandwidth)", f(d["decode_hbm_bound_tokens_per_s"], " tok/s", 1))
    for sec in ("lora_train", "qlora_train"):
        x = s.get(sec, {})
        if "tokens_per_s" in x:
            mem = x.get("memory", {})
            peak_mem = mem.get("peak_reserved_gib", mem.get("process_peak_rss_gib"))
            row(f"{sec} (micro-batch {x['micro_batch']} × {x['seq']})",
                f"{f(x['tokens_per_s'], ' tok/s', 0)}, MFU {f(d.get(sec + '_mfu') and 100 * d[sec + '_mfu'], ' %', 1)}"
                f", peak {f(peak_mem, ' GiB', 1)}")
        elif sec in s:
            row(sec, why(x))
    for sec, key, label in (("llm_decode", "profile_eager_16_tokens", "eager decode, 16 tokens"),
                            ("lora_train", "profile_one_step", "LoRA step"), ("qlora_train", "profile_one_step",
                                                                               "QLoRA step")):
        prof = s.get(sec, {}).get(key)
        if prof and "busy_s" in prof:
            tops = ", ".join(f"{o['name'][:40]} {f(o['share_of_busy'] and 100 * o['share_of_busy'], ' %', 0)}"
                             for o in prof["top_ops"][:3])
            busy = prof["busy_fraction_of_wall"]
            row(f"profile: {label}", f"{prof['clock']} busy {f(busy and 100 * busy, ' %', 0)} of "
                f"{f(prof['wall_s'], ' s', 3)}; top: {tops}")
    x = s.get("chat_turn", {})
    for k in ("cold", "warm"):
        if k in x:
            peak_mem = x[k].get("peak_reserved_gib", x[k].get("process_peak_rss_gib"))
            row(f"chat turn ({k}, LLM {x.get('llm_quantization')})",
                f"TTFT {f(x[k]['ttft_s'], ' s')}, image at {f(x[k]['time_to_image_s'], ' s')}, total "
                f"{f(x[k]['total_s'], ' s')}, peak {f(peak_mem, ' GiB', 1)}")
    if "chat_turn" in s and "cold" not in x:
        row("chat turn", why(x))
    x = s.get("decoders", {})
    for m in ("image", "audio", "video"):
        for k in ("offload_none", "offload_model"):
            v = x.get(m, {}).get(k)
            if v is None:
                continue
            if "seconds_per_output" in v:
                peak_mem = v.get("peak_reserved_gib", v.get("process_peak_rss_gib"))
                row(f"{m} decoder {x[m].get('size')}, {x[m].get('steps')} {x[m].get('scheduler')} steps, {k}",
                    f"{f(v['seconds_per_output'], ' s')}/output, peak {f(peak_mem, ' GiB', 1)}")
            else:
                row(f"{m} decoder, {k}", f"skipped: {v.get('skipped')}")
    if "decoders" in s and s["decoders"].get("status") not in ("ok", None):
        row("decoders", why(s["decoders"]))
    for sec in ("deepspeed_zero2", "deepspeed_zero3"):
        x = s.get(sec, {})
        if "step_s" in x:
            mem = x.get("memory", {})
            row(f"DeepSpeed ZeRO-{x['zero_stage']} step (bf16 {x['bf16']}, world size 1)",
                f"{f(x['step_s'], ' s')}, {f(x['tokens_per_s'], ' tok/s', 0)}, peak "
                f"{f(mem.get('peak_reserved_gib', mem.get('process_peak_rss_gib')), ' GiB', 1)}")
        elif sec in s:
            row(sec, why(x))
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (seconds): checks the code paths")
    p.add_argument("--out", default=None, help=f"the JSON (the Markdown table goes beside it, .md); default "
                   f"{DEFAULT_OUT.relative_to(REPO)}, with --tiny a file in the temporary folder")
    p.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole run (default 290 on CUDA)")
    p.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder, removed after)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="each section in its own process (default: on CUDA yes, with --tiny no)")
    p.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    p.add_argument("--section-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.section:
        return section_main(args)
    if not args.tiny and not torch.cuda.is_available():
        p.error("full scale needs a CUDA device (torch.cuda.is_available() is False); --tiny checks the code on CPU")
    import logging

    logging.basicConfig(level=logging.WARNING)
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    budget = args.budget if args.budget is not None else (290.0 if not args.tiny else 1e9)
    isolate = args.isolate if args.isolate is not None else not args.tiny
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(tiny=args.tiny, device=_device(args.tiny), work=work)
    _threads(args.tiny)
    out = Path(args.out) if args.out else (DEFAULT_OUT if not args.tiny
                                           else Path(tempfile.gettempdir()) / "gpu_check_tiny.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    sections: dict[str, dict] = {}

    def write(final: bool) -> dict:
        """The report so far (written after every section, so a run stopped from outside keeps what it did)."""
        report = {
            "meta": {"script": "benchmarks/gpu_check.py", "tiny": args.tiny, "config": ctx.config_name,
                     "device": sections.get("peaks", {}).get("name") or str(ctx.device),
                     "started_utc": started.isoformat(timespec="seconds"),
                     "finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                     if final else None, "complete": final,
                     "wall_s": time.monotonic() - t_start, "budget_s": budget, "isolated_sections": isolate,
                     "versions": _versions(), "git_commit": _git_commit(), "command": command},
            "sections": sections,
        }
        report["derived"] = derive(sections)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=1, default=_jsonable) + "\n")
        os.replace(tmp, out)
        out.with_suffix(".md").write_text(markdown(report))
        return report

    try:
        for name in args.only or SECTIONS:
            left = budget - (time.monotonic() - t_start)
            if left < MIN_START_S:
                sections[name] = {"status": "skipped", "wall_s": 0.0,
                                  "reason": f"time budget: {left:.0f} s of --budget {budget:.0f} s left (run it "
                                            f"with --only {name})"}
                continue
            print(f"[gpu_check] {name} …", flush=True)
            sections[name] = (run_isolated(ctx, name, min(SECTION_LIMIT_S[name], left)) if isolate
                              else run_in_process(ctx, name))
            print(f"[gpu_check] {name}: {sections[name].get('status')} in {sections[name]['wall_s']:.1f} s "
                  f"{sections[name].get('reason', '')}", flush=True)
            write(final=False)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    report = write(final=True)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
