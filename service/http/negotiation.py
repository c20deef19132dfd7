"""Content negotiation: which of a task's media types the client's ``Accept`` prefers."""

from __future__ import annotations

from typing import Sequence

from fastapi import Request

from service.errors import NotAcceptable, shown
from service.tasks.common import JSON


def _accept_ranges(accept: str) -> list[tuple[str, str, float]]:
    """``(type, subtype, q)`` of each media range of an ``Accept`` header."""
    ranges = []
    for part in accept.split(","):
        media, *params = part.strip().split(";")
        kind, _, sub = media.strip().lower().partition("/")
        if not kind:
            continue
        q = 1.0
        for p in params:
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 1.0
        ranges.append((kind, sub or "*", q))
    return ranges


def negotiate(request: Request, offered: Sequence[str] = (JSON,)) -> str:
    """The media type of ``offered`` the client's ``Accept`` prefers (the most specific matching
    range gives each its q; ties go to the order of ``offered``); 406 when none is acceptable.
    No ``Accept`` header accepts anything."""
    accept = request.headers.get("accept", "").strip()
    if not accept:
        return offered[0]
    ranges = _accept_ranges(accept)
    best, best_q = None, 0.0
    for media in offered:
        kind, _, sub = media.partition("/")
        matches = [(int(k != "*") + int(s != "*"), q) for k, s, q in ranges
                   if k in ("*", kind) and s in ("*", sub)]
        q = max(matches)[1] if matches else 0.0
        if q > best_q:
            best, best_q = media, q
    if best is None:
        raise NotAcceptable(
            f"{request.url.path} answers {' or '.join(offered)}; Accept was {shown(accept, 200)}"
        )
    return best
