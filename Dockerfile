# Étude images, three targets from one file:
#   docker build --target bot        -t etude-bot .         the Discord bot (Redis mode: no Keras backend)
#   docker build --target worker-gpu -t etude-worker-gpu .  a GPU worker, CUDA TensorFlow from pip
#   docker build --target worker-jax-gpu -t etude-worker-jax-gpu .  a GPU worker, CUDA JAX from pip
# compose.yaml builds both. The shipped model (models/etude-chorales) is baked in; train it before building.
# Each target is its own dependencies (its lock file, requirements/<target>.txt, written by scripts/lock.sh
# from pyproject.toml), then the `package` stage's checked model and wheel, then its import check and how
# it runs.

FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SOUNDFONT=/usr/share/sounds/sf2/FluidR3_GM.sf2 \
    MODEL_DIR=/app/models/etude-chorales \
    STATE_DIR=/data

# FluidSynth (its library, through pyfluidsynth) plays the piece; ffmpeg encodes the .ogg, .wav and .mp4;
# fluid-soundfont-gm is a full General MIDI soundfont (FluidR3_GM.sf2).
# DL3008 (unpinned apt packages) is ignored: they come from the base image's Debian release, bookworm,
# which only takes security fixes, and exact versions would break the build at each point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        fluidsynth fluid-soundfont-gm ffmpeg \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user; /data holds the bot's small state (STATE_DIR) and belongs to it, so a named
# volume mounted there starts out writable.
RUN groupadd --system --gid 10001 etude \
    && useradd --system --uid 10001 --gid etude --create-home --home-dir /home/etude \
        --shell /usr/sbin/nologin etude \
    && mkdir -p /data \
    && chown etude:etude /data

WORKDIR /app

# Each target's exact versions, copied before the source so that a change to it reuses the (large) layer
# that installs them.
COPY requirements/ requirements/


# ---- the package, built once as a wheel for every target, and the shipped model it needs ----
FROM base AS package

COPY models/ models/
RUN test -f models/etude-chorales/model.keras \
    || { echo "models/etude-chorales/model.keras is missing: train the shipped model before building" >&2; exit 1; }
COPY pyproject.toml README.md ./
COPY bot/ bot/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .


# ---- the Discord bot in Redis mode (REDIS_URL, as compose.yaml sets it): it queues jobs for `etude worker`s
# and loads no model, so no Keras backend is installed; /healthz and /metrics on 8080 ----
FROM base AS bot

RUN pip install --no-cache-dir -r requirements/bot.txt
COPY --from=package /app/models/ models/
# The package from its wheel (its dependencies are installed above); then a check, with the current folder
# kept off sys.path (-P), that the installed package has every module the bot imports in Redis mode, and
# that none of them brings TensorFlow or music21.
RUN --mount=type=bind,from=package,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl \
    && python -P -c "import sys, bot.cli, bot.chat.client, bot.chat.commands, bot.chat.harmonize, bot.queue.journal, bot.queue.streams, bot.queue.redis_state; assert not {'tensorflow', 'jax', 'music21'} & set(sys.modules)"

ENV HEALTH_PORT=8080
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], timeout=4)"]
CMD ["etude", "bot"]


# ---- what both GPU workers share: their pip packages bring their own CUDA and cuDNN libraries, so the host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit; /healthz and /metrics on 8081 ----
FROM base AS worker-base

ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HEALTH_PORT=8081
EXPOSE 8081
# /healthz answers 503 until Redis answers and the model is loaded on the GPU: the start period allows for it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], timeout=4)"]
CMD ["etude", "worker"]


# ---- a GPU worker on TensorFlow: tensorflow[and-cuda] ----
FROM worker-base AS worker-gpu

RUN pip install --no-cache-dir -r requirements/worker-gpu.txt
COPY --from=package /app/models/ models/
RUN --mount=type=bind,from=package,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl \
    && python -P -c "import bot.cli, bot.queue.streams, bot.worker.worker, bot.model.harmonize"
USER 10001:10001


# ---- a GPU worker on JAX: jax[cuda12]; the same model folder loads on either backend ----
FROM worker-base AS worker-jax-gpu

ENV KERAS_BACKEND=jax
RUN pip install --no-cache-dir -r requirements/worker-jax-gpu.txt
COPY --from=package /app/models/ models/
# The import check also holds the JAX image to its promise: no TensorFlow anywhere on the worker's path.
RUN --mount=type=bind,from=package,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-deps /wheels/*.whl \
    && python -P -c "import sys, bot.cli, bot.worker.worker; from bot.model import backend; backend.keras(); assert 'tensorflow' not in sys.modules"
USER 10001:10001
