"""Where an index's store lives, and the one place that picks its adapter:

* a directory path → :class:`~uniembed.retrieval.edge_store.EdgeStore` (qdrant-edge-py, in process);
* ``http(s)://host:port[/collection]`` → :class:`~uniembed.retrieval.client_store.ClientStore`
  (qdrant-client: a Qdrant server or cluster; sharding and replication are Qdrant's), or a
  collection on a ``client`` the caller made (e.g. qdrant-client's local mode).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uniembed.errors import InvalidInput
from uniembed.retrieval.store import Layout, Store


@dataclass
class StoreLocation:
    """Where an index lives: a directory, or a Qdrant URL with its collection."""

    path: Path | None = None
    url: str | None = None
    collection: str = "uniembed"

    @classmethod
    def parse(cls, location: str | Path) -> StoreLocation:
        """A path, or ``http(s)://host:port[/collection]`` (default collection ``uniembed``).

        >>> StoreLocation.parse("http://qdrant:6333/pages").url, StoreLocation.parse("http://q:6333/pages").collection
        ('http://qdrant:6333', 'pages')
        >>> StoreLocation.parse("/data/index").path
        PosixPath('/data/index')
        """
        text = str(location)
        if text.startswith(("http://", "https://")):
            scheme, rest = text.split("://", 1)
            host, _, path = rest.partition("/")
            collection = path.strip("/") or "uniembed"
            if "/" in collection:
                raise InvalidInput(f"index URL {text!r}: give http(s)://host:port/collection")
            return cls(url=f"{scheme}://{host}", collection=collection)
        return cls(path=Path(text).expanduser())


def create_store(
    location: str | Path, layout: Layout, manifest: Mapping[str, Any], client: Any = None
) -> Store:
    """Create an empty index store at ``location`` (a directory or a Qdrant URL; with ``client``,
    the collection of that name on it)."""
    if client is not None:
        return _client_store().create(client, str(location), layout, manifest)
    where = StoreLocation.parse(location)
    if where.path is not None:
        return _edge_store().create(where.path, layout, manifest)
    store = _client_store()
    return store.create(store.connect(where.url), where.collection, layout, manifest)


def open_store(location: str | Path, client: Any = None) -> Store:
    """Open the index store at ``location`` (as :func:`create_store`); raises
    :class:`InvalidInput` when there is none."""
    if client is not None:
        return _client_store().open(client, str(location))
    where = StoreLocation.parse(location)
    if where.path is not None:
        return _edge_store().open(where.path)
    store = _client_store()
    return store.open(store.connect(where.url), where.collection)


def store_exists(location: str | Path, client: Any = None) -> bool:
    """Whether an index already lives at ``location`` (as :func:`create_store`)."""
    if client is not None:
        return bool(client.collection_exists(str(location)))
    where = StoreLocation.parse(location)
    if where.path is not None:
        return _edge_store().exists(where.path)
    return bool(_client_store().connect(where.url).collection_exists(where.collection))


def _edge_store() -> Any:
    from uniembed.retrieval.edge_store import EdgeStore  # qdrant-edge is imported on first use

    return EdgeStore


def _client_store() -> Any:
    from uniembed.retrieval.client_store import ClientStore  # qdrant-client likewise

    return ClientStore
