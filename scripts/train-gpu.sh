#!/usr/bin/env bash
# Train models side by side on a bare GPU machine (docs/bench-gpu.md says what it needs: the wheels in
# .whl/ and tokens files), then pack each model folder for the trip back.
# Usage: scripts/train-gpu.sh OUT_DIR MINUTES RUN...
#   RUN is NAME=TOKENS[:DROPOUT[:PRESET]], e.g. music21=runs/music21.npz:0.3 or tutorial=runs/ch.npz::tutorial
# The runs share the GPU (JAX allocates memory as it goes), each for MINUTES of training with early
# stopping on its validation pieces. Writes OUT_DIR/train-gpu.txt (every run's output, one after another)
# and OUT_DIR/NAME.tar per run, cut into 15 MB parts when larger (`cat NAME.tar* | tar x`).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: scripts/train-gpu.sh OUT_DIR MINUTES NAME=TOKENS[:DROPOUT[:PRESET]]..."
out="${1:?$usage}"
minutes="${2:?$usage}"
shift 2
[ $# -gt 0 ] || { echo "error: name at least one run; $usage" >&2; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
site=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --find-links .whl --target "$site" \
    keras namex optree packaging typing_extensions
export PYTHONPATH="$site:$PWD" KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false
pids=()
names=()
for run in "$@"; do
    name="${run%%=*}"
    spec="${run#*=}"
    IFS=: read -r tokens dropout preset <<<"$spec"
    [ -f "$tokens" ] || { echo "error: no tokens file $tokens" >&2; exit 2; }
    args=(--tokens "$tokens" --out "$work/$name" --fresh --minutes "$minutes" --epochs 100000
        --preset "${preset:-etude}" --batch-size "${BATCH:-256}")
    if [ "${preset:-etude}" = tutorial ]; then
        args+=(--patience 100 --steps-per-epoch 40)
    else
        args+=(--patience "${PATIENCE:-12}")
    fi
    [ -n "$dropout" ] && args+=(--dropout "$dropout")
    {
        echo "== $name: ${args[*]}"
        echo "   $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo 'no GPU')"
        start=$SECONDS
        python3 -m bot train "${args[@]}" || echo "   (failed with status $?)"
        echo "   (took $((SECONDS - start)) s)"
    } >"$work/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
done
wait "${pids[@]}" || true
for name in "${names[@]}"; do
    cat "$work/$name.log" >>"$out/train-gpu.txt"
    [ -d "$work/$name" ] || continue
    tar -C "$work" --exclude checkpoint -cf "$work/$name.tar" "$name"
    if [ "$(stat -c %s "$work/$name.tar")" -gt $((15 * 1024 * 1024)) ]; then
        split -b 15M "$work/$name.tar" "$out/$name.tar."
    else
        mv "$work/$name.tar" "$out/"
    fi
done
grep -h "saved\|^==\|failed" "$out/train-gpu.txt" || true
