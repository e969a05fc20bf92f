"""Audio decoder: ``AudioLDM2Pipeline`` conditioned by ``generated_prompt_embeds`` + ``prompt_embeds``.

cond:
  - ``generated_prompt_embeds`` (B, L, G): the GPT-2 "language of audio" states (8 × 768 for AudioLDM2);
  - ``prompt_embeds`` (B, T, D): Flan-T5 hidden states (D = 1024), T = ``cfg.prompt_len``;
  - optional ``attention_mask`` (B, T) long for ``prompt_embeds`` (default: all ones).

:meth:`AudioDecoder.targets` pads/truncates the T5 states to T and zeroes the padded positions, so
the head learns zeros there. The unconditional conditioning is the pipeline's own negative branch
for the empty prompt (T5 padded to T with its mask), computed once at load.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from codi2.decoders.base import Decoder, check_captions
from codi2.media import Audio
from codi2.modality import Modality

logger = logging.getLogger(__name__)


class AudioDecoder(Decoder):
    """cond: ``{'generated_prompt_embeds': (B, L, G), 'prompt_embeds': (B, T, D)}`` (+ optional
    ``attention_mask`` (B, T)); decodes to mono :class:`codi2.media.Audio` at the vocoder's rate."""

    modality = Modality.AUDIO
    pipeline_class_name = "AudioLDM2Pipeline"
    unused_components = ("feature_extractor",)  # CLAP features only rank several waveforms per prompt
    text_components = ("text_encoder", "text_encoder_2", "projection_model", "language_model", "tokenizer",
                       "tokenizer_2")
    placeholders = ("text_encoder_2", "language_model")  # the pipeline reads their .dtype / .config.model_type

    def _read_spec(self) -> dict[str, tuple[int, ...]]:
        lm = self._component_config("language_model")
        t5 = self._component_config("text_encoder_2")
        gen_len = int(lm.get("max_new_tokens", 8))  # 8 = AudioLDM2's GPT-2 default
        d_t5 = t5.get("d_model", t5.get("hidden_size"))  # T5 / (TTS variant) VITS
        if d_t5 is None:
            raise ValueError(f"{self.path / 'text_encoder_2'}/config.json has neither d_model nor hidden_size")
        if self.cfg.prompt_len < 1:
            raise ValueError(f"decoder prompt_len = {self.cfg.prompt_len}; must be >= 1 (T5 tokens of prompt_embeds)")
        return {"generated_prompt_embeds": (gen_len, int(lm["n_embd"])),
                "prompt_embeds": (self.cfg.prompt_len, int(d_t5))}

    def _optional_spec(self) -> dict[str, tuple[int, ...]]:
        return {"attention_mask": (self.cfg.prompt_len,)}

    @property
    def sample_rate(self) -> int:
        return int(self._component_config("vocoder")["sampling_rate"])

    # ------------------------------------------------------------------ conditioning
    def _compute_null(self, pipe: Any) -> dict[str, torch.Tensor]:
        # The pipeline's own negative branch: with embeds given and guidance on, encode_prompt encodes
        # "" (CLAP + T5 padded to T + GPT-2) and returns cat([negative, positive]); keep the negative.
        (gen_len, gen_dim), (t, d) = self._spec["generated_prompt_embeds"], self._spec["prompt_embeds"]
        dummy = dict(prompt_embeds=torch.zeros(1, t, d, device=self.device, dtype=self.dtype),
                     generated_prompt_embeds=torch.zeros(1, gen_len, gen_dim, device=self.device, dtype=self.dtype),
                     attention_mask=torch.ones(1, t, dtype=torch.long, device=self.device))
        pe, mask, gen = pipe.encode_prompt(None, self.device, 1, True, max_new_tokens=gen_len, **dummy)
        return {"prompt_embeds": pe[:1], "attention_mask": mask[:1], "generated_prompt_embeds": gen[:1]}

    def targets(self, captions: list[str], with_mask: bool = False) -> dict[str, torch.Tensor]:
        """AudioLDM2's own conditioning for captions (CLAP + T5 + projection + GPT-2, no guidance).

        Returns:
            ``generated_prompt_embeds`` (B, L, G) and ``prompt_embeds`` (B, T, D) (T5 states padded or
            truncated to T, zeros at padding), float32 on CPU; with ``with_mask`` also
            ``attention_mask`` (B, T) long.
        """
        check_captions(captions)
        self._attach_text_encoders()
        (gen_len, _), (t, _) = self._spec["generated_prompt_embeds"], self._spec["prompt_embeds"]
        with torch.no_grad():
            pe, mask, gen = self.pipe.encode_prompt(list(captions), self.device, 1, False, max_new_tokens=gen_len)
        if pe.shape[1] > t:
            logger.warning("a caption has %d T5 tokens; truncated to prompt_len = %d", pe.shape[1], t)
        pe, mask = pe[:, :t], mask[:, :t]
        pad = t - pe.shape[1]
        pe = F.pad(pe, (0, 0, 0, pad)) * F.pad(mask, (0, pad))[..., None].to(pe.dtype)  # (B, T, D)
        out = {"generated_prompt_embeds": gen.float().cpu(), "prompt_embeds": pe.float().cpu()}
        if with_mask:
            out["attention_mask"] = F.pad(mask, (0, pad)).long().cpu()
        return out

    def _text_overrides(self) -> dict[str, Any]:
        # diffusers#12630: AudioLDM2 checkpoints store the language model as GPT2Model, which under
        # transformers 5 lacks the GenerationMixin helpers generate_language_model() calls; the same
        # weights load into GPT2LMHeadModel (lm_head tied to wte), which has them.
        from transformers import GPT2LMHeadModel, GPT2Model

        index = json.loads((self.path / "model_index.json").read_text())
        if index.get("language_model", [None, None])[1] != GPT2Model.__name__:
            return {}
        lm = GPT2LMHeadModel.from_pretrained(str(self.path / "language_model"), dtype=self.dtype)
        return {"language_model": lm}

    # ------------------------------------------------------------------ decoding
    def _run(self, pipe: Any, cond: dict[str, torch.Tensor], *, steps: int, guidance: float,
             generator: Optional[torch.Generator], callback: Callable) -> list:
        b = cond["prompt_embeds"].shape[0]
        mask = cond.get("attention_mask")
        if mask is None:
            mask = torch.ones(cond["prompt_embeds"].shape[:2], dtype=torch.long, device=self.device)
        out = pipe(
            prompt_embeds=cond["prompt_embeds"], generated_prompt_embeds=cond["generated_prompt_embeds"],
            attention_mask=mask,
            negative_prompt_embeds=self._null_batch("prompt_embeds", b),
            negative_generated_prompt_embeds=self._null_batch("generated_prompt_embeds", b),
            negative_attention_mask=self._null_batch("attention_mask", b),
            audio_length_in_s=float(self.cfg.audio_seconds), num_inference_steps=steps, guidance_scale=guidance,
            generator=generator, callback=callback, callback_steps=1, output_type="np",
        )
        sr = int(pipe.vocoder.config.sampling_rate)
        return [Audio(samples=np.asarray(a, dtype=np.float32)[None], sample_rate=sr) for a in out.audios]

    def _enable_model_offload(self, pipe: Any) -> None:
        # AudioLDM2Pipeline.enable_model_cpu_offload walks the (absent) text encoders; chain the
        # denoising modules ourselves with the same accelerate helper.
        from accelerate import cpu_offload_with_hook

        pipe.to("cpu")
        hook = None
        for module in (pipe.unet, pipe.vae, pipe.vocoder):
            _, hook = cpu_offload_with_hook(module, self.device, prev_module_hook=hook)
            self._offload_hooks.append(hook)

    # ------------------------------------------------------------------ training
    def log_mel(self, wave: torch.Tensor, normalise: bool = True) -> torch.Tensor:
        """Waveform -> the log-mel the AudioLDM2 VAE encodes (the vocoder's input space).

        AudioLDM2's training mel (AudioLDM ``TacotronSTFT``; not part of diffusers), in torch:
        peak-normalise to 0.5, reflect-pad (n_fft − hop)/2, |STFT| with a Hann window (n_fft = win =
        1024, hop = 160 at 16 kHz; scaled with the vocoder's hop for other configs), Slaney mel
        filters 0 … sr/2 with ``model_in_dim`` bins, ``log(clamp(·, 1e-5))``.

        Args:
            wave: (B, n) at ``sample_rate``.
            normalise: remove the mean and peak-normalise first (False: the vocoder's spectral loss on
                segments of an already normalised waveform). Differentiable either way.

        Returns:
            (B, n // hop, n_mels).
        """
        from transformers.audio_utils import mel_filter_bank

        voc = self.pipe.vocoder.config
        hop = int(np.prod(voc.upsample_rates))
        n_mels = int(voc.model_in_dim)
        n_fft = max(2 ** math.ceil(math.log2(6.4 * hop)), 2 ** math.ceil(math.log2(4 * n_mels)))
        wave = wave.float()
        if normalise:
            wave = wave - wave.mean(dim=1, keepdim=True)
            wave = 0.5 * wave / (wave.abs().amax(dim=1, keepdim=True) + 1e-8)
        pad = (n_fft - hop) // 2
        wave = F.pad(wave[:, None], (pad, pad), mode="reflect")[:, 0]
        window = torch.hann_window(n_fft, device=wave.device)
        spec = torch.stft(wave, n_fft, hop_length=hop, win_length=n_fft, window=window,
                          center=False, return_complex=True).abs()  # (B, n_fft/2+1, frames)
        fb = mel_filter_bank(n_fft // 2 + 1, n_mels, 0.0, voc.sampling_rate / 2, voc.sampling_rate, norm="slaney",
                             mel_scale="slaney")
        mel = torch.einsum("bft,fm->btm", spec, torch.from_numpy(fb).float().to(spec.device))
        return torch.log(torch.clamp(mel, min=1e-5))

    def encode_target(self, target: "Sequence[Audio] | torch.Tensor",
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Audio -> VAE latents of its log-mel.

        Args:
            target: a list of :class:`codi2.media.Audio` (mixed to mono, resampled to the vocoder's
                rate) or a float tensor (B, n) at that rate; cropped/zero-padded to ``cfg.audio_seconds``.

        Returns:
            (B, C_lat, frames/f, n_mels/f) scaled latents.
        """
        pipe = self.pipe
        sr = int(pipe.vocoder.config.sampling_rate)
        hop = int(np.prod(pipe.vocoder.config.upsample_rates))
        frames = int(self.cfg.audio_seconds * sr / hop)
        frames = int(math.ceil(frames / pipe.vae_scale_factor)) * pipe.vae_scale_factor  # as the pipeline rounds
        n = frames * hop
        if isinstance(target, torch.Tensor):
            if target.ndim != 2:
                raise ValueError(f"audio target tensor has shape {tuple(target.shape)}; expected (B, n) at {sr} Hz")
            waves = [target[i].float().cpu() for i in range(target.shape[0])]
        else:
            waves = [torch.from_numpy(_mono_at(a, sr)) for a in target]
        wave = torch.stack([F.pad(w[:n], (0, max(0, n - w.shape[0]))) for w in waves])  # (B, n)
        mel = self.log_mel(wave.to(self.device))  # (B, frames, n_mels)
        return self._vae_encode(mel[:, None], generator)

    def _denoise(self, pipe: Any, noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        mask = cond.get("attention_mask")
        if mask is None:
            mask = torch.ones(cond["prompt_embeds"].shape[:2], dtype=torch.long, device=self.device)
        return pipe.unet(noisy, t, encoder_hidden_states=cond["generated_prompt_embeds"],
                         encoder_hidden_states_1=cond["prompt_embeds"], encoder_attention_mask_1=mask,
                         return_dict=False)[0]


def _mono_at(audio: Audio, sr: int) -> np.ndarray:
    """(channels, n) or (n,) samples -> mono float32 (n,) at ``sr`` (polyphase resampling)."""
    x = np.asarray(audio.samples, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim == 2 else x
    if int(audio.sample_rate) != sr:
        from scipy.signal import resample_poly

        g = math.gcd(int(audio.sample_rate), sr)
        x = resample_poly(x, sr // g, int(audio.sample_rate) // g).astype(np.float32)
    return x

