"""Shared tiny fixtures: a tiny tokenizer, tiny model config, and small media."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def load_benchmark(name: str):
    """Imports ``benchmarks/<name>.py`` (a standalone script, not a package module) for a test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_tokenizer_file(tmp_path_factory) -> Path:
    from codi2.llm import train_sentencepiece
    from codi2.pipeline import tiny_corpus

    d = tmp_path_factory.mktemp("tok")
    return train_sentencepiece(tiny_corpus(), 320, d / "tokenizer", hard_vocab_limit=False)


@pytest.fixture(scope="session")
def tiny_cfg(tiny_tokenizer_file):
    """The tiny preset with a trained tiny tokenizer and no decoders."""
    from codi2.config import load_model_config

    cfg = load_model_config(REPO / "configs" / "model" / "tiny.yaml")
    return dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, tokenizer=str(tiny_tokenizer_file)))


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """`codi2 init configs/model/tiny.yaml` once per test session (tiny tokenizer, random parts, tiny decoders)."""
    from codi2.config import load_model_config
    from codi2.pipeline import init_pipeline

    out = tmp_path_factory.mktemp("tiny-pipeline")
    return init_pipeline(load_model_config(REPO / "configs" / "model" / "tiny.yaml"), out, seed=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def make_image(seed: int = 0, size: int = 40):
    from PIL import Image

    r = np.random.default_rng(seed)
    return Image.fromarray((r.random((size, size, 3)) * 255).astype("uint8"))


def make_audio(seed: int = 0, seconds: float = 1.0):
    from codi2.media import Audio

    r = np.random.default_rng(seed)
    return Audio((r.standard_normal((1, int(16000 * seconds))) * 0.1).astype("float32"), 16000)


def make_video(seed: int = 0, frames: int = 8):
    from codi2.media import Video

    r = np.random.default_rng(seed)
    return Video((r.random((frames, 32, 32, 3)) * 255).astype("uint8"), 4.0)


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: tiny ops are far slower with threads fighting over a shared CPU.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    """A random tiny CoDi2Model (no decoders loaded). Shared: tests must not train it."""
    from codi2.model import CoDi2Model

    torch.manual_seed(0)
    return CoDi2Model(tiny_cfg).eval()
