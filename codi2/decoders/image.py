"""Image decoder: ``StableUnCLIPImg2ImgPipeline`` (SD-2.1-unCLIP-H) conditioned by ``image_embeds``.

The head predicts the ImageBind vision embedding of the target image (the OpenCLIP ViT-H space
unCLIP conditions on). The text prompt is the empty string; its CLIP encoding is computed once at
load and used both as the prompt and as the negative prompt (the pipeline's own convention for a
missing prompt); the unconditional image embedding is zeros, as in the pipeline.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from codi2.decoders.base import Decoder
from codi2.modality import Modality


class ImageDecoder(Decoder):
    """cond: ``{'image_embeds': (B, D)}`` with D = ``image_normalizer.embedding_dim`` (1024 for SD-2.1-unCLIP-H)."""

    modality = Modality.IMAGE
    pipeline_class_name = "StableUnCLIPImg2ImgPipeline"
    unused_components = ("feature_extractor", "image_encoder")
    text_components = ("tokenizer", "text_encoder")
    placeholders = ("image_encoder",)  # the pipeline reads next(image_encoder.parameters()).dtype

    def _read_spec(self) -> dict[str, tuple[int, ...]]:
        dim = int(self._component_config("image_normalizer")["embedding_dim"])
        return {"image_embeds": (dim,)}

    def _compute_null(self, pipe: Any) -> dict[str, torch.Tensor]:
        prompt_embeds, _ = pipe.encode_prompt("", self.device, 1, False)  # (1, 77, D_text)
        return {"prompt_embeds": prompt_embeds}

    def _run(self, pipe: Any, cond: dict[str, torch.Tensor], *, steps: int, guidance: float,
             generator: Optional[torch.Generator], callback: Callable) -> list:
        b = cond["image_embeds"].shape[0]
        height, width = self.image_size(pipe)
        out = pipe(
            image_embeds=cond["image_embeds"],
            prompt_embeds=self._null_batch("prompt_embeds", b),
            negative_prompt_embeds=self._null_batch("prompt_embeds", b),
            noise_level=int(self.cfg.noise_level),
            height=height, width=width,
            num_inference_steps=steps, guidance_scale=guidance,
            generator=generator, callback=callback, callback_steps=1, output_type="pil",
        )
        return list(out.images)

    def targets(self, captions: list[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError(
            "the image head's target is the ImageBind vision embedding of the target image (the space unCLIP-H "
            "takes as image_embeds); compute it with codi2.encoders from the image, not from a caption")

    def encode_target(self, target: "Sequence[Any] | torch.Tensor",
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Images -> VAE latents.

        Args:
            target: a list of PIL images, or a float tensor (B, 3, H, W) in [0, 1]; resized to the
                decoder's height × width with the pipeline's ``VaeImageProcessor``.

        Returns:
            (B, C_lat, H/f, W/f) scaled latents.
        """
        pipe = self.pipe
        height, width = self.image_size(pipe)
        if isinstance(target, torch.Tensor) and (target.ndim != 4 or target.shape[1] != 3):
            raise ValueError(f"image target tensor has shape {tuple(target.shape)}; expected (B, 3, H, W) in [0, 1]")
        if isinstance(target, np.ndarray):
            raise TypeError("image target must be a list of PIL images or a (B, 3, H, W) tensor in [0, 1]")
        pixels = pipe.image_processor.preprocess(target, height=height, width=width)  # (B, 3, H, W) in [-1, 1]
        return self._vae_encode(pixels, generator)

    def _denoise(self, pipe: Any, noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        b = noisy.shape[0]
        # class_labels exactly as the pipeline builds them: normalise, noise to loss_noise_level,
        # un-normalise, append the noise-level timestep embedding -> (B, 2·D)
        class_labels = pipe.noise_image_embeddings(cond["image_embeds"], noise_level=int(self.cfg.loss_noise_level),
                                                   generator=generator)
        return pipe.unet(noisy, t, encoder_hidden_states=self._null_batch("prompt_embeds", b),
                         class_labels=class_labels, return_dict=False)[0]
