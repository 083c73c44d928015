#!/usr/bin/env bash
# Set up Étude on a fresh Debian/Ubuntu machine: system packages, a virtual environment, the package.
#   scripts/setup.sh          CPU TensorFlow (development, CI, the bot)
#   scripts/setup.sh gpu      CUDA TensorFlow (a GPU worker)
#   scripts/setup.sh jax      CPU JAX        (then run with KERAS_BACKEND=jax)
#   scripts/setup.sh jax-gpu  CUDA JAX       (a GPU worker on JAX; KERAS_BACKEND=jax)
# Flavours add to one .venv: `setup.sh` then `setup.sh jax` gives both backends, as CI uses them.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-cpu}"
case "$flavour" in
    cpu | gpu | jax | jax-gpu) ;;
    *) echo "error: unknown flavour '$flavour': choose cpu, gpu, jax or jax-gpu" >&2; exit 2 ;;
esac

# fluidsynth brings libfluidsynth3, which pyfluidsynth loads; ffmpeg (with libopus and libx264) encodes the
# audio and video; libsndfile1 is what soundfile reads them back with where its wheel does not bundle one.
need=(fluidsynth fluid-soundfont-gm ffmpeg libsndfile1 redis-server)
missing=()
for pkg in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "error: install these system packages first: ${missing[*]}" >&2
        exit 2
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "error: run as root or install: ${missing[*]}" >&2; exit 2; }
        sudo="sudo"
    fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
$python -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "error: Python 3.11 or newer is needed (found $($python --version 2>&1))" >&2; exit 2; }
[ -x .venv/bin/python ] || $python -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# train: music21, which training, evaluation and the tests read scores with (the bot and workers do not).
.venv/bin/python -m pip install -q -e ".[${flavour},dev,train]"
case "$flavour" in
    jax*) echo "ready: KERAS_BACKEND=jax .venv/bin/etude (without TensorFlow installed, JAX is the default)" ;;
    *) echo "ready: .venv/bin/etude" ;;
esac
