"""The suite registry: ``codi2 eval --suite NAME`` finds its suite here, so the runner names no suite.

The library registers dreambench, image-edit and audio-edit (:mod:`codi2.eval.suites`); packages above it
register their own from a plugin module (:mod:`codi2.plugins`), e.g.::

    from codi2.eval.registry import register_suite

    def build(cfg, model):            # cfg: codi2.eval.EvalConfig; model: the loaded CoDi2Model (or None)
        return MySuite(cfg.data, cfg.n, cfg.seed)

    register_suite(MySuite, build)    # MySuite.name is the --suite name
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

# build(cfg, model) -> Suite: cfg a codi2.eval.runner.EvalConfig, model the loaded CoDi2Model (or None)
SuiteBuilder = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class SuiteSpec:
    """A registered suite: its class (name, titles) and ``build(cfg, model) -> Suite``."""

    cls: type
    build: SuiteBuilder
    many_data: bool = False  # --data may name several manifests, read as one set

    @property
    def name(self) -> str:
        return self.cls.name


_SUITES: dict[str, SuiteSpec] = {}


def register_suite(cls: type, build: SuiteBuilder, *, many_data: bool = False) -> None:
    """Registers ``cls`` (a :class:`~codi2.eval.suites.Suite` subclass with a non-empty ``name``) built by
    ``build(cfg, model)``. Registering the same name again replaces it (a plugin re-imported)."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"{cls.__name__} has no suite name (set the class attribute `name`)")
    _SUITES[cls.name] = SuiteSpec(cls, build, many_data)


def suite_names() -> tuple[str, ...]:
    """Every registered suite's name, the plugins' included (they are loaded first)."""
    _load()
    return tuple(sorted(_SUITES))


def get_suite(name: str) -> SuiteSpec:
    """The registered suite ``name``; ``ValueError`` naming the known ones if there is none."""
    _load()
    if name not in _SUITES:
        raise ValueError(f"unknown suite {name!r}; allowed: {', '.join(sorted(_SUITES))}")
    return _SUITES[name]


def _load() -> None:
    # the library's own suites register when codi2.eval.suites is imported (codi2/eval/__init__.py does so)
    from ..plugins import load_plugins

    load_plugins()


__all__ = ["SuiteSpec", "get_suite", "register_suite", "suite_names"]
