"""Tests for bot.render.loudness: the integrated loudness agrees with ffmpeg's EBU R128 meter, and a piece
brought to the target keeps every sample under the ceiling without touching its quiet parts."""

from __future__ import annotations

import subprocess

import numpy as np

from bot.bench.perform import ebur128
from bot.render.audio import ffmpeg_path
from bot.render.loudness import CEILING, TARGET_LUFS, integrated_loudness, limit, master
from tests.test_render import needs_renderer

RATE = 48000


def music(seconds: float = 30.0, seed: int = 1) -> np.ndarray:
    """Stereo chords with decays whose level swells and fades: loud attacks over a quieter body."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros((len(t), 2), np.float32)
    for start in np.arange(0, seconds - 1, 0.5):
        level = 0.05 + 0.25 * np.sin(np.pi * start / seconds) ** 2
        i = int(start * RATE)
        tail = t[: len(t) - i]
        for f in rng.choice([110, 220, 330, 440, 660, 880, 1320, 2640], 3, replace=False):
            tone = level * np.sin(2 * np.pi * f * tail) * np.exp(-3 * tail)
            out[i:, 0] += tone
            out[i:, 1] += 0.8 * tone
    return out


def wav(audio: np.ndarray) -> bytes:
    pcm = np.ascontiguousarray(audio, "<f4").tobytes()
    return subprocess.run(
        [ffmpeg_path(), "-loglevel", "error", "-f", "f32le", "-ar", str(RATE), "-ac", "2", "-i", "pipe:0"]
        + ["-c:a", "pcm_f32le", "-f", "wav", "pipe:1"],
        input=pcm,
        capture_output=True,
        check=True,
    ).stdout


@needs_renderer
def test_the_loudness_is_ffmpegs() -> None:
    for seed in (1, 2):
        audio = music(seed=seed)
        assert abs(integrated_loudness(audio, RATE) - ebur128(wav(audio), "wav")["I"]) < 0.2


@needs_renderer
def test_master_reaches_the_target_under_the_ceiling() -> None:
    audio = music() * np.float32(0.2)  # far too quiet
    done = master(audio.copy(), RATE)
    assert np.abs(done).max() <= CEILING
    assert abs(integrated_loudness(done, RATE) - TARGET_LUFS) < 0.5
    measured = ebur128(wav(done), "wav")
    assert abs(measured["I"] - TARGET_LUFS) < 0.5 and measured["TP"] <= -1.0


def test_the_limiter_turns_down_only_around_peaks() -> None:
    audio = np.full((RATE * 2, 2), 0.1, np.float32)
    audio[RATE : RATE + 10] = 2.0  # a spike, 26 dB over the rest
    before = audio.copy()
    limit(audio)
    assert np.abs(audio).max() <= CEILING
    assert np.array_equal(audio[: RATE // 2], before[: RATE // 2])  # half a second before: untouched
    assert np.array_equal(audio[-RATE // 2 :], before[-RATE // 2 :])
    quiet = np.full((RATE, 2), 0.5, np.float32)
    assert np.array_equal(limit(quiet.copy()), quiet)  # nothing over the ceiling, nothing changed
    assert master(np.zeros((0, 2), np.float32), RATE).size == 0
    silence = np.zeros((RATE, 2), np.float32)
    assert not master(silence, RATE).any()
