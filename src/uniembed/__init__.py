"""uniembed: self-hosted universal embeddings (jina-embeddings-v4 and v3).

Example (needs the weights)::

    import uniembed
    model = uniembed.load("jinaai/jina-embeddings-v4")   # or a local snapshot directory
    q = model.encode_text(["how do solar panels work"], task="retrieval", prompt_name="query")
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from uniembed.loader import load
from uniembed.models import DEFAULT_MODEL

if TYPE_CHECKING:
    from uniembed.retrieval.index import Index

__version__ = "0.1.0"


def index(location: str | os.PathLike[str], model: Any = None, **options: Any) -> Index:
    """Open the search index at ``location`` (a directory or ``http(s)://host:port/collection``), or
    create it with ``model`` (an embedder, a path or a hub id) and ``options`` when there is none;
    see :class:`uniembed.retrieval.index.Index` and docs/search.md."""
    from uniembed.retrieval.index import open_index

    return open_index(location, model, **options)


__all__ = ["DEFAULT_MODEL", "__version__", "index", "load"]
