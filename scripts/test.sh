#!/usr/bin/env bash
# The test suite. Creates .venv if missing. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec .venv/bin/python -m pytest -q "$@"
