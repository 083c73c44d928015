"""Import TensorFlow quietly: its import-time banner would break the one-line error rule of the CLI."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def quiet_import():
    """`tensorflow`, imported with the C++ logger's start-up lines sent to /dev/null."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture, a notebook)
        import tensorflow

        return tensorflow
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        import keras  # noqa: F401  (its import is where the banner comes from, too)
        import tensorflow
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)
    return tensorflow
