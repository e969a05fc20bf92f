"""Video decoder: ``TextToVideoSDPipeline`` (Zeroscope v2) conditioned by ``prompt_embeds`` (B, 77, 1024).

The unconditional conditioning is the CLIP encoding of the empty prompt (the pipeline's default
negative prompt), computed once at load.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from codi2.decoders.base import Decoder, check_captions
from codi2.media import Video
from codi2.modality import Modality


class VideoDecoder(Decoder):
    """cond: ``{'prompt_embeds': (B, L, D)}`` (77 × 1024 for Zeroscope); decodes to
    :class:`codi2.media.Video` with ``cfg.num_frames`` uint8 frames at ``cfg.fps``."""

    modality = Modality.VIDEO
    pipeline_class_name = "TextToVideoSDPipeline"
    text_components = ("tokenizer", "text_encoder")

    def _read_spec(self) -> dict[str, tuple[int, ...]]:
        text = self._component_config("text_encoder")
        length = self._component_config("tokenizer").get("model_max_length", text["max_position_embeddings"])
        return {"prompt_embeds": (int(length), int(text["hidden_size"]))}

    def _compute_null(self, pipe: Any) -> dict[str, torch.Tensor]:
        prompt_embeds, _ = pipe.encode_prompt([""], self.device, 1, False)  # (1, L, D)
        return {"prompt_embeds": prompt_embeds}

    def targets(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Zeroscope's CLIP text conditioning: ``{'prompt_embeds': (B, L, D)}`` float32 on CPU."""
        check_captions(captions)
        self._attach_text_encoders()
        with torch.no_grad():
            prompt_embeds, _ = self.pipe.encode_prompt(list(captions), self.device, 1, False)
        return {"prompt_embeds": prompt_embeds.float().cpu()}

    def _run(self, pipe: Any, cond: dict[str, torch.Tensor], *, steps: int, guidance: float,
             generator: Optional[torch.Generator], callback: Callable) -> list:
        b = cond["prompt_embeds"].shape[0]
        height, width = self.image_size(pipe)
        out = pipe(
            prompt_embeds=cond["prompt_embeds"], negative_prompt_embeds=self._null_batch("prompt_embeds", b),
            num_frames=int(self.cfg.num_frames), height=height, width=width,
            num_inference_steps=steps, guidance_scale=guidance,
            generator=generator, callback=callback, callback_steps=1, output_type="np",
        )
        frames = np.asarray(out.frames)  # (B, F, H, W, 3) float in [0, 1]
        frames = (frames * 255.0).round().clip(0, 255).astype(np.uint8)
        return [Video(frames=f, fps=float(self.cfg.fps)) for f in frames]

    def encode_target(self, target: "Sequence[Video] | torch.Tensor",
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Clips -> per-frame VAE latents.

        Args:
            target: a list of :class:`codi2.media.Video` (``cfg.num_frames`` frames taken evenly over
                the clip) or a float tensor (B, F, 3, H, W) in [0, 1]; frames are resized to the
                decoder's height × width with diffusers' ``VideoProcessor``.

        Returns:
            (B, C_lat, F, H/f, W/f) scaled latents (the UNet3D layout).
        """
        from diffusers.video_processor import VideoProcessor

        pipe = self.pipe
        height, width = self.image_size(pipe)
        if isinstance(target, torch.Tensor):
            if target.ndim != 5 or target.shape[2] != 3:
                raise ValueError(f"video target tensor has shape {tuple(target.shape)}; expected (B, F, 3, H, W) "
                                 "in [0, 1]")
            clips = target.float()
        else:
            n = int(self.cfg.num_frames)
            picks = [np.linspace(0, v.frames.shape[0] - 1, n).round().astype(int) for v in target]
            clips = torch.stack([torch.from_numpy(v.frames[i]).permute(0, 3, 1, 2).float() / 255.0
                                 for v, i in zip(target, picks)])  # (B, F, 3, H, W)
        processor = VideoProcessor(vae_scale_factor=pipe.vae_scale_factor, do_resize=True)
        video = processor.preprocess_video(clips, height=height, width=width)  # (B, 3, F, H, W) in [-1, 1]
        b, c, f, h, w = video.shape
        latents = self._vae_encode(video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), generator)  # (B·F, C, h, w)
        return latents.reshape(b, f, *latents.shape[1:]).permute(0, 2, 1, 3, 4)

    def _denoise(self, pipe: Any, noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        return pipe.unet(noisy, t, encoder_hidden_states=cond["prompt_embeds"], return_dict=False)[0]
