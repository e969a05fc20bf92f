"""Plugins: the packages above the library (trainers, data builders, the chat app, the mini world) add what
they bring — ``codi2`` subcommands, evaluation suites — without the library naming them.

A plugin is a module listed in the Python entry-point group ``codi2.plugins`` (``pyproject.toml``)
or in the ``CODI2_PLUGINS`` environment variable (comma-separated module names, for code that is not
installed). Importing it registers what it brings (e.g. :func:`codi2.eval.registry.register_suite`); if it
defines ``register(subparsers)``, ``codi2`` adds its subcommands.

    [project.entry-points."codi2.plugins"]
    my_suite = "my_package.codi2_plugin"
"""
from __future__ import annotations

import importlib
import logging
import os
from importlib.metadata import entry_points
from types import ModuleType

log = logging.getLogger(__name__)

GROUP = "codi2.plugins"
ENV = "CODI2_PLUGINS"

_loaded: dict[str, ModuleType] = {}


class PluginError(RuntimeError):
    """A plugin named in the entry-point group or in ``CODI2_PLUGINS`` could not be imported."""


def plugin_modules() -> list[tuple[str, str]]:
    """(name, module) of every plugin: the entry points of :data:`GROUP`, then ``CODI2_PLUGINS``."""
    found = [(ep.name, ep.value) for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)]
    for mod in filter(None, (m.strip() for m in os.environ.get(ENV, "").split(","))):
        if mod not in {m for _, m in found}:
            found.append((mod, mod))
    return found


def load_plugins() -> list[ModuleType]:
    """Imports every plugin once (later calls return the same modules). Raises :class:`PluginError` naming
    the plugin that failed and why."""
    for name, mod in plugin_modules():
        if mod in _loaded:
            continue
        try:
            _loaded[mod] = importlib.import_module(mod)
        except ImportError as e:
            raise PluginError(f"codi2 plugin {name!r} (module {mod!r}) failed to import: {e}. Reinstall the "
                              f"package that declares it (pip install -e .) or remove it from {ENV}") from e
        log.debug("loaded codi2 plugin %s (%s)", name, mod)
    return list(_loaded.values())


__all__ = ["ENV", "GROUP", "PluginError", "load_plugins", "plugin_modules"]
