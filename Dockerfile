# Étude images, three targets from one file:
#   docker build --target bot        -t etude-bot .         the Discord bot, CPU TensorFlow
#   docker build --target worker-gpu -t etude-worker-gpu .  a GPU worker, CUDA TensorFlow from pip
#   docker build --target worker-jax-gpu -t etude-worker-jax-gpu .  a GPU worker, CUDA JAX from pip
# compose.yaml builds both. The shipped model (models/etude-chorales) is baked in; train it before building.

FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SOUNDFONT=/usr/share/sounds/sf2/FluidR3_GM.sf2 \
    MODEL_DIR=/app/models/etude-chorales \
    STATE_DIR=/data

# FluidSynth renders the .wav; fluid-soundfont-gm is a full General MIDI soundfont (FluidR3_GM.sf2).
# DL3008 (unpinned apt packages) is ignored: they come from the base image's Debian release, bookworm,
# which only takes security fixes, and exact versions would break the build at each point release.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        fluidsynth fluid-soundfont-gm \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user; /data holds the bot's small state (STATE_DIR) and belongs to it, so a named
# volume mounted there starts out writable.
RUN groupadd --system --gid 10001 etude \
    && useradd --system --uid 10001 --gid etude --create-home --home-dir /home/etude \
        --shell /usr/sbin/nologin etude \
    && mkdir -p /data \
    && chown etude:etude /data

WORKDIR /app


# ---- the Discord bot: CPU TensorFlow; /healthz and /metrics on 8080 ----
FROM base AS bot

# Dependencies first, from pyproject.toml alone, so a change to the source reuses this (large) layer.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['cpu']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY models/ models/
RUN test -f models/etude-chorales/model.keras \
    || { echo "models/etude-chorales/model.keras is missing: train the shipped model before building" >&2; exit 1; }
COPY README.md ./
COPY bot/ bot/
# The package itself (its dependencies are installed above); then a check, with the current folder kept
# off sys.path (-P), that the installed package, not the source folder, has every module the bot imports.
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -P -c "import bot.cli, bot.chat.client, bot.chat.commands, bot.queue.worker"

ENV HEALTH_PORT=8080
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], timeout=4)"]
CMD ["etude", "bot"]


# ---- a GPU worker: tensorflow[and-cuda] brings its own CUDA and cuDNN libraries from pip, so the host
# needs only the NVIDIA driver and the NVIDIA Container Toolkit; /healthz and /metrics on 8081 ----
FROM base AS worker-gpu

ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['gpu']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY models/ models/
RUN test -f models/etude-chorales/model.keras \
    || { echo "models/etude-chorales/model.keras is missing: train the shipped model before building" >&2; exit 1; }
COPY README.md ./
COPY bot/ bot/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -P -c "import bot.cli, bot.queue.worker"

ENV HEALTH_PORT=8081
EXPOSE 8081
USER 10001:10001
# The health server starts once the model is loaded on the GPU: allow for that in the start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], timeout=4)"]
CMD ["etude", "worker"]


# ---- a GPU worker on JAX: jax[cuda12] brings its own CUDA and cuDNN libraries from pip, like the TensorFlow
# worker above, and needs the same of the host; the same model folder loads on either backend ----
FROM base AS worker-jax-gpu

ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    KERAS_BACKEND=jax

COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['jax-gpu']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY models/ models/
RUN test -f models/etude-chorales/model.keras \
    || { echo "models/etude-chorales/model.keras is missing: train the shipped model before building" >&2; exit 1; }
COPY README.md ./
COPY bot/ bot/
# The import check also holds the JAX image to its promise: no TensorFlow anywhere on the worker's path.
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info \
    && python -P -c "import sys, bot.cli, bot.queue.worker; from bot.model import backend; backend.keras(); assert 'tensorflow' not in sys.modules"

ENV HEALTH_PORT=8081
EXPOSE 8081
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['HEALTH_PORT'], timeout=4)"]
CMD ["etude", "worker"]
