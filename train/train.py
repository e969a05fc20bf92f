"""``deepspeed [--num_gpus N | --hostfile H] train/train.py CONFIG [key=value …]``: DeepSpeed training.

The DeepSpeed launcher runs this file as a script, so Python puts ``train/`` first on the import path
and this very file would be found under the name ``train``, hiding the ``train`` package. So this file
loads the package from its own folder by location (no ``sys.path`` change) and calls
``train.loop.main(use_deepspeed=True)``.
"""
import importlib
import importlib.util
import sys
from pathlib import Path


def _train_package():
    """Imports the ``train`` package (this file's folder) under its own name."""
    here = Path(__file__).resolve().parent
    if "train" in sys.modules and getattr(sys.modules["train"], "__path__", None):
        return sys.modules["train"]
    spec = importlib.util.spec_from_file_location("train", here / "__init__.py", submodule_search_locations=[str(here)])
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["train"] = pkg
    spec.loader.exec_module(pkg)
    return pkg


def main(argv=None) -> int:
    _train_package()
    return importlib.import_module("train.loop").main(argv, use_deepspeed=True)


if __name__ == "__main__":
    sys.exit(main())
