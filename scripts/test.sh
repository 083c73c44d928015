#!/usr/bin/env bash
# Run the test suite (after scripts/setup.sh). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Two processes, a test file each at a time (--dist loadfile keeps a file's shared fixtures in one process):
# much of the suite waits on real processes (workers, Redis, FluidSynth), so two files at once take about
# half the time of one after the other, even on two cores. TEST_PROCESSES=0 runs in one process.
exec .venv/bin/python -m pytest -q -n "${TEST_PROCESSES:-2}" --dist loadfile "$@"
