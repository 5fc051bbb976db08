#!/usr/bin/env bash
# The project's main job: the survey reproduced claim by claim (betterconv report): out/report/index.html (one
# self-contained page), out/report/report.md with figures/, and report.json. Section 1 holds the zoo's profile
# (what `betterconv zoo` writes). Uses ../shared/data for the live figures when present. Creates .venv if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
exec .venv/bin/betterconv report --output out/report "$@"
