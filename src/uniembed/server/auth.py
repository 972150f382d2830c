"""Optional bearer-token authentication, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fastapi import Request

from uniembed.server.errors import Unauthorized

UNAUTHORIZED_MESSAGE = "missing or invalid API key"


def key_matches(presented: str, keys: Sequence[str]) -> bool:
    """True when ``presented`` equals one of ``keys``.

    Every key is compared (``hmac.compare_digest``, no early exit), so the time taken does not tell
    which key, or how much of one, matched.

    >>> key_matches("b", ["a", "b"]), key_matches("c", ["a", "b"])
    (True, False)
    """
    token = presented.encode("utf-8")
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key.encode("utf-8"))
    return found


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive).

    >>> bearer_token("Bearer abc"), bearer_token("Basic abc"), bearer_token(None)
    ('abc', None, None)
    """
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class ApiKeyCheck:
    """A FastAPI dependency: passes when no keys are configured or the request carries one of
    them."""

    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = tuple(keys)

    async def __call__(self, request: Request) -> None:
        if not self.keys:
            return
        token = bearer_token(request.headers.get("authorization"))
        if token is None or not key_matches(token, self.keys):
            raise Unauthorized(UNAUTHORIZED_MESSAGE)
