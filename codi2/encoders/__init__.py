"""ImageBind-compatible encoders (state-dict keys identical to ``imagebind_huge.pth``) and their preprocessing."""
from codi2.encoders.encoder import EncoderOutput, ImageBindEncoder
from codi2.encoders.imagebind import (
    MODALITIES,
    UNUSED_MODALITIES,
    ImageBindModel,
    build_imagebind,
    imagebind_huge_config,
    load_imagebind_weights,
    small_imagebind_config,
    tiny_imagebind_config,
)
from codi2.encoders.preprocess import ImageBindPreprocessor
from codi2.encoders.tokenizer import BPETokenizer

__all__ = [
    "BPETokenizer",
    "EncoderOutput",
    "ImageBindEncoder",
    "ImageBindModel",
    "ImageBindPreprocessor",
    "MODALITIES",
    "UNUSED_MODALITIES",
    "build_imagebind",
    "imagebind_huge_config",
    "load_imagebind_weights",
    "small_imagebind_config",
    "tiny_imagebind_config",
]
