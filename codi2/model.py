"""CoDi2Model: a plain composition of the parts (docs/design.md#architecture).

    encoder (ImageBind, frozen) ─► InputProjector[m] ─► Llama (+LoRA) ─► OutputHead[m] ─► decoder[m]

``forward(batch)`` returns text cross-entropy on assistant tokens, a feature loss per output
modality and (when enabled in the head config) the decoder's diffusion loss, each reported
separately in :class:`CoDi2Output`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from .config import ModelConfig
from .conversation import Encoded, MediaSpan, Message, Part, PromptBuilder, part_key
from .losses import IGNORE_INDEX, feature_loss, text_loss
from .modality import ALL_MODALITIES, Modality, special_tokens
from .projectors import InputProjector, OutputHead, pool_tokens

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"dtype {name!r} is not one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclass
class SpanBatch:
    """The media spans of one modality in a batch.

    Attributes:
        batch_index: (N,) row of each span.
        start: (N,) position of each span's first slot token.
        features: input spans: (N, n_in, D_enc) encoder features.
        targets: output spans: name -> (N, *shape) head targets.
        media: output spans: the target media (for the optional diffusion loss).
        reply: output spans: (N,) which assistant reply of its conversation each span is in (1 = the first), so
            the feature loss can be logged per round of a multi-round dialogue.
    """

    batch_index: torch.Tensor
    start: torch.Tensor
    features: Optional[torch.Tensor] = None
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    media: list[Any] = field(default_factory=list)
    reply: Optional[torch.Tensor] = None


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)
    inputs: dict[Modality, SpanBatch] = field(default_factory=dict)
    outputs: dict[Modality, SpanBatch] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "Batch":
        def mv(s: SpanBatch) -> SpanBatch:
            return SpanBatch(s.batch_index.to(device), s.start.to(device),
                             None if s.features is None else s.features.to(device),
                             {k: v.to(device) for k, v in s.targets.items()}, s.media,
                             None if s.reply is None else s.reply.to(device))
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                     {m: mv(s) for m, s in self.inputs.items()}, {m: mv(s) for m, s in self.outputs.items()})

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())


@dataclass
class CoDi2Output:
    """``loss``: the weighted total; ``parts``: each term on its own (``text``,
    ``feature/image``, ``diffusion/audio`` …, detached floats for logging)."""

    loss: torch.Tensor
    parts: dict[str, float]
    logits: Optional[torch.Tensor] = None
    hidden: Optional[torch.Tensor] = None


def span_positions(s: SpanBatch, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices of every slot of every span: two (N, n) tensors."""
    cols = s.start[:, None] + torch.arange(n, device=s.start.device)[None, :]
    rows = s.batch_index[:, None].expand_as(cols)
    return rows, cols


