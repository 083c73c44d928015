"""Rendering one piece for a reply: every file of the piece within the user's upload limit, in the worker's
render processes, falling back to the `.mid` alone when the audio cannot be made."""

from __future__ import annotations

import logging

from bot.errors import RenderError
from bot.model.composer import Composition
from bot.queue.jobs import ResultFile
from bot.render.files import RenderRequest, midi_only, render_here
from bot.render.pool import RenderPool, render_on

log = logging.getLogger(__name__)


def render_for_limit(
    piece: Composition,
    limit: int,
    renderer: RenderPool | None = None,
    *,
    video: bool = False,
    soundfont: str | None = None,
) -> tuple[list[ResultFile], str]:
    """The piece's files, each within `limit` bytes, and a note on what was reduced (`render_piece` decides).

    With a `renderer` the work runs in its warm processes; without one, in this process. A render that
    fails, hangs or crashes costs only the audio: the user still gets the `.mid` and one line saying why.
    """
    request = RenderRequest.of(piece, limit, video)
    try:
        if renderer is not None:
            rendered = render_on(renderer, request)
        else:
            rendered = render_here(request, soundfont)
    except RenderError as e:
        log.warning("render of %s failed: %s", piece.name, e)
        rendered = midi_only(request, str(e))
    files = [ResultFile(f.name, f.data, f.content_type) for f in rendered.files]
    return files, rendered.note
