#!/bin/sh
# Regenerate deploy/requirements.lock: the exact versions `pip install .` resolves for
# pyproject.toml's dependencies, from a clean virtual environment. Run it with Python 3.11
# (the image's Python) on linux after changing those dependencies, then review the diff.
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3.11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
"$work/venv/bin/python" - "$root/pyproject.toml" > "$work/requirements.in" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as pyproject:
    print("\n".join(tomllib.load(pyproject)["project"]["dependencies"]))
PY
"$work/venv/bin/pip" install --quiet --disable-pip-version-check -r "$work/requirements.in"
"$work/venv/bin/pip" check

{
    echo "# Exact versions of every package the operator image installs: what \`pip install .\` resolves"
    echo "# on Python 3.11 (linux, x86_64) from pyproject.toml's dependencies, taken with \`pip freeze\`"
    echo "# of a clean virtual environment. Regenerate with deploy/lock-requirements.sh after changing"
    echo "# those dependencies; tests/install/test_image.py checks each pin against pyproject.toml."
    "$work/venv/bin/pip" freeze --disable-pip-version-check
} > "$root/deploy/requirements.lock"
echo "wrote $root/deploy/requirements.lock"
