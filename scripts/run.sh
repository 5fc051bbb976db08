#!/usr/bin/env bash
# The project's main job: profile the model zoo (table, JSON, PNG chart in out/zoo). Creates .venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec .venv/bin/betterconv zoo --output out/zoo "$@"
