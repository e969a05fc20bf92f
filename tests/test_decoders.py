"""codi2.decoders on tiny diffusers pipelines saved to disk and loaded exactly as real weights load."""
from __future__ import annotations

import logging
import os

import numpy as np
import PIL.Image
import pytest
import torch

from codi2.config import DecoderConfig
from codi2.decoders import Cancelled, build_decoder
from codi2.decoders.base import Absent
from codi2.decoders.tiny import save_tiny_audioldm2, save_tiny_text_to_video, save_tiny_unclip
from codi2.media import Audio, Video
from codi2.modality import Modality

# modality -> (builder, builder kwargs, DecoderConfig extras, expected target_spec)
CASES = {
    "image": (save_tiny_unclip, {"image_embed_dim": 24, "text_dim": 32}, {},
              {"image_embeds": (24,)}),
    "audio": (save_tiny_audioldm2, {"gen_dim": 16, "gen_len": 6, "t5_dim": 32},
              {"audio_seconds": 0.016, "prompt_len": 12},
              {"generated_prompt_embeds": (6, 16), "prompt_embeds": (12, 32)}),
    "video": (save_tiny_text_to_video, {"text_dim": 16, "text_len": 20}, {"num_frames": 2, "fps": 4.0},
              {"prompt_embeds": (20, 16)}),
}
MODALITIES = list(CASES)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_decoders")
    return {m: builder(root / m, seed=0, **kw) for m, (builder, kw, _, _) in CASES.items()}


@pytest.fixture(scope="module")
def decoders(pipeline_dirs):
    out = {}
    for m in MODALITIES:
        cfg = DecoderConfig(path=str(pipeline_dirs[m]), steps=2, guidance=3.0, **CASES[m][2])
        out[m] = build_decoder(Modality(m), cfg, device="cpu")
    return out


def _cond(dec, batch: int = 1, seed: int = 0, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(batch, *s, generator=g).requires_grad_(requires_grad) for k, s in dec.target_spec().items()}


def _as_array(media) -> np.ndarray:
    if isinstance(media, PIL.Image.Image):
        return np.asarray(media)
    if isinstance(media, Audio):
        return media.samples
    return media.frames


@pytest.mark.parametrize("m", MODALITIES)
def test_lazy_load_spec_and_absent_encoders(decoders, m):
    dec = decoders[m]
    assert dec.target_spec() == CASES[m][3]  # read from the component configs before any weights load
    dec.load()
    pipe = dec.pipe
    for name in dec.text_components + dec.unused_components:
        value = getattr(pipe, name)
        assert value is None or isinstance(value, Absent), f"{name} should not be loaded, got {type(value)}"
    assert all(not p.requires_grad for p in pipe.unet.parameters())
    assert all(v.shape[0] == 1 for v in dec._null.values())


@pytest.mark.parametrize("m", MODALITIES)
def test_decode_types_shapes_and_seeds(decoders, m):
    dec = decoders[m]
    cond = _cond(dec, batch=2)
    out = dec.decode(cond, seed=1)
    assert len(out) == 2
    if m == "image":
        assert all(isinstance(x, PIL.Image.Image) and x.size == (16, 16) and x.mode == "RGB" for x in out)
    elif m == "audio":
        assert all(isinstance(x, Audio) and x.sample_rate == 16000 and x.samples.shape == (1, 256) for x in out)
        assert out[0].samples.dtype == np.float32
    else:
        assert all(isinstance(x, Video) and x.frames.shape == (2, 16, 16, 3) for x in out)
        assert out[0].frames.dtype == np.uint8
        assert out[0].fps == 4.0
    again = dec.decode(cond, seed=1)
    other = dec.decode(cond, seed=2)
    for a, b, c in zip(out, again, other):
        assert np.array_equal(_as_array(a), _as_array(b)), "same seed must give identical output"
        assert not np.array_equal(_as_array(a), _as_array(c)), "different seeds must give different output"


