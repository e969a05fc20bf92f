"""Parity of codi2's ImageBind with the reference model modules (``imagebind-unofficial==0.1.1``).

Only the reference's model modules are imported (its package ``__init__`` and data.py need
torchvision/torchaudio/pytorchvideo): bare package modules for ``imagebind`` and
``imagebind.models`` point at the installed folder, and a minimal ``timm.layers`` shim
(DropPath, trunc_normal_) lives in ``sys.modules`` only while the reference is imported.
If the reference is not installed these tests fail (scripts/setup.sh installs it).
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import pytest
import torch
import torch.nn as nn

from codi2.encoders import (
    UNUSED_MODALITIES,
    ImageBindEncoder,
    ImageBindModel,
    ImageBindPreprocessor,
    imagebind_huge_config,
    load_imagebind_weights,
)
from codi2.config import ImageBindConfig
from codi2.encoders.tokenizer import BPETokenizer

HUGE_PARAMS_ALL_MODALITIES = 1_200_781_057  # imagebind_huge, docs/design.md#encoder


class _DropPath(nn.Module):
    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x):
        assert not self.training or self.p == 0.0, "the shim supports eval only"
        return x


def _import_reference():
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the reference `imagebind-unofficial==0.1.1` is not installed; run scripts/setup.sh "
                    "(pip install --no-deps imagebind-unofficial==0.1.1)")
    root = list(spec.submodule_search_locations)[0]
    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.DropPath = _DropPath
    layers.trunc_normal_ = nn.init.trunc_normal_
    timm.layers = layers
    pkg = types.ModuleType("imagebind")
    pkg.__path__ = [root]
    models = types.ModuleType("imagebind.models")
    models.__path__ = [f"{root}/models"]
    with pytest.MonkeyPatch.context() as mp:
        for name, mod in {"timm": timm, "timm.layers": layers, "imagebind": pkg, "imagebind.models": models}.items():
            mp.setitem(sys.modules, name, mod)
        ib = importlib.import_module("imagebind.models.imagebind_model")
        mmp = importlib.import_module("imagebind.models.multimodal_preprocessors")
    # leave no trace: a fake `timm` in sys.modules would fool other libraries' availability checks
    for name in [n for n in sys.modules if n == "imagebind" or n.startswith("imagebind.")]:
        del sys.modules[name]
    return ib, mmp


@pytest.fixture(scope="module")
def ref():
    return _import_reference()


def _small_cfg() -> ImageBindConfig:
    # the reference hard-codes 224 px images, a 77-token context and the 49408-token vocabulary
    return ImageBindConfig(
        video_frames=2, kernel_size=[2, 56, 56], out_embed_dim=16,
        vision_embed_dim=16, vision_num_blocks=2, vision_num_heads=2,
        text_embed_dim=16, text_num_blocks=2, text_num_heads=2,
        audio_embed_dim=16, audio_num_blocks=2, audio_num_heads=2, audio_drop_path=0.1,
        audio_kernel_size=16, audio_stride=10, audio_num_mel_bins=32, audio_target_len=48,
    )


def _reference_model(ib, cfg: ImageBindConfig):
    small_unused = dict(depth_embed_dim=16, depth_num_blocks=1, depth_num_heads=2,
                        thermal_embed_dim=16, thermal_num_blocks=1, thermal_num_heads=2,
                        imu_embed_dim=16, imu_num_blocks=1, imu_num_heads=2)
    return ib.ImageBindModel(
        video_frames=cfg.video_frames, kernel_size=tuple(cfg.kernel_size), audio_kernel_size=cfg.audio_kernel_size,
        audio_stride=cfg.audio_stride, out_embed_dim=cfg.out_embed_dim, vision_embed_dim=cfg.vision_embed_dim,
        vision_num_blocks=cfg.vision_num_blocks, vision_num_heads=cfg.vision_num_heads,
        audio_embed_dim=cfg.audio_embed_dim, audio_num_blocks=cfg.audio_num_blocks,
        audio_num_heads=cfg.audio_num_heads, audio_num_mel_bins=cfg.audio_num_mel_bins,
        audio_target_len=cfg.audio_target_len, audio_drop_path=cfg.audio_drop_path,
        text_embed_dim=cfg.text_embed_dim, text_num_blocks=cfg.text_num_blocks, text_num_heads=cfg.text_num_heads,
        **small_unused,
    ).eval()


@pytest.fixture(scope="module")
def pair(ref):
    ib, _ = ref
    cfg = _small_cfg()
    torch.manual_seed(0)
    reference = _reference_model(ib, cfg)
    ours = ImageBindModel(cfg)
    skipped = load_imagebind_weights(ours, reference.state_dict())  # strict; unused modalities skipped
    assert skipped and all(k.split(".")[1] in UNUSED_MODALITIES for k in skipped)
    return reference, ours, cfg


def test_outputs_match_reference(pair):
    reference, ours, cfg = pair
    g = torch.Generator().manual_seed(1)
    texts = BPETokenizer()(["a photo of a dog", "the sound of rain on a roof", "x"])
    inputs = {
        "vision": torch.randn(3, 3, 224, 224, generator=g),
        "text": texts,
        "audio": torch.randn(3, 2, 1, cfg.audio_num_mel_bins, cfg.audio_target_len, generator=g),
    }
    video = {"vision": torch.randn(2, 3, 3, 2, 224, 224, generator=g)}  # (B, clips, 3, T, H, W)
    with torch.no_grad():
        for batch in (inputs, video):
            want, got = reference(batch), ours(batch)
            assert want.keys() == got.keys()
            for k in want:
                assert got[k].shape == want[k].shape, k
                torch.testing.assert_close(got[k], want[k], atol=1e-5, rtol=1e-5, msg=k)


def test_encoder_features_match_reference_internals(pair):
    """EncoderOutput.embed is the reference head output before the postprocessor."""
    reference, ours, cfg = pair
    enc = ImageBindEncoder(cfg)
    enc.model.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(2)
    pixels = torch.randn(2, 3, 224, 224, generator=g)
    fbank = torch.randn(2, 3, 1, cfg.audio_num_mel_bins, cfg.audio_target_len, generator=g)
    text = BPETokenizer()(["hello there", "a red square"])
    with torch.no_grad():
        def ref_head(modality, x):
            pre = reference.modality_preprocessors[modality](**{modality: x})
            trunk = reference.modality_trunks[modality](**pre["trunk"])
            return trunk, reference.modality_heads[modality](trunk, **pre["head"])

        trunk, head = ref_head("vision", pixels)
        out = enc.encode_image(pixels)
        torch.testing.assert_close(out.embed, head, atol=1e-5, rtol=1e-5)
        vh = reference.modality_heads["vision"]
        torch.testing.assert_close(out.tokens, vh[2](vh[0](trunk)), atol=1e-5, rtol=1e-5)
        assert out.tokens.shape == (2, 1 + 4 * 4, cfg.out_embed_dim)

        _, head = ref_head("audio", fbank.flatten(0, 1))
        out = enc.encode_audio(fbank)
        torch.testing.assert_close(out.tokens, head.reshape(2, 3, -1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out.embed, head.reshape(2, 3, -1).mean(1), atol=1e-5, rtol=1e-5)

        _, head = ref_head("text", text)
        torch.testing.assert_close(enc.encode_text(text).embed, head, atol=1e-5, rtol=1e-5)


def test_tokenizer_matches_reference(ref):
    _, mmp = ref
    from codi2.encoders.tokenizer import default_vocab_path

    theirs = mmp.SimpleTokenizer(bpe_path=str(default_vocab_path()))
    ours = BPETokenizer()
    texts = ["A photo of a DOG.", "  multiple   spaces\tand\nnewlines ", "it's 3:45 pm, isn't it?",
             "café naïve résumé — “quoted”", "&amp; html &lt;b&gt;", "emoji 🐶🎵 and 中文字符",
             "word " * 100, "", "<|endoftext|> literal"]
    for t in texts:
        torch.testing.assert_close(ours([t])[0], theirs(t), msg=t)
    assert ours.decode(ours.encode("hello world")) == "hello world "


def test_huge_preset_keys_shapes_and_params_on_meta(ref, monkeypatch):
    ib, _ = ref
    real_linspace = torch.linspace

    def cpu_linspace(*args, **kwargs):  # the reference calls .item() on drop-path rates: keep them off meta
        kwargs["device"] = "cpu"
        return real_linspace(*args, **kwargs)

    monkeypatch.setattr(torch, "linspace", cpu_linspace)
    with torch.device("meta"):
        reference = ib.imagebind_huge(pretrained=False)
        ours = ImageBindModel(imagebind_huge_config())
    ref_sd, our_sd = reference.state_dict(), ours.state_dict()
    ref_params = sum(p.numel() for p in reference.parameters())
    assert ref_params == HUGE_PARAMS_ALL_MODALITIES
    assert len(ref_sd) == 1311
    used = {k: v for k, v in ref_sd.items() if k.split(".")[1] not in UNUSED_MODALITIES}
    assert set(our_sd) == set(used)
    assert {k: tuple(v.shape) for k, v in our_sd.items()} == {k: tuple(v.shape) for k, v in used.items()}
    # ours = the reference minus the depth/thermal/imu towers
    unused_params = sum(p.numel() for n, p in reference.named_parameters() if n.split(".")[1] in UNUSED_MODALITIES)
    assert sum(p.numel() for p in ours.parameters()) == HUGE_PARAMS_ALL_MODALITIES - unused_params
    # the full reference state dict (1311 entries) loads strictly
    skipped = load_imagebind_weights(ours, ref_sd)
    assert len(skipped) == len(ref_sd) - len(our_sd)
    assert ours.num_image_tokens == 257
    # and the same holds for requires_grad: frozen by default
    assert not any(p.requires_grad for p in ours.parameters())


def test_preprocessor_image_matches_reference_transform_semantics():
    """Pillow path: shorter side -> S with int(S*long/short), centre crop by round(); values normalised."""
    import numpy as np
    from PIL import Image

    cfg = ImageBindConfig()
    pre = ImageBindPreprocessor(cfg)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    x = pre.image(arr)
    assert x.shape == (3, 224, 224)
    resized = Image.fromarray(arr).resize((int(224 * 451 / 300), 224), Image.BICUBIC)
    left = int(round((resized.width - 224) / 2.0))
    want = np.asarray(resized, dtype=np.float32)[:, left:left + 224] / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), (want - mean) / std, atol=1e-5)
