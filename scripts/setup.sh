#!/usr/bin/env bash
# Creates .venv at the repo root and installs the pinned runtime (requirements.txt) and test-only
# (requirements-test.txt) requirements + codi2 (editable).
# Re-runs the install only when one of those files or pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($py --version)" >&2
  "$py" -m venv .venv
fi
stamp=".venv/.codi2-installed"
want="$(cat requirements.txt requirements-test.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing requirements into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip "setuptools>=68" >&2
  .venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt >&2
  # reference ImageBind for tests/test_encoders_parity.py; --no-deps: its deps include torchvision/torchaudio
  .venv/bin/python -m pip install -q --no-deps imagebind-unofficial==0.1.1 >&2
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >&2
  echo "$want" > "$stamp"
fi