@pytest.mark.parametrize("m", MODALITIES)
@pytest.mark.parametrize("scheduler", ["ddim", "dpm++"])
def test_schedulers_and_progress(decoders, m, scheduler):
    dec = decoders[m]
    calls = []
    out = dec.decode(_cond(dec), steps=3, scheduler=scheduler, guidance=1.0 if scheduler == "dpm++" else None,
                     seed=0, progress=lambda i, n: calls.append((i, n)))
    assert len(out) == 1
    assert calls == [(1, 3), (2, 3), (3, 3)]
    name = type(dec.pipe.scheduler).__name__
    assert name == ("DDIMScheduler" if scheduler == "ddim" else "DPMSolverMultistepScheduler")
    if scheduler == "dpm++":
        assert dec.pipe.scheduler.config.algorithm_type == "dpmsolver++"
    assert dec.pipe.scheduler.config.prediction_type == dec._scheduler_config.prediction_type


@pytest.mark.parametrize("m", MODALITIES)
def test_should_stop_cancels(decoders, m):
    dec = decoders[m]
    seen = []
    with pytest.raises(Cancelled, match="after step 1/4"):
        dec.decode(_cond(dec), steps=4, seed=0, progress=lambda i, n: seen.append(i),
                   should_stop=lambda: len(seen) >= 1)
    assert seen == [1]
    with pytest.raises(Cancelled, match="before the first step"):
        dec.decode(_cond(dec), steps=2, should_stop=lambda: True)


@pytest.mark.parametrize("m", MODALITIES)
def test_diffusion_loss_gradients(decoders, m):
    dec = decoders[m]
    cond = _cond(dec, batch=2, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    if m == "image":
        target = torch.rand(2, 3, 20, 20, generator=g)  # resized to 16×16 by the pipeline's image processor
    elif m == "audio":
        rng = np.random.default_rng(0)  # stereo at 8 kHz (mixed + resampled) and a short mono clip (padded)
        target = [Audio(samples=rng.uniform(-1, 1, (2, 200)).astype(np.float32), sample_rate=8000),
                  Audio(samples=rng.uniform(-1, 1, (1, 300)).astype(np.float32), sample_rate=16000)]
    else:
        target = [Video(frames=np.random.default_rng(i).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8), fps=4.0)
                  for i in range(2)]
    latents = dec.encode_target(target)
    assert latents.shape[0] == 2 and not latents.requires_grad
    loss = dec.diffusion_loss(cond, target, seed=0)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for k, v in cond.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, f"no gradient reached cond[{k!r}]"
    assert all(p.grad is None for p in dec.pipe.unet.parameters())
    assert all(p.grad is None for p in dec.pipe.vae.parameters())
    # same seed -> same loss (timesteps, noise and the VAE posterior sample are seeded)
    detached = {k: v.detach() for k, v in cond.items()}
    assert torch.equal(dec.diffusion_loss(detached, target, seed=0), loss.detach())
    from_latents = dec.diffusion_loss(detached, latents, target_is_latents=True, seed=0)
    assert torch.equal(from_latents, dec.diffusion_loss(detached, latents, target_is_latents=True, seed=0))
    # chosen timesteps: the loss depends on them, and out-of-range ones are refused with the allowed range
    early, late = (dec.diffusion_loss(detached, latents, target_is_latents=True, seed=0, timesteps=torch.tensor([t, t]))
                   for t in (0, 999))
    assert torch.isfinite(early) and torch.isfinite(late) and not torch.equal(early, late)
    with pytest.raises(ValueError, match=r"timesteps must be 2 integers in \[0, 1000\)"):
        dec.diffusion_loss(detached, latents, target_is_latents=True, timesteps=torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="got shape"):
        dec.diffusion_loss(detached, latents, target_is_latents=True, timesteps=torch.tensor([5]))


@pytest.mark.parametrize("m", ["audio", "video"])
def test_targets_match_spec(decoders, m):
    dec = decoders[m]
    tg = dec.targets(["a red circle moving left", "blue"])
    assert {k: tuple(v.shape[1:]) for k, v in tg.items()} == dec.target_spec()
    assert all(v.shape[0] == 2 and v.dtype == torch.float32 and v.device.type == "cpu" for v in tg.values())
    assert not torch.allclose(tg["prompt_embeds"][0], tg["prompt_embeds"][1])
    out = dec.decode(tg, steps=1, seed=0)  # targets are valid conditioning
    assert len(out) == 2
    dec.free_text_encoders()
    assert dec.pipe.tokenizer is None


def test_audio_targets_zero_padding_and_mask(decoders):
    dec = decoders["audio"]
    tg = dec.targets(["blue", "a red circle"], with_mask=True)
    mask = tg["attention_mask"]
    assert mask.shape == (2, 12) and mask.dtype == torch.long
    short = int(mask[0].sum())
    assert 0 < short < 12 and torch.all(tg["prompt_embeds"][0, short:] == 0)
    assert len(dec.decode(tg, steps=1, seed=0)) == 2  # the optional attention_mask is accepted


