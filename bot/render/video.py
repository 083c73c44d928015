"""A shareable `.mp4`: the piano roll scrolling under a fixed playhead, with the piece's audio.

The whole roll is drawn once, with numpy, as one wide strip; ffmpeg moves a window across it (`crop` with
an x that grows with time, on one looped frame), draws the playhead and encodes. No frame is drawn in
Python, so the cost is ffmpeg's: a little over 1 CPU second for a 3-minute piece at 640x360, 20 frames/s on this
2-core machine (`etude bench`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bot.music.events import Event
from bot.music.perform import beat_seconds
from bot.render.audio import run_ffmpeg

WIDTH, HEIGHT = 640, 360
FPS = 20  # scrolling 4 px a frame still reads as smooth; each frame costs the encoder the same, full or not
PIXELS_PER_SECOND = 80  # a quarter note at 100 bpm is 48 px: short notes still read as notes
MIN_VIDEO_KBPS = 60  # below this the roll turns to mush: the video is left out instead
CRF = 28  # flat colours on a plain background: a high CRF keeps them sharp and the file small
PRESET = "ultrafast"  # veryfast cost 1.5x the CPU for a 20% smaller file that fits the limit either way
BACKGROUND = (24, 26, 33)
C_LINE = (58, 62, 74)
BLACK_KEY_ROW = (30, 32, 41)
COMPOSED = (91, 141, 239)
SEED = (239, 155, 74)
PLAYHEAD = "0xF2F2F2"
ENCODE_TIMEOUT = 300.0


def video_kbps(seconds: float, max_bytes: int, audio_bytes: int) -> int | None:
    """The video's bit rate cap so that it and `audio_bytes` of sound fit `max_bytes`; None if unwatchable."""
    left = max_bytes / 1.08 - audio_bytes  # 8% for the container and the encoder's rate swings
    kbps = int(min(left * 8 / 1000 / max(seconds, 1.0), 1500))
    return kbps if kbps >= MIN_VIDEO_KBPS else None


def roll_strip(
    events: Sequence[Event],
    tempo: float,
    seconds: float,
    seed_events: int = 0,
    tempos: Sequence[tuple[float, float]] = (),
) -> np.ndarray:
    """The whole piece as one RGB strip (HEIGHT tall), padded by half a frame each side.

    x is time (PIXELS_PER_SECOND, by the performance's tempo map `tempos`, else at `tempo`), y pitch; the
    padding puts the first note under the playhead at 0 s and lets the last one scroll away.
    """
    pad = WIDTH // 2
    width = pad * 2 + int(np.ceil(seconds * PIXELS_PER_SECOND)) + 1
    width += width % 2  # yuv420p wants even sizes; crop keeps WIDTH anyway
    strip = np.empty((HEIGHT, width, 3), np.uint8)
    strip[:] = BACKGROUND
    pitches = [p for e in events for p in e.pitches]
    if not pitches:
        return strip
    low, high = min(pitches) - 2, max(pitches) + 2
    low, high = min(low, 60 - 12), max(high, 60 + 12)  # at least two octaves: one melody line is not a bar
    rows = high - low + 1
    row_h = HEIGHT / rows

    def y_of(pitch: int) -> tuple[int, int]:
        top = HEIGHT - (pitch - low + 1) * row_h
        return int(round(top)), max(int(round(top + row_h)), int(round(top)) + 1)

    for pitch in range(low, high + 1):
        y0, y1 = y_of(pitch)
        if pitch % 12 in (1, 3, 6, 8, 10):
            strip[y0:y1] = BLACK_KEY_ROW
        if pitch % 12 == 0:
            strip[y1 - 1 : y1] = C_LINE
    # Where each note starts and ends on the clock the audio was played by (a performance's tempo map).
    beats = np.array([[e.onset, e.onset + e.duration] for e in events], dtype=float)
    x = pad + np.round(beat_seconds(tempos or [(0.0, tempo)], beats) * PIXELS_PER_SECOND).astype(int)
    for i, e in enumerate(events):
        colour = SEED if i < seed_events else COMPOSED
        x0 = int(x[i, 0])
        x1 = max(int(x[i, 1]) - 1, x0 + 2)
        shade = 0.55 + 0.45 * min(max(e.velocity, 1), 127) / 127
        rgb = tuple(int(c * shade) for c in colour)
        for p in e.pitches:
            y0, y1 = y_of(p)
            strip[y0 + (1 if y1 - y0 > 2 else 0) : y1, x0:x1] = rgb
    return strip


