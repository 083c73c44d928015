"""FluidSynth in this process, through pyfluidsynth: the soundfont is loaded once and each piece is played
into memory as float samples.

Loading the 148 MB FluidR3 soundfont costs about 0.3 s, which the command-line FluidSynth paid on every
job; a `Synth` pays it once and is reset between pieces. A render that hangs or crashes the library is
handled by the process around it (`bot.render.pool`), not here.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bot.errors import RenderError

log = logging.getLogger(__name__)

# Frames written per call: 0.1 s at 48 kHz, so the end of the piece is found within 0.1 s; 75 of
# FluidSynth's 64-frame blocks, so every render starts on a block and a note's frame does not depend on
# what the synth played before (the parts of `bot.render.parts` line up with a whole render).
BLOCK = 4800
TAIL_SECONDS = 2.5  # rendered after the player's last event: releases and reverb
SOUNDFONT_MAGIC = (b"RIFF", b"sfbk")


@dataclass(frozen=True)
class SynthSettings:
    """How FluidSynth plays: chosen by measuring cost against sound (README, "Rendering").

    CPU seconds for a 176-second, 500-note piece: 0.98 as chosen; reverb off 0.72 (but a dry FluidR3
    piano sounds boxed in); chorus on 1.18 (it only smears a piano's pitch); seventh-order interpolation
    1.02 and linear 0.96 (no difference a listener could point to). 48 kHz costs the same as 44.1 and is
    what Opus codes, so the listening copy needs no resampling.
    """

    sample_rate: int = 48000
    reverb: bool = True
    chorus: bool = False
    interpolation: int = 4  # FLUID_INTERP_4THORDER
    polyphony: int = 256
    gain: float = 0.5  # the level is set afterwards by normalising the float render


def check_soundfont(path: Path) -> None:
    """RenderError unless `path` is a readable SoundFont 2 file (RIFF....sfbk)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise RenderError(f"cannot read the soundfont {path}: {e.strerror or e}") from None
    if head[:4] != SOUNDFONT_MAGIC[0] or head[8:12] != SOUNDFONT_MAGIC[1]:
        raise RenderError(f"not a SoundFont 2 file: {path}")


def _library():
    """pyfluidsynth's module with the few functions it does not wrap declared; RenderError without it."""
    try:
        # pyfluidsynth prints where it found the library when CI is set; stdout is for the paths alone.
        with contextlib.redirect_stdout(io.StringIO()):
            import fluidsynth
    except (ImportError, OSError) as e:  # the module, or the libfluidsynth it loads, is missing
        raise RenderError(
            f"the FluidSynth library is not installed ({e}): apt-get install libfluidsynth3"
        ) from None
    fl = fluidsynth
    if not hasattr(fl, "_etude_write_float"):
        c_void_p, c_int = ctypes.c_void_p, ctypes.c_int

        def cfunc(name: str, result: type, **params: type):
            """The C function `name`, its parameters in order, each an input (ctypes' flag 1); None when
            this libfluidsynth lacks it."""
            return fl.cfunc(name, result, *((param, kind, 1) for param, kind in params.items()))

        fl._etude_write_float = cfunc(
            "fluid_synth_write_float",
            c_int,
            synth=c_void_p,
            len=c_int,
            lout=c_void_p,
            loff=c_int,
            lincr=c_int,
            rout=c_void_p,
            roff=c_int,
            rincr=c_int,
        )
        fl._etude_add_mem = cfunc(
            "fluid_player_add_mem", c_int, player=c_void_p, buffer=c_void_p, len=ctypes.c_size_t
        )
        fl._etude_interp = cfunc(
            "fluid_synth_set_interp_method", c_int, synth=c_void_p, chan=c_int, interp=c_int
        )
        fl._etude_all_sounds_off = cfunc("fluid_synth_all_sounds_off", c_int, synth=c_void_p, chan=c_int)
        # FluidSynth prints warnings (unknown MIDI events, missing presets) to stderr; they are not errors.
        set_log = cfunc("fluid_set_log_function", c_void_p, level=c_int, fun=c_void_p, data=c_void_p)
        if set_log is not None:
            for level in (2, 3, 4):  # FLUID_WARN, FLUID_INFO, FLUID_DBG
                set_log(level, None, None)
    return fl


class Synth:
    """One FluidSynth synthesizer with the soundfont loaded; `render` plays a MIDI file into memory."""

    def __init__(self, soundfont: Path, settings: SynthSettings = SynthSettings()):
        check_soundfont(soundfont)
        fl = _library()
        self.fl, self.settings, self.soundfont = fl, settings, soundfont
        t0 = time.perf_counter()
        self.synth = fl.Synth(
            gain=settings.gain,
            samplerate=settings.sample_rate,
            **{
                "synth.reverb.active": int(settings.reverb),
                "synth.chorus.active": int(settings.chorus),
                "synth.polyphony": settings.polyphony,
                # Events are timed by the samples written, not the wall clock: offline rendering.
                "player.timing-source": "sample",
                "synth.lock-memory": 0,
                # Samples are loaded when a preset is first played: a piano-only process holds 200 MB,
                # not the 330 MB of the whole of FluidR3, and loading takes 0.1 s instead of 0.6.
                "synth.dynamic-sample-loading": 1,
            },
        )
        if self.synth.sfload(str(soundfont)) < 0:
            self.synth.delete()
            raise RenderError(f"FluidSynth cannot load the soundfont {soundfont}")
        fl._etude_interp(self.synth.synth, -1, settings.interpolation)
        self.load_seconds = time.perf_counter() - t0
        self._kept = np.zeros((0, 2), np.float32)  # `render`'s buffer when it may reuse one
        self._scratch = np.zeros((0, 2), np.float32)

    def render(self, midi: bytes, max_seconds: float, reuse: bool = False) -> np.ndarray:
        """`midi` played to the end plus the release tail, at most `max_seconds`: float32, (frames, 2).

        With `reuse` the frames go into a buffer the synth keeps (the longest piece it has played so far)
        and the result is a view of it, good until its next render: a piece's hundreds of megabytes of
        samples are not allocated and faulted in afresh for every job (on this project's 2-core machine
        that cost as much as a second a piece)."""
        fl, synth = self.fl, self.synth.synth
        rate = self.settings.sample_rate
        # FluidSynth accepts any bytes here and plays silence for what it cannot parse.
        if len(midi) < 14 or midi[:4] != b"MThd":
            raise RenderError("not a MIDI file")
        fl.fluid_synth_system_reset(synth)  # programs, controllers and voices left by the last piece
        player = fl.new_fluid_player(synth)
        if not player:
            raise RenderError("FluidSynth could not start a MIDI player")
        try:
            buf = ctypes.create_string_buffer(bytes(midi), len(midi))
            if fl._etude_add_mem(player, ctypes.cast(buf, ctypes.c_void_p), len(midi)) != 0:
                raise RenderError("FluidSynth cannot read the MIDI file")
            fl.fluid_player_play(player)
            limit = int(max_seconds * rate)
            kept = self._kept if reuse else np.zeros((0, 2), np.float32)
            chunks: list[np.ndarray] = []  # the blocks past the end of `kept`
            frames = 0
            tail_left = int(TAIL_SECONDS * rate)
            while frames < limit:
                if frames + BLOCK <= len(kept):
                    block = kept[frames : frames + BLOCK]
                else:
                    block = np.empty((BLOCK, 2), np.float32)
                    chunks.append(block)
                ptr = block.ctypes.data
                fl._etude_write_float(synth, BLOCK, ptr, 0, 2, ptr, 1, 2)
                frames += BLOCK
                if fl.fluid_player_get_status(player) != fl.FLUID_PLAYER_PLAYING:
                    tail_left -= BLOCK
                    if tail_left <= 0:
                        break
            fl.fluid_player_stop(player)
        finally:
            fl.delete_fluid_player(player)
            fl._etude_all_sounds_off(synth, -1)
        if not chunks:
            return kept[: min(frames, limit)]
        audio = np.concatenate([kept[: frames - len(chunks) * BLOCK], *chunks])
        if reuse:
            self._kept = audio
        return audio[:limit]

    def scratch(self, frames: int) -> np.ndarray:
        """A float32 (frames, 2) buffer this synth keeps for its process's next piece (parts are mixed in
        it), grown when too short; what it held before is overwritten."""
        if len(self._scratch) < frames:
            self._scratch = np.empty((frames, 2), np.float32)
        return self._scratch[:frames]

    def close(self) -> None:
        self.synth.delete()
        self._kept = self._scratch = np.zeros((0, 2), np.float32)
