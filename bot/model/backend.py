"""The one module that knows which Keras backend runs: TensorFlow (default) or JAX, set by `KERAS_BACKEND`.

Everything else uses Keras 3 alone (`keras.ops`, the layers, `keras.saving`). Only the sampler's loop is
compiled here, because each backend compiles a whole loop its own way: `tf.function` (with XLA when asked)
under TensorFlow, `jax.jit` with the loop's length as a static argument under JAX. TensorFlow is imported
only when it is the backend.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

from bot.settings import Environment

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _default() -> str:
    """TensorFlow, the documented default; JAX where only JAX is installed (`scripts/setup.sh jax`)."""
    from importlib.util import find_spec

    if find_spec("tensorflow") is None and find_spec("jax") is not None:
        return "jax"
    return "tensorflow"


# Keras reads KERAS_BACKEND from the environment when it is first imported (else ~/.keras/keras.json), so
# the setting (from the environment or .env) is written back there before anything imports Keras.
_ENVIRONMENT = Environment()
_BACKEND = _ENVIRONMENT.keras_backend or _default()
os.environ["KERAS_BACKEND"] = _BACKEND
_serving_threads: int | None = None  # the CPU threads `serving()` asked for, before the backend loaded

BACKENDS = ("tensorflow", "jax")


def name() -> str:
    """The backend this process uses."""
    return _BACKEND


def _check() -> str:
    from bot.errors import EtudeError

    if name() not in BACKENDS:
        raise EtudeError(f"KERAS_BACKEND={name()!r} is not supported; use {' or '.join(BACKENDS)}")
    from importlib.util import find_spec

    if find_spec(name()) is None:  # the bot's image has no backend: its models run on `etude worker`s
        raise EtudeError(
            f"{name()} is not installed, so no model runs here: install an extra (cpu, gpu, jax or jax-gpu), "
            "or set REDIS_URL and run `etude worker`s"
        )
    return name()


def serving() -> None:
    """Make this process one that serves requests (a worker, `etude compose`): under TensorFlow it computes
    on `SAMPLER_THREADS` CPU threads (default 1). Call it before anything loads the backend; training and
    evaluation never call it and use every core.

    One thread, because the sampler's loop is a long chain of small steps: at one request, two threads
    hand each step's pieces from core to core, which costs more than sharing them saves (500 notes at
    batch 1 take 0.29 s on one thread of a 2-core VM, 0.49 s on two). A worker's rendering wants the other
    cores anyway: its jobs per second are the same on one thread as on two. More requests at once on more
    cores come from more workers, one per core. JAX sizes its own thread pool; this changes nothing there.
    """
    global _serving_threads
    if "keras" in sys.modules:  # too late to size the pools; say so rather than pretend
        import logging

        logging.getLogger(__name__).warning("the backend loaded before serving(): SAMPLER_THREADS unused")
        return
    if name() == "tensorflow" and "TF_NUM_INTRAOP_THREADS" not in os.environ:
        _serving_threads = _ENVIRONMENT.sampler_threads


def compute_threads() -> int:
    """How many CPU threads the backend computes one call on (the sampler's shards on a CPU follow it)."""
    keras()
    if name() == "tensorflow":
        import tensorflow as tf

        return tf.config.threading.get_intra_op_parallelism_threads() or (os.cpu_count() or 1)
    return os.cpu_count() or 1


def keras():
    """`keras`, on the chosen backend; TensorFlow's start-up lines on stderr are swallowed."""
    if "keras" not in sys.modules and _check() == "tensorflow":
        _quiet_import_tensorflow()
        if _serving_threads:  # before TensorFlow runs anything: its pools are sized once
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(_serving_threads)
    import keras

    if name() == "jax" and "tensorflow" not in sys.modules:
        _keep_tensorflow_out()
    return keras


def _keep_tensorflow_out() -> None:
    """Under JAX, stop Keras from importing an installed TensorFlow (seconds and hundreds of MiB) just to
    ask, while saving a model, whether an object is one of TensorFlow's types: none of ours is."""
    try:
        from keras.src.utils import module_utils
    except ImportError:  # a Keras without this lazy module does not have the problem either
        return
    lazy = getattr(module_utils, "tensorflow", None)
    if lazy is not None and getattr(lazy, "module", None) is None and hasattr(lazy, "_available"):
        lazy._available = False


def _quiet_import_tensorflow() -> None:
    """Import TensorFlow with the C++ logger's banner sent to /dev/null: it would break the CLI's one-line
    error rule."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (pytest capture, a notebook)
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        import keras  # noqa: F401  (its import is where the banner comes from, too)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def accelerator() -> str | None:
    """The first GPU's name, or None when the backend runs on the CPU."""
    keras()
    if name() == "jax":
        import jax

        dev = jax.devices()[0]
        return None if dev.platform == "cpu" else str(getattr(dev, "device_kind", dev.platform))
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return str(details.get("device_name", gpus[0].name))


# Requests sampled together and how long the first waits for company. A GPU step costs about the same for
# one request as for hundreds, so it wants hundreds; a CPU's cost grows with the batch, so a few will do.
GPU_BATCH, GPU_WAIT_MS = 256, 50
CPU_BATCH, CPU_WAIT_MS = 16, 20


def default_batching() -> tuple[int, int]:
    """(batch size, wait in ms) for the device this backend runs on."""
    return (GPU_BATCH, GPU_WAIT_MS) if accelerator() else (CPU_BATCH, CPU_WAIT_MS)


def describe() -> str:
    """One line for logs and the bench: backend, its version, the device."""
    k = keras()
    if name() == "jax":
        import jax

        version = f"JAX {jax.__version__}"
    else:
        import tensorflow as tf

        version = f"TensorFlow {tf.__version__}"
    device = accelerator()
    if device is None:
        threads = compute_threads()
        device = f"CPU, {threads} compute thread{'s' if threads != 1 else ''}"
    return f"Keras {k.__version__} on {version}, device: {device}"


def compile_loop(fn: Callable, params, jit: bool = True) -> Callable:
    """`fn(params, *arrays, steps)` compiled once per shape, returned as `call(*arrays, steps)` -> numpy.

    `params` (a nested structure of weight arrays) is put on the device once and stays there; `steps` is
    a Python int that sizes the loop's output buffer, a static value for the compiler; `call.reload(params)`
    swaps in new arrays of the same shapes without compiling again. `jit` chooses XLA
    under TensorFlow; JAX always compiles (op by op from Python would be far too slow to offer). The
    returned call's `traces()` counts the shapes compiled so far.
    """
    import numpy as np

    keras()
    traces = [0]  # how many shapes were compiled: Python runs `fn` once per trace, on either backend

    def traced_fn(*args):
        traces[0] += 1
        return fn(*args)

    if name() == "jax":
        import jax

        on_device = [jax.tree_util.tree_map(jax.numpy.asarray, params)]
        compiled = jax.jit(traced_fn, static_argnums=(_arity(fn) - 1,))

        def call_jax(*args):
            return jax.tree_util.tree_map(np.asarray, compiled(on_device[0], *args))

        def reload_jax(new_params) -> None:  # arguments, not constants: the compiled loop is kept
            on_device[0] = jax.tree_util.tree_map(jax.numpy.asarray, new_params)

        call_jax.traces = lambda: traces[0]
        call_jax.reload = reload_jax
        return call_jax

    import tensorflow as tf

    # Variables, not constants: the graph refers to the weights instead of copying them into itself.
    held = tf.nest.map_structure(lambda w: tf.Variable(w, trainable=False), params)
    # No autograph: the loop is written with `keras.ops.while_loop` and has no Python control flow on
    # tensors to convert, and converting its body costs part of every compile.
    traced = tf.function(
        lambda *args: traced_fn(held, *args), jit_compile=jit, reduce_retracing=True, autograph=False
    )

    def call_tf(*args):
        *arrays, steps = args
        out = traced(*[tf.constant(a) for a in arrays], steps)
        return tf.nest.map_structure(lambda t: t.numpy(), out)

    def reload_tf(new_params) -> None:  # the graph reads the variables: assigned, nothing is traced again
        tf.nest.map_structure(lambda var, w: var.assign(w), held, new_params)

    call_tf.traces = lambda: traces[0]
    call_tf.reload = reload_tf
    return call_tf


def _arity(fn: Callable) -> int:
    import inspect

    return len(inspect.signature(fn).parameters)


def machine_name() -> str:
    """This machine as a card or a benchmark names it: cores and CPU model."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU ({cpu})"
