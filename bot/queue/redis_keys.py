"""Redis mode's common ground: every key the bot and the workers share, the errors that mean Redis is away,
and clients that wait out a restart of Redis.

Connection failures are retried by redis-py's own `Retry` with exponential backoff, set on every client.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

STREAM = "etude:jobs"
GROUP = "etude-workers"
PENDING = "etude:pending"  # hash job_id -> job spec JSON, kept by the bot until the user is answered
KICKED = "etude:kicked"  # hash job_id -> 1 once the job is in the stream
DELIVERED = "etude:delivered:"  # marker set once a job's user has the answer: nobody answers it again
PROGRESS = "etude:progress:"
WORKERS = "etude:workers"  # hash worker name -> last heartbeat (epoch seconds)
SET_ASIDE = "etude:set-aside"  # stream of poison jobs for an operator (no token)
STARTS = "etude:starts"  # hash job_id -> times a worker started it; gone when the job is acknowledged
RESULT = "etude:result:"  # hash per finished job: `meta` (JSON) and `file:<i>` (raw bytes), until forgotten

DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def retry(attempts: int = 30) -> Retry:
    """redis-py's retry with exponential backoff (0.1 s doubling to 2 s): about a minute for 30 tries."""
    return Retry(ExponentialBackoff(cap=2.0, base=0.1), attempts)


def client(url: str, attempts: int = 30) -> Redis:
    """A Redis client that waits out a restart of Redis (connection errors are retried with backoff)."""
    return Redis.from_url(
        url, retry=retry(attempts), retry_on_error=[RedisConnectionError, RedisTimeoutError]
    )
