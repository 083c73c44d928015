"""Settings: the one place that reads the environment (and `.env`). Every field is in `.env.example`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.music.midi import SeedLimits
from bot.options import MAX_LENGTH


class Environment(BaseSettings):
    """What every process reads before anything else loads: the Keras backend and the cache folder.

    Read apart from `Settings` (which holds these too) so that a bad bot limit in `.env` cannot stop
    `etude train` or `etude compose` from choosing its backend.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
        protected_namespaces=(),
    )

    # "tensorflow" or "jax"; unset, bot.model.backend chooses by what is installed.
    keras_backend: str | None = None
    # CPU threads a process that serves requests (a worker, `etude compose`) computes on: see
    # `bot.model.backend.serving`.
    sampler_threads: int = Field(1, ge=1)
    etude_cache: str | None = None
    xdg_cache_home: str | None = None

    @property
    def cache_folder(self) -> Path:
        """`ETUDE_CACHE`, else `$XDG_CACHE_HOME/etude`, else ~/.cache/etude: parsed corpora and the like."""
        if self.etude_cache:
            return Path(self.etude_cache)
        return Path(self.xdg_cache_home or Path.home() / ".cache") / "etude"


class Settings(Environment):
    discord_token: SecretStr | None = None
    discord_guild_id: int | None = None
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    redis_url: str | None = None
    model_dir: str | None = None
    soundfont: str | None = None
    state_dir: str | None = None

    seed_max_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    seed_max_notes: int = Field(4096, ge=16)
    seed_max_seconds: float = Field(20 * 60, gt=0)
    seed_parse_seconds: float = Field(5.0, gt=0)
    max_length: int = Field(MAX_LENGTH, ge=1, le=MAX_LENGTH)
    queue_max: int = Field(50, ge=1)
    user_max_running: int = Field(1, ge=1)
    user_max_waiting: int = Field(2, ge=0)
    # Unset: chosen by the worker for the device its model runs on (see `Worker.start` and
    # bot.model.backend.default_batching).
    batch_size: int | None = Field(None, ge=1)
    batch_wait_ms: int | None = Field(None, ge=0)
    # The length the sampler is compiled for before the worker reports ready (the default length unless
    # set): requests whose length needs the same buffer are warm from the first.
    warm_length: int | None = Field(None, ge=1, le=MAX_LENGTH)
    job_timeout_seconds: float = Field(600, gt=0)
    reclaim_seconds: float = Field(15.0, gt=0)
    stop_deadline_seconds: float = Field(30.0, ge=0)
    delivery_keep_seconds: float = Field(3600.0, ge=0)
    seed_store_max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024)
    embedded_result_seconds: float = Field(900.0, gt=0)
    health_port: int | None = None
    render_processes: int | None = Field(None, ge=1)
    render_timeout_seconds: float = Field(120.0, gt=0)

    def seed_limits(self) -> SeedLimits:
        return SeedLimits(
            max_bytes=self.seed_max_bytes,
            max_notes=self.seed_max_notes,
            max_seconds=self.seed_max_seconds,
            parse_seconds=self.seed_parse_seconds,
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
