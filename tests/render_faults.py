"""Render targets that fail the way a hostile piece could make FluidSynth fail, for the pool's tests.

A render process runs `render` from here instead of `bot.render.files.render_piece`: a piece named
`hang-…` never finishes, one named `crash-…` kills its process as a segfault in the synthesizer would;
any other piece renders normally.
"""

from __future__ import annotations

import os
import signal
import time

from bot.render.files import render_piece


def render(request, synth):
    if request.name.startswith("hang"):
        while True:
            time.sleep(60)
    if request.name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return render_piece(request, synth)
