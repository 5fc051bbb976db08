# Sourced by the scripts: make .venv (Python 3.11, the pinned torch/torchvision) when it is missing or when
# pyproject.toml changed since it was made.
set -euo pipefail
PY=${PYTHON:-python3}
stamp=.venv/.betterconv-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setting up .venv (torch==2.14.1, torchvision==0.29.1, betterconv in editable mode)..." >&2
    [ -x .venv/bin/python ] || "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" > "$stamp"
fi
