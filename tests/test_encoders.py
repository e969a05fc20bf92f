"""codi2.encoders on the tiny config: shapes, strict weight loading, dtypes and preprocessing."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codi2.encoders import (
    EncoderOutput,
    ImageBindEncoder,
    ImageBindModel,
    ImageBindPreprocessor,
    load_imagebind_weights,
    tiny_imagebind_config,
)
from codi2.encoders.preprocess import clip_timepoints, kaldi_fbank, kaldi_mel_banks, resample
from codi2.encoders.tokenizer import EOT_TOKEN, SOT_TOKEN, BPETokenizer
from codi2.media import Audio, Video

CFG = tiny_imagebind_config()


@pytest.fixture(scope="module")
def encoder() -> ImageBindEncoder:
    torch.manual_seed(0)
    return ImageBindEncoder(CFG)


# ----------------------------------------------------------------------------- model / encoder
def test_encoder_shapes(encoder):
    s, out = CFG.image_size, CFG.out_embed_dim
    assert encoder.num_image_tokens == 1 + (s // 8) ** 2 and encoder.out_dim == out
    img = encoder.encode_image(torch.randn(2, 3, s, s))
    assert isinstance(img, EncoderOutput)
    assert img.tokens.shape == (2, encoder.num_image_tokens, out) and img.embed.shape == (2, out)
    torch.testing.assert_close(img.embed, img.tokens[:, 0])
    vid = encoder.encode_video(torch.randn(2, 4, 3, CFG.video_frames, s, s))
    assert vid.tokens.shape == (2, 4, encoder.num_image_tokens, out) and vid.embed.shape == (2, out)
    aud = encoder.encode_audio(torch.randn(2, 3, 1, CFG.audio_num_mel_bins, CFG.audio_target_len))
    assert aud.tokens.shape == (2, 3, out)
    torch.testing.assert_close(aud.embed, aud.tokens.mean(1))
    txt = encoder.encode_text(BPETokenizer()(["a cat", "a dog"]))
    assert txt.tokens.shape == txt.embed.shape == (2, out)


def test_video_clip_equals_image_of_repeated_frame(encoder):
    """A 2-frame clip of one frame repeated is what the stem makes of an image."""
    s = CFG.image_size
    img = torch.randn(1, 3, s, s)
    clip = img[:, None, :, None].expand(1, 1, 3, 2, s, s)
    torch.testing.assert_close(encoder.encode_video(clip).tokens[:, 0], encoder.encode_image(img).tokens,
                               atol=1e-5, rtol=1e-5)


def test_encoder_is_frozen_and_stays_in_eval(encoder):
    assert not any(p.requires_grad for p in encoder.parameters())
    encoder.train()
    assert not encoder.training and not encoder.model.training


def test_encoder_rejects_bad_inputs(encoder):
    with pytest.raises(ValueError, match="image_size"):
        encoder.encode_image(torch.randn(1, 3, 31, 31))
    with pytest.raises(ValueError, match=r"\(B, 3, S, S\)"):
        encoder.encode_image(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="audio_num_mel_bins"):
        encoder.encode_audio(torch.randn(1, 3, 1, 8, CFG.audio_target_len))
    with pytest.raises(ValueError, match="integer tensor"):
        encoder.encode_text(torch.randn(1, 77))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_close_to_float32(encoder, dtype):
    half = ImageBindEncoder(replace(CFG, dtype=dtype))
    half.model.load_state_dict(encoder.model.state_dict())
    x = torch.randn(2, 3, CFG.image_size, CFG.image_size)
    got = half.encode_image(x).embed
    assert got.dtype == getattr(torch, dtype)
    assert F.cosine_similarity(got.float(), encoder.encode_image(x).embed, dim=-1).min() > 0.99


def test_forward_postprocesses_like_reference(encoder):
    m = encoder.model
    x = torch.randn(2, 3, CFG.image_size, CFG.image_size)
    t = BPETokenizer()(["one", "two"])
    with torch.no_grad():
        out = m({"vision": x, "text": t})
        torch.testing.assert_close(out["vision"], F.normalize(m.embed("vision", x), dim=-1))
        scale = m.modality_postprocessors["text"][1].log_logit_scale.exp().clamp(max=100)
        torch.testing.assert_close(out["text"], scale * F.normalize(m.embed("text", t), dim=-1))


# ----------------------------------------------------------------------------- strict loading
def test_loader_roundtrip_via_file(tmp_path, encoder):
    path = tmp_path / "w.pth"
    sd = dict(encoder.model.state_dict())
    sd["modality_trunks.depth.blocks.0.attn.in_proj_weight"] = torch.zeros(3, 3)
    sd["modality_heads.imu.3.weight"] = torch.zeros(2, 2)
    sd["modality_postprocessors.thermal.1.log_logit_scale"] = torch.zeros(())
    torch.save(sd, path)
    fresh = ImageBindModel(CFG)
    skipped = load_imagebind_weights(fresh, path)
    assert sorted(skipped) == sorted(k for k in sd if ".depth." in k or ".imu." in k or ".thermal." in k)
    for k, v in encoder.model.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)
    # through the config, as the rest of codi2 builds it
    enc = ImageBindEncoder(replace(CFG, weights=str(path)))
    x = torch.randn(1, 3, CFG.image_size, CFG.image_size)
    torch.testing.assert_close(enc.encode_image(x).tokens, encoder.encode_image(x).tokens)


def test_loader_missing_unexpected_and_mismatched_keys(encoder):
    good = encoder.model.state_dict()
    model = ImageBindModel(CFG)
    missing = dict(good)
    del missing["modality_trunks.vision.blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"missing keys: modality_trunks\.vision\.blocks\.1\.mlp\.fc2\.bias"):
        load_imagebind_weights(model, missing)
    extra = dict(good, **{"modality_trunks.vision.blocks.9.attn.in_proj_weight": torch.zeros(1),
                          "logit_scale": torch.zeros(())})
    with pytest.raises(ValueError, match=r"unexpected keys.*modality_trunks\.vision\.blocks\.9\.attn\.in_proj_weight"):
        load_imagebind_weights(model, extra)
    with pytest.raises(ValueError, match="logit_scale"):
        load_imagebind_weights(model, extra)
    bad = dict(good, **{"modality_heads.vision.2.weight": torch.zeros(5, 7)})
    with pytest.raises(ValueError, match=r"modality_heads\.vision\.2\.weight: file \(5, 7\) vs model \(16, 32\)"):
        load_imagebind_weights(model, bad)


def test_missing_weights_path_names_the_field():
    with pytest.raises(FileNotFoundError, match="encoder.weights"):
        ImageBindEncoder(replace(CFG, weights="/nonexistent/imagebind_huge.pth"))


# ----------------------------------------------------------------------------- tokenizer
def test_tokenizer_layout_and_truncation():
    tok = BPETokenizer(context_length=77)
    ids = tok(["Hello, World!", "word " * 200])
    assert ids.shape == (2, 77) and ids.dtype == torch.long
    row = ids[0].tolist()
    n = row.index(EOT_TOKEN)
    assert row[0] == SOT_TOKEN and all(v == 0 for v in row[n + 1:])
    assert tok.decode(row[1:n]) == "hello , world ! "
    assert ids[1, 0] == SOT_TOKEN and ids[1, -1] == EOT_TOKEN and (ids[1] == EOT_TOKEN).sum() == 1
    assert ids.argmax(-1).tolist() == [n, 76]  # the text head reads the EOS position


# ----------------------------------------------------------------------------- audio
def test_clip_timepoints_match_constant_clips_sampler():
    assert clip_timepoints(10.0, 2.0, 3) == [(0, 2), (4, 6), (8, 10)]
    assert clip_timepoints(1.0, 2.0, 3) == [(0, 2), (0, 2), (0, 2)]  # shorter than a clip: all at 0
    assert [float(a) for a, _ in clip_timepoints(6.0, 2.0, 5)] == [0, 1, 2, 3, 4]


def test_fbank_matches_kaldi_native_fbank():
    import kaldi_native_fbank as knf  # pinned in requirements.txt (C++ port of Kaldi's fbank)

    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 0.1 + np.sin(np.arange(16000) * 0.05) * 0.3).astype(np.float32)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = "hanning"
    opts.mel_opts.num_bins = 128
    ref = knf.OnlineFbank(opts)
    ref.accept_waveform(16000, x.tolist())
    ref.input_finished()
    want = np.stack([ref.get_frame(i) for i in range(ref.num_frames_ready)])
    got = kaldi_fbank(torch.from_numpy(x), 16000, 128).numpy()
    assert got.shape == want.shape == (98, 128)
    np.testing.assert_allclose(got, want, atol=2e-3)


def test_fbank_pure_tone_peaks_in_its_mel_bin():
    sr, f0 = 16000, 1000.0
    wave = torch.sin(2 * math.pi * f0 * torch.arange(sr) / sr)
    fb = kaldi_fbank(wave, sr, 128)
    assert fb.shape == (1 + (sr - 400) // 160, 128)
    mel = lambda f: 1127.0 * math.log(1 + f / 700.0)  # noqa: E731
    lo, hi = mel(20.0), mel(8000.0)
    centres = [lo + (i + 1) * (hi - lo) / 129 for i in range(128)]
    expected = min(range(128), key=lambda i: abs(centres[i] - mel(f0)))
    assert abs(int(fb.mean(0).argmax()) - expected) <= 1
    assert torch.equal(fb, kaldi_fbank(wave.clone(), sr, 128))  # deterministic
    banks = kaldi_mel_banks(128, 512, sr)
    assert banks.shape == (128, 256) and (banks >= 0).all() and banks.max() <= 1


def test_resample_sine():
    t44 = torch.arange(44100) / 44100
    out = resample(torch.sin(2 * math.pi * 440 * t44)[None], 44100, 16000)
    assert out.shape == (1, 16000)
    want = torch.sin(2 * math.pi * 440 * torch.arange(16000) / 16000)
    assert (out[0, 200:-200] - want[200:-200]).abs().max() < 2e-3


def test_audio_preprocessing_shapes_and_determinism():
    pre = ImageBindPreprocessor(CFG)
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal((2, 22050 * 3)) * 0.1).astype(np.float32)
    audio = Audio(samples=samples.copy(), sample_rate=22050)
    x = pre.audio(audio)
    assert x.shape == (CFG.audio_clips_per_sample, 1, CFG.audio_num_mel_bins, CFG.audio_target_len)
    assert torch.equal(x, pre.audio(audio)) and np.array_equal(audio.samples, samples)
    short = pre.audio(Audio(samples=samples[:1, :4410], sample_rate=22050))  # 0.2 s < clip: zero-padded frames
    assert short.shape == x.shape
    torch.testing.assert_close(short[..., -5:], torch.full_like(short[..., -5:], 4.268 / 9.138))
    with pytest.raises(ValueError, match="shorter than one"):
        pre.audio(Audio(samples=samples[:, :100], sample_rate=22050))


# ----------------------------------------------------------------------------- images / video / text
def test_image_preprocessing():
    from PIL import Image

    pre = ImageBindPreprocessor(CFG)
    arr = np.zeros((40, 80, 3), dtype=np.uint8)
    arr[:, 40:] = 255  # right half white
    x = pre.image(Image.fromarray(arr))
    assert x.shape == (3, 32, 32)
    torch.testing.assert_close(x, pre.image(arr))
    assert x[:, :, 0].mean() < 0 < x[:, :, -1].mean()
    assert pre.images([arr, arr]).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8"):
        pre.image(arr.astype(np.float32))


def test_video_preprocessing_clip_and_frame_sampling():
    cfg = replace(CFG, video_spatial_crops=3)
    pre = ImageBindPreprocessor(cfg)
    fps, seconds = 10, 6
    frames = np.zeros((fps * seconds, 20, 40, 3), dtype=np.uint8)
    for i in range(len(frames)):
        frames[i] = 4 * i  # frame index encoded in the pixel value
    x = pre.video(Video(frames=frames, fps=fps))
    assert x.shape == (5 * 3, 3, 2, 32, 32)
    mean, std = 0.48145466, 0.26862954
    value = (x[:, 0].mean(dim=(-1, -2)) * std + mean) * 255 / 4  # (clips, frames) frame indices
    picked = value.round().long()[::3]  # one spatial crop per temporal clip
    # clips start at 0, 1, 2, 3, 4 s; frames ceil(10 s) .. ceil(10 (s + 2)) - 1, first and last kept
    assert picked.tolist() == [[10 * k, 10 * k + 19] for k in range(5)]
    assert ImageBindPreprocessor(replace(cfg, video_spatial_crops=1)).video(Video(frames=frames, fps=fps)).shape[0] == 5


def test_text_preprocessing():
    ids = ImageBindPreprocessor(CFG).text(["a dog", "a cat"])
    assert ids.shape == (2, CFG.text_context_length) and ids.dtype == torch.long


def test_towers_subset_skips_their_keys_and_refuses_their_input():
    full_cfg = tiny_imagebind_config()
    full = ImageBindModel(full_cfg)
    no_text = ImageBindModel(replace(full_cfg, towers=["vision", "audio"]))
    assert no_text.towers == ("vision", "audio") and "text" not in no_text.modality_trunks
    skipped = load_imagebind_weights(no_text, full.state_dict())  # the full checkpoint loads; text keys skipped
    assert skipped and all(".text." in k for k in skipped)
    with pytest.raises(ValueError, match="missing keys"):  # but a text-less checkpoint cannot fill a full model
        load_imagebind_weights(ImageBindModel(full_cfg), no_text.state_dict())
    with pytest.raises(ValueError, match="no text tower"):
        no_text.embed("text", torch.zeros(1, full_cfg.text_context_length, dtype=torch.long))
    with pytest.raises(ValueError, match="encoder.towers"):
        ImageBindModel(replace(full_cfg, towers=["vision", "depth"]))
    x = torch.rand(2, 3, full_cfg.image_size, full_cfg.image_size)
    assert torch.equal(no_text.embed("vision", x), full.embed("vision", x))
    assert isinstance(ImageBindEncoder(replace(full_cfg, towers=["vision"])), ImageBindEncoder)
