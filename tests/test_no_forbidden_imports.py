"""Importing codi2 and every submodule must not import torchvision, torchaudio, timm, open_clip or pytorchvideo
(CUDA-linked wheels here; importing them breaks transformers)."""
from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torchvision", "torchaudio", "timm", "open_clip", "pytorchvideo")

_SCRIPT = """
import importlib, json, pkgutil, sys
import codi2
names, errors = [], {}
for info in pkgutil.walk_packages(codi2.__path__, prefix="codi2."):
    try:
        importlib.import_module(info.name)
        names.append(info.name)
    except ImportError as e:  # a submodule another engineer has not finished must not hide a forbidden import
        errors[info.name] = repr(e)
forbidden = sorted(m for m in sys.modules if m.split(".")[0] in %r)
print(json.dumps({"imported": names, "errors": errors, "forbidden": forbidden}))
""" % (FORBIDDEN,)


def test_codi2_imports_no_forbidden_packages():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "codi2.encoders.imagebind" in report["imported"], report
    assert report["forbidden"] == [], f"forbidden modules imported: {report['forbidden']}"
    assert report["errors"] == {}, f"submodules failed to import: {report['errors']}"
