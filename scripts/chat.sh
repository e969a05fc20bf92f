#!/usr/bin/env bash
# Fresh-machine chat command: sets up .venv, then launches the Gradio chat on the bundled mini model.
# Extra arguments go to `python -m serve.app` (e.g. `--port 7861`, `--model DIR`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m serve.app "$@"
