"""`etude bench`: sampling speed, throughput, stage timings and memory (the measuring is in `bot.bench`)."""

from __future__ import annotations

import argparse


def cmd_bench(args) -> int:
    from bot.bench.run import run_bench

    run_bench(args)
    return 0


def add_bench(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="measure sampling speed, throughput, stage timings and memory")
    b.add_argument("--model", help="model folder (default: the shipped model)")
    b.add_argument("--quick", action="store_true", help="fewer notes and repeats, for a smoke test")
    b.add_argument(
        "--harmonize", action="store_true", help="only the harmonizer: 100 melody notes end to end"
    )
    b.add_argument("--redis", help="also measure throughput through Redis workers at this URL")
    b.add_argument(
        "--sections",
        help="comma-separated: sampler, train, e2e, render, perform, worker, cold (default: all); sampler and "
        "train need neither music21 nor FluidSynth",
    )
    b.add_argument("--batches", help="comma-separated sampler batch sizes (default: by device)")
    b.add_argument(
        "--tokens", help="tokens file (.npz) for the training figures (default: the model's own samples)"
    )
    b.set_defaults(func=cmd_bench)
