"""Render targets that fail the way a hostile piece could make FluidSynth fail, for the pool's tests.

A render process runs `render` from here instead of `bot.render.files.serve_request`: a piece named
`hang…` or composed with rng seed HANG_SEED never finishes; one named `crash…` or composed with CRASH_SEED
kills its process as a segfault in the synthesizer would, in whichever part of the piece a process plays;
any other piece renders normally.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from bot.render.files import serve_request

HANG_SEED = 4040
CRASH_SEED = 5050


def render(request, synth):
    if request.name.startswith("hang") or request.name.endswith(f"-{HANG_SEED}"):
        # A mark in the temporary folder says the render is under way (and that the folder is the one
        # the pool's owner gave it).
        (Path(tempfile.gettempdir()) / f"hanging-{os.getpid()}").touch()
        while True:
            time.sleep(60)
    if request.name.startswith("crash") or request.name.endswith(f"-{CRASH_SEED}"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return serve_request(request, synth)
