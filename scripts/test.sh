#!/usr/bin/env bash
# Fresh-machine test command: sets up .venv, then runs the CPU test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
exec .venv/bin/python -m pytest -q "$@"
