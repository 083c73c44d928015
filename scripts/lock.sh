#!/usr/bin/env bash
# Write the lock files the images install from, requirements/<image>.txt, from pyproject.toml: every
# package at one exact version, resolved for the images' Python (3.11) on Linux x86_64. Run it after
# changing a dependency and commit what it writes; an image build then installs the same versions every time.
#   scripts/lock.sh             (uv comes with the dev extra: scripts/setup.sh installs it)
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
lock() {  # lock FILE EXTRA...: the dependencies and the given extras
    local out=$1 args=()
    shift
    for extra in "$@"; do args+=(--extra "$extra"); done
    "$uv" pip compile pyproject.toml "${args[@]}" --quiet --no-header --annotation-style line \
        --python-version 3.11 --python-platform x86_64-manylinux_2_28 -o "requirements/$out.txt"
}
mkdir -p requirements
lock bot                 # the Discord bot in Redis mode: no Keras backend, no music21
lock worker-gpu gpu      # a GPU worker on TensorFlow with CUDA
lock worker-jax-gpu jax-gpu
