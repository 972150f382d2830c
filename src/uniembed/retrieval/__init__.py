"""Search what you embed: Qdrant-backed stores and an index over them (docs/search.md); the scores
and codecs it runs are the floor's (:mod:`uniembed.core`). Nothing beneath it (``core/``,
``models/``, the engine, ``embedder.py``) imports this package.

``Index`` and ``open_index`` are imported on first use, so ``import uniembed.retrieval.store``
stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Index", "open_index"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from uniembed.retrieval import index

        return getattr(index, name)
    raise AttributeError(f"module 'uniembed.retrieval' has no attribute {name!r}")
