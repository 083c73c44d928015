#!/usr/bin/env bash
# Measure the sampler and training on a bare GPU machine: its python3 has numpy, JAX (with CUDA), h5py,
# ml-dtypes, rich and absl-py, and nothing of this project's other dependencies (no music21, mido,
# pydantic, discord or TensorFlow). What it lacks travels beside the source:
#   .whl/                    keras, namex, optree (one per Python version), packaging, typing_extensions
#   runs/chorales-tokens.npz the training data, from `etude train --export-tokens runs/chorales-tokens.npz`
# Usage: scripts/bench-gpu.sh OUT_DIR      (TOKENS=FILE picks another tokens file; BENCH_ARGS=--quick
#        shortens the bench, for a trial on a CPU)
# Everything printed also goes to OUT_DIR/bench-gpu-<time>.txt; the short training writes OUT_DIR/model.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: scripts/bench-gpu.sh OUT_DIR}"
tokens="${TOKENS:-runs/chorales-tokens.npz}"
[ -f "$tokens" ] || { echo "error: no tokens file $tokens (etude train --export-tokens $tokens)" >&2; exit 2; }
ls .whl/keras-*.whl >/dev/null 2>&1 || { echo "error: no keras wheel in .whl/ (see docs/bench-gpu.md)" >&2; exit 2; }
mkdir -p "$out"
log="$out/bench-gpu-$(date -u +%Y%m%dT%H%M%SZ).txt"
site=/tmp/site

{
    echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
    python3 --version
    # pip picks, among the optree wheels, the one for this python3.
    python3 -m pip install -q --no-index --no-deps --no-compile --find-links .whl --target "$site" \
        keras namex optree packaging typing_extensions
    export PYTHONPATH="$site:$PWD" KERAS_BACKEND=jax
    python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), '| keras', keras.__version__)"

    echo; echo "== etude bench --sections sampler,train"
    start=$SECONDS
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    python3 -m bot bench --sections sampler,train --tokens "$tokens" ${BENCH_ARGS:-}
    echo "(bench took $((SECONDS - start)) s)"

    echo; echo "== etude train: half a minute from $tokens, batch 256"
    start=$SECONDS
    python3 -m bot train --tokens "$tokens" --out "$out/model" --fresh --minutes 0.5 --batch-size 256 --epochs 40
    echo "(training took $((SECONDS - start)) s)"
} 2>&1 | tee "$log"
echo "written: $log"
