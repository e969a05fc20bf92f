"""Terminal-SNR leak of a decoder's noise schedule: how much of a clean target its UNet reads from the noisy
input alone, side by side for several pipelines in one run (issue 5: the video decoder's miss).

A training step noises the target to ``x_t = sqrt(ab_t)·x_0 + sqrt(1 − ab_t)·ε``. Stable Diffusion's
``scaled_linear`` schedule stops at ``sqrt(ab_999) = 0.068``: per latent that is little, but summed over a clip's
8 × 16 × 16 latents it tells the UNet the object's colour and motion, so it learns to read them from
``x_t`` instead of from the text, and sampling, which starts from pure noise, then has nothing to read. Here each
UNet gets held-out clips noised to t ∈ {999, 900, 700} with the *unconditional* (empty-prompt) conditioning, its
one-step estimate of ``x_0`` is decoded, and the world judges score it. Accuracy above chance at t = 999 is the
leak; a zero-terminal-SNR schedule (``DecoderArch.zero_snr``) has none by construction (``ab_999 = 0``).

``--conditioning caption`` conditions on each clip's own caption instead: on a zero-SNR schedule the estimate
at t = 999 then shows what the UNet has learnt from the text alone, which is all the first sampling step has
(the mean clip of that caption; its direction is what sampling starts from).

    python benchmarks/terminal_leak.py --decoders OLD_VIDEO_DIR NEW_VIDEO_DIR --n 24 --conditioning empty caption \
        --out benchmarks/results/terminal_leak.json

Ratio reported: each pipeline's accuracy at every t relative to chance (1 / number of classes).
"""
from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Optional, Sequence

import torch


CONDITIONING = ("empty", "caption")


def x0_estimate(pred: torch.Tensor, x_t: torch.Tensor, ab: torch.Tensor, kind: str) -> torch.Tensor:
    """The clean latents implied by one UNet output (``epsilon`` or ``v_prediction``) at ``alpha_bar = ab``."""
    if kind == "epsilon":
        return (x_t - (1 - ab).sqrt() * pred) / ab.sqrt().clamp_min(1e-4)
    if kind == "v_prediction":
        return ab.sqrt() * x_t - (1 - ab).sqrt() * pred
    raise ValueError(f"prediction_type {kind!r}; allowed: epsilon, v_prediction")


@torch.no_grad()
def probe(decoder_dir: str, judges, n: int, timesteps: Sequence[int], seed: int = 0,
          conditioning: str = "empty") -> dict:
    """Judge accuracy of the one-step x0 estimates of ``n`` held-out clips noised to each of ``timesteps``,
    conditioned on the empty prompt (``conditioning="empty"``) or on each clip's caption (``"caption"``)."""
    from diffusers import DDPMScheduler

    from codi2.config import load_model_config
    from codi2.decoders import build_decoder
    from codi2.media import Video
    from train.mini.common import world_batch
    from train.mini.decoder_train import attribute_accuracy, decoder_config

    if conditioning not in CONDITIONING:
        raise ValueError(f"conditioning {conditioning!r}; allowed: {', '.join(CONDITIONING)}")
    mcfg = load_model_config("mini")
    dec = build_decoder("video", decoder_config(mcfg, "video", Path(decoder_dir)), device="cpu").load()
    held = world_batch("video", 0, n, seed, "test", canonical=True)
    g = torch.Generator().manual_seed(seed)
    latents = dec.encode_target([s.media for s in held], generator=g)
    sched = DDPMScheduler.from_config(dec.pipe.scheduler.config)
    kind = sched.config.prediction_type
    if conditioning == "caption":
        cond = dec.targets([s.caption for s in held])["prompt_embeds"]
    else:
        cond = dec.null_conditioning["prompt_embeds"].expand(n, -1, -1)
    rows = []
    for t in timesteps:
        tt = torch.full((n,), int(t))
        x_t = sched.add_noise(latents, torch.randn(latents.shape, generator=g), tt)
        pred = dec.pipe.unet(x_t, tt, encoder_hidden_states=cond).sample
        x0 = x0_estimate(pred, x_t, sched.alphas_cumprod[int(t)], kind)
        frames = dec.pipe.decode_latents(x0)  # (B, 3, F, H, W) in [-1, 1]
        frames = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).numpy()
        scores = [judges.score_video(Video(frames=f, fps=float(dec.cfg.fps))) for f in frames]
        acc = attribute_accuracy(scores, [s.attrs for s in held])
        rows.append({"conditioning": conditioning, "t": int(t),
                     "sqrt_alpha_bar": round(float(sched.alphas_cumprod[int(t)].sqrt()), 4),
                     **{k: round(v, 3) for k, v in acc.items()}})
        print(f"{decoder_dir}: {conditioning} t={t} " + " ".join(f"{k} {v:.2f}" for k, v in acc.items()), flush=True)
    dec.unload()
    return {"decoder": decoder_dir, "conditioning": conditioning, "prediction_type": kind,
            "rescale_betas_zero_snr": bool(sched.config.get("rescale_betas_zero_snr", False)), "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from data_builders.world import world
    from data_builders.world.judges import Judges

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoders", nargs="+", required=True, help="video pipeline directories to compare")
    p.add_argument("--judges", default="checkpoints/codi2-mini/judges")
    p.add_argument("--n", type=int, default=24, help="held-out clips")
    p.add_argument("--timesteps", type=int, nargs="+", default=[999, 900, 700])
    p.add_argument("--conditioning", nargs="+", choices=CONDITIONING, default=["empty"],
                   help="empty prompt (the leak) and/or each clip's caption (what the text alone gives)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="terminal_leak.json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    judges = Judges.load(a.judges)
    chance = {"shape": 1 / len(world.SHAPES), "colour": 1 / len(world.COLOURS), "size": 1 / len(world.SIZES),
              "direction": 1 / len(world.DIRECTIONS)}
    results = [probe(d, judges, a.n, a.timesteps, a.seed, c) for d in a.decoders for c in a.conditioning]
    for r in results:
        for row in r["rows"]:
            row["vs_chance"] = {k: round(row[k] / c, 2) for k, c in chance.items()}
    out = {"benchmark": "terminal_leak", "n": a.n, "conditioning": a.conditioning,
           "chance": {k: round(v, 3) for k, v in chance.items()}, "torch_threads": torch.get_num_threads(),
           "machine": platform.platform(), "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