# BT.601, limited range: rows give Y, Cb, Cr from R, G, B in 0-255.
_YUV = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], np.float32
).T / np.float32(255)


def to_yuv420(rgb: np.ndarray) -> bytes:
    """An RGB picture (even sides) as planar YUV 4:2:0: the encoder's own format, converted once here
    instead of once per frame by ffmpeg."""
    y = rgb.reshape(-1, 3).astype(np.float32) @ _YUV[:, :1] + 16
    # Chroma from one pixel of each 2x2 block: the roll is flat colours with edges on whole pixels, so an
    # average would only blur the edges, at three times the cost.
    chroma = rgb[::2, ::2].reshape(-1, 3).astype(np.float32) @ _YUV[:, 1:] + 128
    planes = (y[:, 0], chroma[:, 0], chroma[:, 1])
    return b"".join(np.clip(np.rint(p), 0, 255).astype(np.uint8).tobytes() for p in planes)


def encode_video(strip: np.ndarray, seconds: float, kbps: int, timeout: float = ENCODE_TIMEOUT) -> bytes:
    """H.264 in MP4, no sound: `seconds` of the `strip` from `roll_strip` moving under the playhead."""
    height, width, _ = strip.shape
    with tempfile.TemporaryDirectory(prefix="etude-video-") as tmp:
        raw, out = Path(tmp) / "roll.yuv", Path(tmp) / "v.mp4"
        raw.write_bytes(to_yuv420(strip))
        # One frame, repeated (`loop` clones a reference, it copies nothing); `crop` then only moves a
        # pointer, so each frame costs the playhead's few pixels and the encoder's work.
        graph = (
            f"[0:v]loop=loop=-1:size=1:start=0,setpts=N/({FPS}*TB),"
            f"crop={WIDTH}:{HEIGHT}:x='min(t*{PIXELS_PER_SECOND},{width - WIDTH})':y=0,"
            f"drawbox=x={WIDTH // 2 - 1}:y=0:w=2:h={HEIGHT}:color={PLAYHEAD}:t=fill[v]"
        )
        args = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}", "-i", str(raw)]
        args += ["-filter_complex", graph, "-map", "[v]", "-t", f"{seconds:.3f}", "-r", str(FPS)]
        args += ["-c:v", "libx264", "-preset", PRESET, "-crf", str(CRF), "-maxrate", f"{kbps}k"]
        args += ["-bufsize", f"{kbps * 2}k", "-g", str(FPS * 5), "-pix_fmt", "yuv420p", "-f", "mp4", str(out)]
        _ffmpeg(args, timeout)
        return out.read_bytes()


def mux(video: bytes, ogg: bytes, timeout: float = 60.0) -> bytes:
    """The silent `video` with the Opus stream of `ogg`, copied, not encoded again.

    AAC would play on more old phones, but ffmpeg's AAC encoder took 3.6 CPU seconds for a 3-minute piece;
    copying the listening copy's Opus takes 0.06. Opus in MP4 plays in Discord, browsers, Android and iOS 17+.
    """
    with tempfile.TemporaryDirectory(prefix="etude-mux-") as tmp:
        v, a, out = Path(tmp) / "v.mp4", Path(tmp) / "a.ogg", Path(tmp) / "out.mp4"
        v.write_bytes(video)
        a.write_bytes(ogg)
        args = ["-i", str(v), "-i", str(a), "-map", "0:v", "-map", "1:a", "-c", "copy", "-shortest"]
        _ffmpeg([*args, "-movflags", "+faststart", "-f", "mp4", str(out)], timeout)
        return out.read_bytes()


def _ffmpeg(args: list[str], timeout: float) -> None:
    run_ffmpeg(["-y", *args], timeout, "making the video took too long", "ffmpeg failed on the video")
