"""The common adapter around an unmodified diffusers pipeline (docs/design.md#architecture).

The LLM's output heads produce each decoder's *native* conditioning tensors (``image_embeds``,
``generated_prompt_embeds`` + ``prompt_embeds``, ``prompt_embeds``); a :class:`Decoder` turns them
into media, computes the head targets from captions, and gives the decoder's own denoising loss.

Loading: :meth:`Decoder.from_config` only checks the directory; the pipeline is loaded on first
use (or by :meth:`Decoder.load`) *without* the components the embeddings replace:

1. the pipeline is loaded with every text/image-encoder component set to ``None``;
2. the text components (tokenizers, text encoders, …) are loaded on their own, the
   unconditional ("" prompt) conditioning for classifier-free guidance is computed once with the
   pipeline's own ``encode_prompt`` and kept in memory (nothing is written to the model directory);
3. the text components are freed; where the pipeline still reads ``.dtype``/``.config`` from an
   absent component, a :class:`Absent` placeholder stands in.

:meth:`Decoder.targets` reloads the text components lazily and keeps them until
:meth:`Decoder.free_text_encoders` (so a feature-cache pass over a data set loads them once).
"""
from __future__ import annotations

import gc
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, ClassVar, Iterator, Optional

import torch
import torch.nn.functional as F

from codi2.config import DecoderConfig, resolve_path
from codi2.modality import Modality

logger = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
SCHEDULERS: tuple[str, ...] = ("ddim", "dpm++")
OFFLOADS: tuple[str, ...] = ("none", "model", "sequential")
LAYOUT = "a diffusers pipeline directory (model_index.json, unet/, vae/, scheduler/ …)"


class Cancelled(RuntimeError):
    """Raised by :meth:`Decoder.decode` when its ``should_stop()`` callback returned True."""


class Absent:
    """Stands where a component the conditioning embeddings replace would be.

    Some pipelines read ``.dtype``, ``.config.model_type`` or ``parameters()`` from a component even
    when embeddings are passed (unCLIP's image encoder, AudioLDM2's T5 and GPT-2). This object
    answers those from a reference module (the UNet) and refuses to run.
    """

    def __init__(self, name: str, ref: torch.nn.Module, model_type: Optional[str] = None):
        self._name = name
        self._ref = ref
        self.config = SimpleNamespace(model_type=model_type)

    @property
    def dtype(self) -> torch.dtype:
        return self._ref.dtype

    @property
    def device(self) -> torch.device:
        return self._ref.device

    def parameters(self) -> Iterator[torch.nn.Parameter]:
        return self._ref.parameters()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"pipeline component {self._name!r} is not loaded: codi2 conditions the decoder with "
                           "embeddings; call Decoder.targets() to run the text encoders")

    def __repr__(self) -> str:
        return f"Absent({self._name!r})"