class CoDi2Model(nn.Module):
    """The CoDi-2 model.

    Args:
        cfg: the model config.
        base_dir: relative paths in ``cfg`` are resolved against it (a pipeline directory).
        device: where to put the model (default CPU).
    """

    def __init__(self, cfg: ModelConfig, base_dir: "str | Path | None" = None, device: "str | torch.device | None" = None):
        super().__init__()
        from .encoders import ImageBindEncoder, ImageBindPreprocessor
        from .llm import load_llm, load_tokenizer

        self.cfg = cfg
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.modalities: list[Modality] = [m for m in ALL_MODALITIES if m.value in cfg.modalities and cfg.modalities[m.value].enabled]
        unknown = set(cfg.modalities) - {m.value for m in ALL_MODALITIES}
        if unknown:
            raise ValueError(f"unknown modalities in config: {sorted(unknown)}; allowed: {[m.value for m in ALL_MODALITIES]}")
        self.n_in = {m: cfg.modalities[m.value].n_in for m in self.modalities}
        self.n_out = {m: cfg.modalities[m.value].n_out for m in self.modalities}

        enc_cfg = cfg.encoder
        if enc_cfg.weights is not None and base_dir is not None and not Path(enc_cfg.weights).is_absolute():
            enc_cfg = _with_path(enc_cfg, "weights", str(Path(base_dir) / enc_cfg.weights))
        self.encoder = ImageBindEncoder(enc_cfg)
        self.preprocess = ImageBindPreprocessor(cfg.encoder)
        self.tokenizer = load_tokenizer(cfg.llm, special_tokens(self.n_out), base_dir=base_dir)
        self.llm = load_llm(cfg.llm, self.tokenizer, device=device, base_dir=base_dir)
        d = self.llm.hidden_size
        self.projectors = nn.ModuleDict({m.value: InputProjector(self.encoder.out_dim, d, cfg.modalities[m.value].input_projector)
                                         for m in self.modalities if self.n_in[m] > 0})
        self.heads = nn.ModuleDict({m.value: OutputHead(d, self.n_out[m], cfg.modalities[m.value].head)
                                    for m in self.modalities if self.n_out[m] > 0})
        self.builder = PromptBuilder(self.tokenizer, self.n_in, self.n_out, cfg.llm.system_prompt)
        self._decoders: dict[Modality, Any] = {}
        if device is not None:
            self.projectors.to(device)
            self.heads.to(device)
            self.encoder.to(device)

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device if len(self.heads) else next(self.projectors.parameters()).device

    def trainable_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Trainable parameters grouped: ``lora``, ``new_token_rows``, ``projectors``, ``heads``."""
        groups = {k: list(v) for k, v in self.llm.trainable_parameters().items()}
        groups["projectors"] = [p for p in self.projectors.parameters() if p.requires_grad]
        groups["heads"] = [p for p in self.heads.parameters() if p.requires_grad]
        return groups

    def decoder(self, m: Modality):
        """The decoder of modality ``m``, loaded on first use."""
        if m not in self._decoders:
            from .decoders import build_decoder

            dcfg = self.cfg.modalities[m.value].decoder
            if dcfg.path is not None and self.base_dir is not None and not Path(dcfg.path).is_absolute():
                dcfg = _with_path(dcfg, "path", str(self.base_dir / dcfg.path))
            dec = build_decoder(m, dcfg, device=self.device)
            spec = dec.target_spec()
            want = self.heads[m.value].shapes
            for k, shape in want.items():
                if k not in spec or tuple(spec[k]) != tuple(shape):
                    raise ValueError(f"{m.value} head produces {k}{list(shape)} but the decoder at {dcfg.path} expects "
                                     f"{ {n: list(s) for n, s in spec.items()} }; fix modalities.{m.value}.head.targets")
            self._decoders[m] = dec
        return self._decoders[m]

    def unload_decoders(self) -> None:
        """Forgets the loaded decoders (the next :meth:`decoder` call loads again)."""
        self._decoders.clear()

    # ------------------------------------------------------------------ media -> features
    def load_part(self, part: Part) -> Any:
        """Loads a part's media from its path (once) within the configured limits."""
        if part.media is None:
            from .media import load_media

            part.media = load_media(part.path, kind=part.type, limits=self.cfg.media)
        return part.media

    @torch.no_grad()
    def encode_media(self, m: Modality, parts: Sequence[Part], cache: Optional[dict] = None) -> torch.Tensor:
        """Encoder features of input media, pooled to ``n_in`` tokens: (N, n_in, D_enc).

        ``cache`` (content key -> (n_in, D_enc) tensor) avoids encoding the same media twice.
        """
        n = self.n_in[m]
        out: list[Optional[torch.Tensor]] = [None] * len(parts)
        todo = []
        for i, p in enumerate(parts):
            k = part_key(p) if cache is not None else None
            if k is not None and (m, k) in cache:
                out[i] = cache[(m, k)]
            else:
                todo.append(i)
        if todo:
            media = [self.load_part(parts[i]) for i in todo]
            dev = self.encoder_device
            if m is Modality.IMAGE:
                o = self.encoder.encode_image(self.preprocess.images(media).to(dev))
                feats = o.embed[:, None] if n == 1 else pool_tokens(o.tokens, n)
            elif m is Modality.AUDIO:
                o = self.encoder.encode_audio(torch.stack([self.preprocess.audio(a) for a in media]).to(dev))
                feats = o.embed[:, None] if n == 1 else pool_tokens(o.tokens, n)
            else:
                o = self.encoder.encode_video(torch.stack([self.preprocess.video(v) for v in media]).to(dev))
                tok = o.tokens  # (N, S, 1+P, D)
                feats = o.embed[:, None] if n == 1 else pool_tokens(tok.reshape(tok.shape[0], -1, tok.shape[-1]), n)
            feats = feats.float().cpu()
            for j, i in enumerate(todo):
                out[i] = feats[j]
                if cache is not None:
                    cache[(m, part_key(parts[i]))] = feats[j]
        return torch.stack(out)  # type: ignore[arg-type]

    @property
    def encoder_device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.no_grad()
    def compute_targets(self, m: Modality, parts: Sequence[Part]) -> dict[str, torch.Tensor]:
        """Head targets for output media (docs/design.md#feature-tokens): image -> the encoder's vision embedding of the
        target image; audio/video -> the decoder's own conditioning for the part's caption."""
        if m is Modality.IMAGE:
            media = [self.load_part(p) for p in parts]
            emb = self.encoder.encode_image(self.preprocess.images(media).to(self.encoder_device)).embed
            (name,) = self.heads[m.value].shapes
            return {name: emb.float().cpu()}
        missing = [i for i, p in enumerate(parts) if not p.caption]
        if missing:
            raise ValueError(f"{m.value} output parts {missing} have no caption; audio/video head targets are computed from it")
        t = self.decoder(m).targets([p.caption for p in parts])
        return {k: v.float().cpu() for k, v in t.items()}

    # ------------------------------------------------------------------ batching
    def collate(self, convs: Sequence[Sequence[Message]], feature_cache: Optional[dict] = None,
                target_fn: Optional[Callable[[Modality, Sequence[Part]], dict[str, torch.Tensor]]] = None,
                max_length: Optional[int] = None) -> Batch:
        """Tokenizes conversations and gathers features and targets into a right-padded :class:`Batch`.

        Args:
            convs: conversations (lists of messages).
            feature_cache: see :meth:`encode_media`.
            target_fn: computes head targets (default :meth:`compute_targets`; training reads a
                precomputed cache instead).
            max_length: sequences longer than this raise (truncating would cut media spans).
        """
        encs: list[Encoded] = [self.builder.encode(c) for c in convs]
        T = max(len(e) for e in encs)
        if max_length is not None and T > max_length:
            raise ValueError(f"conversation of {T} tokens exceeds max_length {max_length}")
        pad = self.tokenizer.pad_token_id
        B = len(encs)
        ids = torch.full((B, T), pad, dtype=torch.long)
        mask = torch.zeros((B, T), dtype=torch.long)
        labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        spans: dict[tuple[Modality, bool], list[tuple[int, MediaSpan]]] = {}
        # per row, per message (MediaSpan.message): the 1-based assistant reply it belongs to
        replies = [self.builder.reply_numbers(c) for c in convs]
        for b, e in enumerate(encs):
            ids[b, :len(e)] = torch.tensor(e.ids)
            mask[b, :len(e)] = 1
            labels[b, :len(e)] = torch.tensor(e.labels)
            for s in e.spans:
                spans.setdefault((s.modality, s.output), []).append((b, s))
        batch = Batch(ids, mask, labels)
        target_fn = target_fn or self.compute_targets
        for (m, is_out), lst in spans.items():
            bi = torch.tensor([b for b, _ in lst])
            st = torch.tensor([s.start for _, s in lst])
            parts = [s.part for _, s in lst]
            if is_out:
                reply = torch.tensor([replies[b][s.message] for b, s in lst])
                batch.outputs[m] = SpanBatch(bi, st, targets=target_fn(m, parts), media=parts, reply=reply)
            else:
                batch.inputs[m] = SpanBatch(bi, st, features=self.encode_media(m, parts, feature_cache))
        return batch

    # ------------------------------------------------------------------ forward
    def embed(self, input_ids: torch.Tensor, inputs: dict[Modality, SpanBatch]) -> torch.Tensor:
        """Token embeddings with projected media features at input slots: (B, T, D)."""
        emb = self.llm.embed(input_ids)
        for m, s in inputs.items():
            proj = self.projectors[m.value](s.features.to(device=emb.device, dtype=self.projectors[m.value].net[0].weight.dtype))
            rows, cols = span_positions(s, self.n_in[m])
            emb = emb.index_put((rows, cols), proj.to(emb.dtype))
        return emb

    def head_loss(self, m: Modality, s: SpanBatch, hidden: torch.Tensor, parts: dict[str, float]) -> torch.Tensor:
        """Weighted feature (+ optional diffusion) loss of modality ``m``'s output spans.

        Args:
            s: the output spans of ``m``; ``hidden`` (B, T, D) the LLM's last hidden states.
            parts: receives ``feature/<m>`` (and ``diffusion/<m>``) as floats for logging.
        """
        hcfg = self.cfg.modalities[m.value].head
        head = self.heads[m.value]
        rows, cols = span_positions(s, self.n_out[m])
        preds = head(hidden[rows, cols].to(head.trunk[0].weight.dtype))  # name -> (N, *shape)
        if head.training:  # the head's own flag: the trainer trains the heads, not this (encoder-holding) module
            head.observe_targets(s.targets)
        fl = sum(feature_loss(preds[k], s.targets[k].to(preds[k].device), hcfg.loss) for k in preds) / len(preds)
        parts[f"feature/{m.value}"] = float(fl.detach())
        if s.reply is not None and int(s.reply.max()) > 1:  # a multi-round dialogue in the batch: each round's loss
            with torch.no_grad():
                for r in sorted(set(s.reply.tolist())):
                    sel = (s.reply == r).to(next(iter(preds.values())).device)
                    parts[f"feature/{m.value}/reply{r}"] = float(sum(
                        feature_loss(preds[k][sel], s.targets[k].to(preds[k].device)[sel], hcfg.loss)
                        for k in preds) / len(preds))
        loss = hcfg.loss_weight * fl
        if hcfg.diffusion_loss_weight > 0:
            media = [self.load_part(p) for p in s.media]
            dl = self.decoder(m).diffusion_loss(preds, media)
            parts[f"diffusion/{m.value}"] = float(dl.detach())
            loss = loss + hcfg.diffusion_loss_weight * dl
        return loss

    def forward(self, batch: Batch, return_outputs: bool = False) -> CoDi2Output:
        """Training forward: text CE + feature losses (+ diffusion losses).

        Args:
            batch: from :meth:`collate`.
        Returns:
            :class:`CoDi2Output` with the total loss and each term.
        """
        emb = self.embed(batch.input_ids, batch.inputs)
        logits, hidden, _ = self.llm.forward(inputs_embeds=emb, attention_mask=batch.attention_mask)
        loss = text_loss(logits, batch.labels.to(logits.device))
        parts = {"text": float(loss.detach())}
        for m, s in batch.outputs.items():
            loss = loss + self.head_loss(m, s, hidden, parts)
        parts["total"] = float(loss.detach())
        return CoDi2Output(loss, parts, logits if return_outputs else None, hidden if return_outputs else None)


def _with_path(cfg: Any, field_name: str, value: str) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, **{field_name: value})
