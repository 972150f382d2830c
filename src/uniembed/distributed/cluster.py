"""Joining or starting a Ray cluster."""

from __future__ import annotations

from types import ModuleType

from uniembed._optional import require
from uniembed.errors import InvalidInput

LOCAL = "local"  # --ray local: start a single-node cluster inside this process


def connect(address: str | None = LOCAL) -> ModuleType:
    """The ``ray`` module, initialised: ``"local"`` (or ``None``) starts a cluster in this process,
    ``"auto"`` joins the one running on this node, ``"HOST:6379"`` or ``"ray://HOST:10001"`` a
    remote one. A process already connected stays connected to its cluster."""
    ray = require("ray", "ray", "running on Ray")
    if not ray.is_initialized():
        try:
            ray.init(address=None if address in (None, LOCAL) else address, log_to_driver=False)
        except ConnectionError as exc:
            raise InvalidInput(
                f"cannot join the Ray cluster at {address!r} ({exc}): is it running, with this "
                "Ray version? With token authentication, set RAY_AUTH_MODE=token and give this "
                "machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN)"
            ) from exc
    return ray
