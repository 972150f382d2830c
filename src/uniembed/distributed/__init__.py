"""Scale-out on Ray (``pip install 'uniembed[ray]'``): the bulk job on an actor pool
(:mod:`~uniembed.distributed.bulk`, ``uniembed embed --ray``) and the HTTP service on Ray Serve
replicas (:mod:`~uniembed.distributed.serve`, ``uniembed serve --ray``).

Both reuse the single-process code whole: the bulk job's reading, resume, writing and errors file
run on the driver and only the encoding of chunks moves to actors; every Serve replica runs the same
FastAPI application as ``uniembed serve``, with its own model and engine. Nothing here is imported
by the core. See docs/distributed.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ActorPool": "bulk",
    "ModelSpec": "bulk",
    "RayEncoder": "bulk",
    "ServeScaling": "serve",
    "connect": "cluster",
    "serve_application": "serve",
    "serve_on_ray": "serve",
}
__all__ = [
    "ActorPool",
    "ModelSpec",
    "RayEncoder",
    "ServeScaling",
    "connect",
    "serve_application",
    "serve_on_ray",
]


def __getattr__(name: str) -> Any:
    """Import a submodule when one of its names is first used (``uniembed --help`` stays fast)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
