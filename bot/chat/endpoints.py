"""Point discord.py at another REST base and gateway: a rate-limit proxy, or the local fake in the tests.

discord.py 2.x has no constructor option or subclass hook for either address, so this module sets the two
class attributes it reads them from, and nothing else:

- ``discord.http.Route.BASE``: every REST call, the interaction webhooks included
  (``discord.webhook.async_`` builds its routes with the same ``Route``), is ``Route.BASE + path``, read
  when the route is built. discord.py's own ``_set_api_version`` changes the API version by setting it.
- ``discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY``: ``Client.connect`` opens its first connection, and
  every fresh IDENTIFY after an invalidated session, there; it does not ask GET /gateway/bot (only
  ``AutoShardedClient`` without a shard count does, and that call goes to ``Route.BASE`` too). Resumes use
  READY's ``resume_gateway_url``, which the other side supplies.

Attachment and other CDN addresses are not touched: discord.py downloads what the payloads' ``url`` says.
"""

from __future__ import annotations

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

# Discord's own addresses, as discord.py had them when this module was first imported.
DISCORD_API_BASE: str = Route.BASE
DISCORD_GATEWAY_URL: str = str(DiscordWebSocket.DEFAULT_GATEWAY)


def apply_endpoints(api_base: str | None, gateway_url: str | None) -> None:
    """Point discord.py at another REST base (e.g. http://127.0.0.1:PORT/api/v10) and gateway
    (ws://127.0.0.1:PORT/gateway). None leaves Discord's own.

    Process-wide: it affects every client in this process, so call it before ``Client.start``.
    """
    base = DISCORD_API_BASE if api_base is None else api_base.rstrip("/")
    gateway = yarl.URL(DISCORD_GATEWAY_URL if gateway_url is None else gateway_url)
    if yarl.URL(base).scheme not in ("http", "https") or not yarl.URL(base).host:
        raise ValueError(f"API base must be an http(s) URL, got {api_base!r}")
    if gateway.scheme not in ("ws", "wss") or not gateway.host:
        raise ValueError(f"gateway URL must be a ws(s) URL, got {gateway_url!r}")
    # discord.py adds ?v=&encoding=&compress= itself with URL.with_query, which would drop ours anyway.
    gateway = gateway.with_query(None)
    # Class attributes, not instance ones: discord.py reads both through the class (Route(...) objects are
    # built per request, and from_client is a classmethod), and there is no option to pass them in.
    Route.BASE = base
    DiscordWebSocket.DEFAULT_GATEWAY = gateway


def current_endpoints() -> tuple[str, str]:
    """The REST base and gateway discord.py uses now, so a caller can put them back later."""
    return Route.BASE, str(DiscordWebSocket.DEFAULT_GATEWAY)
