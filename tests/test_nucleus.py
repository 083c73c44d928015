"""How the sampler draws a token from the nucleus, and the CPU threads a serving process samples on.

The nucleus is counted, not sorted for (`bot.model.sample._nucleus`): held here against the plain rule,
written with a sort, on distributions with ties, zeros, a top-p that keeps one token and one that keeps all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bot.model import backend
from bot.model.sample import _nucleus

ROOT = Path(__file__).resolve().parents[1]


def nucleus_reference(p: np.ndarray, top_p: float, u: float) -> int:
    """The rule as the docs state it: the likeliest tokens (ties in index order) before which less than
    `top_p` of the mass lies, renormalised; the token whose share of them holds `u`."""
    order = sorted(range(len(p)), key=lambda i: (-p[i], i))
    kept, before = [], np.float32(0)
    for i in order:
        if before < top_p and p[i] > 0:
            kept.append(i)
        before = np.float32(before + p[i])
    x = np.float32(u) * np.float32(sum(p[i] for i in kept))
    acc = np.float32(0)
    for i in kept:
        if x < acc + p[i]:
            return i
        acc = np.float32(acc + p[i])
    return kept[-1]


def test_the_counted_nucleus_draws_what_the_sorted_one_does():
    ops = backend.keras().ops
    rng = np.random.default_rng(0)
    v = 40
    rows, tops, us = [], [], []
    for _ in range(300):
        # Weights out of 256: every sum is exact in float32, so the two ways may be compared exactly. Few
        # distinct weights make ties common; zeros are the tokens the rules forbid.
        w = rng.choice([0, 0, 0, 1, 2, 3, 5, 8], size=v).astype(np.float64)
        w[rng.integers(v)] += 1  # at least one token is allowed
        w = np.floor(w / w.sum() * 256)
        w[np.argmax(w)] += 256 - w.sum()
        rows.append((w / 256).astype(np.float32))
        tops.append(rng.choice([0.0001, 0.5, 0.9, 0.95, 1.0]))
        us.append(rng.random(dtype=np.float32))
    probs, top_p, u = np.stack(rows), np.array(tops, np.float32), np.array(us, np.float32)
    got = np.asarray(ops.convert_to_numpy(_nucleus(ops, probs, top_p, u)))
    want = [nucleus_reference(p, t, x) for p, t, x in zip(probs, top_p, u)]
    assert got.tolist() == want
    assert all(probs[i, t] > 0 for i, t in enumerate(got))  # never a forbidden token
    # A top-p that keeps one token keeps the likeliest, whatever u draws.
    tiny = top_p == np.float32(0.0001)
    assert tiny.any() and all(got[tiny] == [min(range(v), key=lambda j: (-p[j], j)) for p in probs[tiny]])


def threads_of(serving: bool, **env: str) -> list[int]:
    """(threads the backend computes on, the sampler's shards' bound) in a fresh process."""
    code = (
        "from bot.model import backend\n"
        + ("backend.serving()\n" if serving else "")
        + "from bot.model.network import load\nfrom bot.model.sample import Sampler\n"
        "print(backend.compute_threads(), Sampler(load()).threads)"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("SAMPLER_THREADS", "TF_NUM_INTRAOP_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return [int(n) for n in out.stdout.split()]


@pytest.mark.skipif(backend.name() != "tensorflow", reason="the thread setting sizes TensorFlow's pools")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every process computes on one thread")
def test_a_serving_process_samples_on_sampler_threads_and_training_on_every_core():
    cores = os.cpu_count() or 1
    assert threads_of(serving=True) == [1, 1]  # the default: a worker, `etude compose`
    assert threads_of(serving=True, SAMPLER_THREADS="2") == [2, 2]
    assert threads_of(serving=False) == [cores, cores]  # training, evaluation: every core
    # TensorFlow's own setting, where someone made it, is theirs.
    assert threads_of(serving=True, TF_NUM_INTRAOP_THREADS="2") == [2, 2]