def test_image_targets_explains(decoders):
    with pytest.raises(NotImplementedError, match="ImageBind vision embedding"):
        decoders["image"].targets(["a red circle"])


@pytest.mark.parametrize("m", MODALITIES)
def test_wrong_cond_shape_and_keys(decoders, m):
    dec = decoders[m]
    name, shape = next(iter(dec.target_spec().items()))
    bad = _cond(dec)
    bad[name] = torch.randn(1, *[s + 1 for s in shape])
    expected = f"(B, {', '.join(map(str, shape))})"
    with pytest.raises(ValueError, match=name) as e:
        dec.decode(bad, steps=1)
    assert expected in str(e.value)
    with pytest.raises(ValueError, match="expected"):
        dec.decode({"nope": torch.zeros(1, 3)}, steps=1)


def test_missing_path_names_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"modalities\.audio\.decoder\.path"):
        build_decoder(Modality.AUDIO, DecoderConfig(path=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match=r"modalities\.image\.decoder\.path"):
        build_decoder(Modality.IMAGE, DecoderConfig(path=None))
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        build_decoder(Modality.VIDEO, DecoderConfig(path=str(tmp_path)))


def test_wrong_pipeline_and_bad_options(pipeline_dirs):
    with pytest.raises(ValueError, match="AudioLDM2Pipeline"):
        build_decoder("video", DecoderConfig(path=str(pipeline_dirs["audio"])))
    with pytest.raises(ValueError, match="scheduler = 'euler'"):
        build_decoder("image", DecoderConfig(path=str(pipeline_dirs["image"]), scheduler="euler"))
    with pytest.raises(ValueError, match="offload"):
        build_decoder("image", DecoderConfig(path=str(pipeline_dirs["image"]), offload="disk"))


def test_offload_without_cuda_logs(pipeline_dirs, caplog):
    if torch.cuda.is_available():
        pytest.skip("checks the CPU fallback")
    dec = build_decoder("video", DecoderConfig(path=str(pipeline_dirs["video"]), offload="model", num_frames=1,
                                               steps=1), device="cpu")
    with caplog.at_level(logging.INFO, logger="codi2.decoders.base"):
        dec.load()
    assert any("offload=model ignored" in r.getMessage() for r in caplog.records)
    assert len(dec.decode(_cond(dec), seed=0)) == 1
    dec.unload()
    assert not dec.loaded


# ----------------------------------------------------------------------------- real weights
REAL = {"image": ("CODI2_UNCLIP", {"image_embeds": (1024,)}),
        "audio": ("CODI2_AUDIOLDM2", {"generated_prompt_embeds": (8, 768), "prompt_embeds": (32, 1024)}),
        "video": ("CODI2_ZEROSCOPE", {"prompt_embeds": (77, 1024)})}


@pytest.mark.real_weights
@pytest.mark.parametrize("m", MODALITIES)
def test_real_pipeline(m):
    var, spec = REAL[m]
    if not os.environ.get(var):
        pytest.skip(f"set {var} to a local {m} decoder directory")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "float16" if device == "cuda" else "float32"
    cfg = DecoderConfig(path=os.environ[var], steps=2, dtype=dtype, num_frames=2, audio_seconds=1.0, height=256,
                        width=256, prompt_len=32)
    dec = build_decoder(m, cfg, device=device)
    assert dec.target_spec() == spec
    if m == "image":
        cond = {"image_embeds": torch.randn(1, 1024)}
    else:
        cond = dec.targets(["a dog barking in the rain"])
        assert {k: tuple(v.shape[1:]) for k, v in cond.items()} == spec
        dec.free_text_encoders()
    out = dec.decode(cond, seed=0)
    assert len(out) == 1
    cond = {k: v.clone().requires_grad_(True) for k, v in cond.items()}
    target = {"image": lambda: torch.rand(1, 3, 256, 256), "audio": lambda: torch.randn(1, 16000),
              "video": lambda: torch.rand(1, 2, 3, 256, 256)}[m]()
    loss = dec.diffusion_loss(cond, target, seed=0)
    loss.backward()
    assert torch.isfinite(loss) and all(v.grad.abs().sum() > 0 for v in cond.values())
