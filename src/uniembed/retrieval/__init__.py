"""Search what you embed: scores, compression, Qdrant-backed stores and an index over them
(docs/search.md). Nothing in the core (``models/``, ``embedder.py``, the embeddings server) imports
this package.

``Index`` and ``open_index`` are imported on first use, so ``import uniembed.retrieval.scores``
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