class Decoder:
    """A diffusers pipeline conditioned by embeddings. Subclasses set the class attributes and the
    four modality hooks (``_compute_null``, ``_run``, ``encode_target``, ``_denoise``).
    One decode at a time per instance (``decode`` swaps the pipeline's scheduler).

    Attributes:
        cfg: the :class:`DecoderConfig`.
        path: the resolved pipeline directory.
        device: execution device; dtype: weight dtype.
    """

    modality: ClassVar[Modality]
    pipeline_class_name: ClassVar[str]
    # Components never loaded (the conditioning replaces them).
    unused_components: ClassVar[tuple[str, ...]] = ()
    # Components loaded only to compute the unconditional embeddings and targets(), then freed.
    text_components: ClassVar[tuple[str, ...]] = ()
    # Components the pipeline reads .dtype/.config/.parameters() from even when absent.
    placeholders: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: DecoderConfig, path: Path, device: torch.device, dtype: torch.dtype):
        self.cfg = cfg
        self.path = path
        self.device = device
        self.dtype = dtype
        self._pipe: Any = None
        self._null: dict[str, torch.Tensor] = {}
        self._model_types: dict[str, Optional[str]] = {}
        self._text_loaded = False
        self._scheduler_config: Any = None
        self._offload_hooks: list[Any] = []  # accelerate hooks a subclass chained itself
        self._spec = self._read_spec()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, cfg: DecoderConfig, device: "str | torch.device | None" = None) -> "Decoder":
        """Checks the config and the directory; the weights load on first use (or :meth:`load`).

        Raises:
            FileNotFoundError: ``cfg.path`` is unset or missing (the message names the config field).
            ValueError: a bad scheduler/offload/dtype value, or a directory holding another pipeline.
        """
        field = f"modalities.{cls.modality.value}.decoder.path"
        if cfg.path is None:
            raise FileNotFoundError(f"{field} is not set. Expected {LAYOUT} for {cls.pipeline_class_name}.")
        path = resolve_path(cfg.path, field, expect=LAYOUT)
        index = path / "model_index.json"
        if not index.is_file():
            raise FileNotFoundError(f"{field} = {cfg.path!r}: {index} not found. Expected {LAYOUT}.")
        found = json.loads(index.read_text()).get("_class_name")
        if found != cls.pipeline_class_name:
            raise ValueError(f"{field} = {cfg.path!r} holds a {found} pipeline; the {cls.modality.value} decoder "
                             f"needs a {cls.pipeline_class_name} directory")
        _check_choice("scheduler", cfg.scheduler, SCHEDULERS)
        _check_choice("offload", cfg.offload, OFFLOADS)
        _check_choice("dtype", cfg.dtype, tuple(DTYPES))
        dev = torch.device(device or cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(cfg, path, dev, DTYPES[cfg.dtype])

    def _pipeline_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.pipeline_class_name)

    def _component_config(self, name: str) -> dict:
        """The JSON config of one component sub-folder (no weights are read)."""
        for fname in ("config.json", "tokenizer_config.json", "scheduler_config.json"):
            f = self.path / name / fname
            if f.is_file():
                return json.loads(f.read_text())
        raise FileNotFoundError(f"{self.path / name}: no config.json; expected {LAYOUT} with a {name}/ folder")

    @property
    def pipe(self) -> Any:
        """The loaded diffusers pipeline (loads on first access)."""
        if self._pipe is None:
            self.load()
        return self._pipe

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    def load(self) -> "Decoder":
        """Loads the pipeline without the replaced encoders, computes the unconditional embeddings,
        frees the text encoders and applies the offload setting. Idempotent."""
        if self._pipe is not None:
            return self
        cls = self._pipeline_class()
        absent = {n: None for n in self.unused_components + self.text_components}
        logger.info("loading %s from %s (%s, %s)", self.pipeline_class_name, self.path, self.dtype, self.device)
        pipe = cls.from_pretrained(str(self.path), dtype=self.dtype, **absent)
        pipe.set_progress_bar_config(disable=True)
        if not self._offload_active():  # with offload, weights stay on the CPU until the hooks move them
            pipe.to(self.device)
        for name in ("unet", "vae", "vocoder", "image_normalizer"):
            module = getattr(pipe, name, None)
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False).eval()
        self._pipe = pipe
        self._scheduler_config = pipe.scheduler.config
        self._attach_text_encoders()
        with torch.no_grad():
            self._null = {k: v.detach() for k, v in self._compute_null(pipe).items()}
        self.free_text_encoders()
        self._apply_offload(pipe)
        return self

    def _attach_text_encoders(self) -> None:
        """Loads the text components from the directory onto the pipeline (kept until freed)."""
        if self._text_loaded or not self.text_components:
            return
        pipe = self.pipe  # loads the pipeline first when targets() is the first use
        names = [n for n in pipe.config.keys() if not n.startswith("_") and isinstance(pipe.config[n], (list, tuple))]
        absent = {n: None for n in names if n not in self.text_components}  # load the text components only
        logger.info("loading text components %s from %s", ", ".join(self.text_components), self.path)
        full = self._pipeline_class().from_pretrained(str(self.path), dtype=self.dtype, **absent,
                                                      **self._text_overrides())
        for name in self.text_components:
            module = getattr(full, name)
            if isinstance(module, torch.nn.Module):
                module.to(self.device).requires_grad_(False).eval()
                self._model_types[name] = getattr(module.config, "model_type", None)
            setattr(pipe, name, module)
        self._text_loaded = True

    def _text_overrides(self) -> dict[str, Any]:
        """Text components a subclass loads itself (passed to ``from_pretrained``)."""
        return {}

    def free_text_encoders(self) -> None:
        """Drops the text components (placeholders stay where the pipeline needs them)."""
        if self._pipe is None:
            return
        for name in self.text_components:
            value = Absent(name, self._pipe.unet, self._model_types.get(name)) if name in self.placeholders else None
            setattr(self._pipe, name, value)
        for name in self.unused_components:
            if name in self.placeholders:
                setattr(self._pipe, name, Absent(name, self._pipe.unet))
        self._text_loaded = False
        _free_memory()

    def _offload_active(self) -> bool:
        return self.cfg.offload != "none" and self.device.type == "cuda" and torch.cuda.is_available()

    def _apply_offload(self, pipe: Any) -> None:
        mode = self.cfg.offload
        if mode == "none":
            return
        if not self._offload_active():
            logger.info("decoder offload=%s ignored: it needs CUDA (device is %s)", mode, self.device)
            return
        if mode == "model":
            self._enable_model_offload(pipe)
        else:
            pipe.enable_sequential_cpu_offload(device=self.device)

    def _enable_model_offload(self, pipe: Any) -> None:
        pipe.enable_model_cpu_offload(device=self.device)

    def unload(self) -> None:
        """Frees the pipeline and the cached embeddings; the next use loads again."""
        for hook in self._offload_hooks:
            hook.remove()
        self._offload_hooks = []
        if self._pipe is not None and hasattr(self._pipe, "remove_all_hooks"):
            self._pipe.remove_all_hooks()
        self._pipe = None
        self._null = {}
        self._text_loaded = False
        _free_memory()

    # ------------------------------------------------------------------ conditioning contract
    def target_spec(self) -> dict[str, tuple[int, ...]]:
        """Names and per-sample shapes of the conditioning tensors (read from component configs)."""
        return dict(self._spec)

    def _read_spec(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def _optional_spec(self) -> dict[str, tuple[int, ...]]:
        return {}

    def check_cond(self, cond: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Validates names and shapes; returns the tensors on the decoder's device and dtype
        (differentiable: gradients flow back to the inputs).

        Raises:
            ValueError: a missing/unknown key, a wrong shape or mismatched batch sizes.
        """
        spec, optional = self.target_spec(), self._optional_spec()
        want = ", ".join(f"{k}: (B, {', '.join(map(str, s))})" for k, s in spec.items())
        missing = [k for k in spec if k not in cond]
        unknown = [k for k in cond if k not in spec and k not in optional]
        if missing or unknown:
            raise ValueError(f"{self.modality.value} decoder cond has keys {sorted(cond)}; expected {want}"
                             + (f" (optional: {', '.join(optional)})" if optional else ""))
        out: dict[str, torch.Tensor] = {}
        batch = None
        for k, v in cond.items():
            shape = spec.get(k, optional.get(k))
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"cond[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
            if v.ndim != len(shape) + 1 or tuple(v.shape[1:]) != tuple(shape):
                raise ValueError(f"cond[{k!r}] has shape {tuple(v.shape)}; the {self.modality.value} decoder expects "
                                 f"(B, {', '.join(map(str, shape))})")
            if batch is not None and v.shape[0] != batch:
                raise ValueError(f"cond tensors disagree on batch size: cond[{k!r}] has {v.shape[0]}, expected {batch}")
            batch = v.shape[0]
            is_float = torch.is_floating_point(v)
            out[k] = v.to(device=self.device, dtype=self.dtype if is_float else v.dtype)
        return out

    # ------------------------------------------------------------------ decoding
    def make_scheduler(self, name: str) -> Any:
        """``ddim`` or ``dpm++`` (DPMSolverMultistep, dpmsolver++), built from the pipeline's scheduler config."""
        from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

        _check_choice("scheduler", name, SCHEDULERS)
        config = self.pipe.scheduler.config if self._scheduler_config is None else self._scheduler_config
        if name == "ddim":
            return DDIMScheduler.from_config(config)
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")

    def decode(self, cond: dict[str, torch.Tensor], *, steps: Optional[int] = None, guidance: Optional[float] = None,
               scheduler: Optional[str] = None, seed: Optional[int] = None,
               progress: Optional[Callable[[int, int], None]] = None,
               should_stop: Optional[Callable[[], bool]] = None) -> list:
        """Turns conditioning tensors into media.

        Args:
            cond: ``target_spec()`` tensors, each ``(B, *shape)`` (plus optional keys, see subclasses).
            steps / guidance / scheduler: override ``cfg.steps`` / ``cfg.guidance`` / ``cfg.scheduler``.
            seed: seeds a CPU ``torch.Generator`` (same seed → identical output); None = global RNG.
            progress: called as ``progress(step, total)`` after each denoising step (1-based).
            should_stop: polled before and after each step; True raises :class:`Cancelled`.

        Returns:
            B media: ``PIL.Image.Image`` (image), ``codi2.media.Audio`` (audio), ``codi2.media.Video`` (video).
        """
        cond = self.check_cond(cond)
        pipe = self.pipe
        steps = int(steps if steps is not None else self.cfg.steps)
        if steps < 1:
            raise ValueError(f"steps = {steps}; must be >= 1")
        guidance = float(guidance if guidance is not None else self.cfg.guidance)
        pipe.scheduler = self.make_scheduler(scheduler or self.cfg.scheduler)
        generator = torch.Generator("cpu").manual_seed(int(seed)) if seed is not None else None

        def callback(step: int, timestep: Any, latents: torch.Tensor) -> None:
            if progress is not None:
                progress(step + 1, steps)
            if should_stop is not None and should_stop():
                raise Cancelled(f"{self.modality.value} decoding cancelled after step {step + 1}/{steps}")

        if should_stop is not None and should_stop():
            raise Cancelled(f"{self.modality.value} decoding cancelled before the first step")
        try:
            return self._run(pipe, cond, steps=steps, guidance=guidance, generator=generator, callback=callback)
        except Cancelled:
            if hasattr(pipe, "maybe_free_model_hooks"):
                pipe.maybe_free_model_hooks()
            raise

    # ------------------------------------------------------------------ training helpers
    def targets(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """The head targets for captions: ``target_spec()`` tensors ``(B, *shape)``, float32 on CPU."""
        raise NotImplementedError(f"{type(self).__name__}.targets is not implemented")

    def encode_target(self, target: Any, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Target media -> the pipeline's VAE latents (no gradient; ``generator`` seeds the VAE's
        posterior sample). See subclasses for the formats."""
        raise NotImplementedError

    def diffusion_loss(self, cond: dict[str, torch.Tensor], target: Any, *, target_is_latents: bool = False,
                       seed: Optional[int] = None, timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The decoder's own denoising loss through the frozen UNet; gradients flow into ``cond``.

        Args:
            cond: conditioning tensors as for :meth:`decode` (may require grad).
            target: target media (see :meth:`encode_target`), or latents when ``target_is_latents``.
            seed: makes timesteps and noise reproducible.
            timesteps: (B,) integer training timesteps in [0, num_train_timesteps); default uniform.

        Returns:
            Scalar MSE between the UNet output and its training target (noise for ``epsilon``,
            velocity for ``v_prediction``, clean latents for ``sample``).
        """
        from diffusers import DDPMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        cond = self.check_cond(cond)
        pipe = self.pipe
        g = torch.Generator("cpu").manual_seed(int(seed)) if seed is not None else None
        latents = target if target_is_latents else self.encode_target(target, generator=g)
        latents = latents.to(device=self.device, dtype=self.dtype)
        b = latents.shape[0]
        if b != next(iter(cond.values())).shape[0]:
            raise ValueError(f"target batch {b} != cond batch {next(iter(cond.values())).shape[0]}")
        sched = DDPMScheduler.from_config(self._scheduler_config or pipe.scheduler.config)
        noise = randn_tensor(latents.shape, generator=g, device=self.device, dtype=self.dtype)
        n_t = sched.config.num_train_timesteps
        if timesteps is None:
            t = torch.randint(0, n_t, (b,), generator=g)
        else:
            t = torch.as_tensor(timesteps).long()
            if t.shape != (b,) or int(t.min()) < 0 or int(t.max()) >= n_t:
                raise ValueError(f"timesteps must be {b} integers in [0, {n_t}); got shape {tuple(t.shape)}, "
                                 f"range [{int(t.min())}, {int(t.max())}]")
        t = t.to(self.device)
        noisy = sched.add_noise(latents, noise, t)
        kind = sched.config.prediction_type
        if kind == "epsilon":
            goal = noise
        elif kind == "v_prediction":
            goal = sched.get_velocity(latents, noise, t)
        elif kind == "sample":
            goal = latents
        else:
            raise ValueError(f"scheduler prediction_type {kind!r} is not supported; "
                             "allowed: epsilon, v_prediction, sample")
        with torch.enable_grad():
            pred = self._denoise(pipe, noisy, t, cond, generator=g)
            return F.mse_loss(pred.float(), goal.float())

    # ------------------------------------------------------------------ modality hooks
    def _compute_null(self, pipe: Any) -> dict[str, torch.Tensor]:
        """Unconditional conditioning (batch 1) for classifier-free guidance; text encoders are loaded."""
        raise NotImplementedError

    def _run(self, pipe: Any, cond: dict[str, torch.Tensor], *, steps: int, guidance: float,
             generator: Optional[torch.Generator], callback: Callable) -> list:
        raise NotImplementedError

    def _denoise(self, pipe: Any, noisy: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor],
                 generator: Optional[torch.Generator]) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ shared helpers
    def _null_batch(self, name: str, b: int) -> torch.Tensor:
        """The cached unconditional tensor ``name`` repeated to batch ``b``."""
        v = self._null[name]
        return v.expand(b, *v.shape[1:]).to(self.device)

    @property
    def null_conditioning(self) -> dict[str, torch.Tensor]:
        """The unconditional (empty-prompt) conditioning, batch 1, computed at :meth:`load` (empty before)."""
        return self._null

    def image_size(self, pipe: Any = None) -> tuple[int, int]:
        """(height, width) of the pictures or frames: the config's, else the UNet's sample size in pixels
        (``pipe``: the pipeline to read; default this decoder's own, loading it)."""
        pipe = self.pipe if pipe is None else pipe
        default = pipe.unet.config.sample_size * pipe.vae_scale_factor
        return int(self.cfg.height or default), int(self.cfg.width or default)

    def _vae_encode(self, pixels: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(N, C, H, W) in the VAE's input range -> (N, c, h, w) scaled latents, no gradient."""
        vae = self.pipe.vae
        with torch.no_grad():
            dist = vae.encode(pixels.to(device=self.device, dtype=self.dtype)).latent_dist
            return dist.sample(generator) * vae.config.scaling_factor

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"{type(self).__name__}({str(self.path)!r}, {state}, spec={self._spec})"


def _check_choice(field: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"decoder {field} = {value!r}; allowed: {', '.join(allowed)}")


def check_captions(captions: "list[str]") -> None:
    if isinstance(captions, str) or len(captions) == 0 or not all(isinstance(c, str) for c in captions):
        raise TypeError(f"captions must be a non-empty list of str, got {captions!r}")


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
