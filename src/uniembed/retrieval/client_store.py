"""The server store: a collection on a Qdrant server or cluster, through qdrant-client.

A thin adapter: the layout, searches and filters come from :mod:`uniembed.retrieval.store`; this
module only says them in qdrant-client's types. The index manifest is the collection's metadata
(``{"uniembed": …}``). Tested against qdrant-client's local mode (``QdrantClient(path=…)`` or
``":memory:"``), which speaks the same client API as a server: no Qdrant server can be installed
from the package registries reachable where this was built.

Every :meth:`ClientStore.upsert` is one request (``wait=True``): Qdrant applies a request as one
operation. Very large documents make large requests: Qdrant's default limit is 32 MB of JSON (about
20 pages of ~800 × 128-d multi-vectors); raise ``service.max_request_size_mb`` for bigger ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from uniembed._optional import require
from uniembed.errors import InvalidInput
from uniembed.retrieval.filters import Condition, MatchAny, build_filter
from uniembed.retrieval.store import (
    DENSE,
    MULTI,
    MUVERA,
    Found,
    Layout,
    Point,
    Search,
    found_from,
    point_vectors,
)

METADATA_KEY = "uniembed"


def _models() -> Any:
    return require("qdrant_client.models", "search", "a Qdrant server index (qdrant-client)")


class ClientDialect:
    """Filter conditions in qdrant-client's types."""

    def __init__(self) -> None:
        self.m = _models()

    def match(self, key: str, value: str | int | bool) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchValue(value=value))

    def match_any(self, key: str, values: Sequence[str] | Sequence[int]) -> Any:
        return self.m.FieldCondition(key=key, match=self.m.MatchAny(any=list(values)))

    def range(
        self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None
    ) -> Any:
        return self.m.FieldCondition(key=key, range=self.m.Range(gte=gte, gt=gt, lte=lte, lt=lt))

    def has_ids(self, ids: Sequence[str]) -> Any:
        return self.m.HasIdCondition(has_id=list(ids))

    def all_of(self, conditions: list[Any]) -> Any:
        return self.m.Filter(must=conditions)


class ClientStore:
    """An index store in a Qdrant collection (see the module docstring)."""

    embedded = False
    files = None  # the server keeps the multi-vectors

    def __init__(self, client: Any, collection: str, manifest: dict[str, Any]) -> None:
        self.client = client
        self.collection = collection
        self._m = _models()
        self._dialect = ClientDialect()
        self._manifest = manifest
        self.layout = Layout.from_json(manifest["layout"])

    # ----------------------------------------------------------------- lifecycle
    @staticmethod
    def connect(url: str | None) -> Any:
        """A client for ``url``; the API key comes from ``QDRANT_API_KEY`` when set."""
        client_module = require("qdrant_client", "search", "a Qdrant server index (qdrant-client)")
        return client_module.QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"))

    @classmethod
    def create(
        cls, client: Any, collection: str, layout: Layout, manifest: Mapping[str, Any]
    ) -> ClientStore:
        """Create ``collection`` with the shared layout; the manifest goes into its metadata."""
        m = _models()
        if client.collection_exists(collection):
            raise InvalidInput(
                f"collection {collection!r} already exists; open it or pick another name"
            )
        full = {**manifest, "layout": layout.to_json()}
        client.create_collection(
            collection, vectors_config=_vector_params(m, layout), metadata={METADATA_KEY: full}
        )
        for name, kind in layout.fields:
            client.create_payload_index(collection, name, _schema(m, kind), wait=True)
        return cls(client, collection, full)

    @classmethod
    def open(cls, client: Any, collection: str) -> ClientStore:
        if not client.collection_exists(collection):
            raise InvalidInput(
                f"no index collection {collection!r} on this Qdrant; create one first"
            )
        metadata = client.get_collection(collection).config.metadata or {}
        if METADATA_KEY not in metadata:
            raise InvalidInput(
                f"collection {collection!r} was not made by uniembed (no index manifest)"
            )
        return cls(client, collection, dict(metadata[METADATA_KEY]))

    def manifest(self) -> dict[str, Any]:
        return dict(self._manifest)

    def close(self) -> None:
        self.client.close()

    def optimize(self) -> None:
        """Nothing to do: a Qdrant server builds its indexes in the background."""

    # ----------------------------------------------------------------- writes
    def upsert(self, points: Sequence[Point]) -> None:
        structs = [
            self._m.PointStruct(id=p.id, vector=point_vectors(p), payload=p.payload) for p in points
        ]
        self.client.upsert(self.collection, points=structs, wait=True)

    def set_payloads(self, updates: Mapping[str, Mapping[str, Any]]) -> None:
        operations = [
            self._m.SetPayloadOperation(
                set_payload=self._m.SetPayload(payload=dict(values), points=[point])
            )
            for point, values in updates.items()
        ]
        if operations:
            self.client.batch_update_points(self.collection, operations, wait=True)

    def delete(self, doc_ids: Sequence[str]) -> None:
        condition = build_filter((MatchAny("id", tuple(doc_ids)),), self._dialect)
        self.client.delete(
            self.collection, points_selector=self._m.FilterSelector(filter=condition), wait=True
        )

    # ----------------------------------------------------------------- reads
    def search(self, search: Search) -> list[Found]:
        condition = build_filter(search.conditions, self._dialect)
        prefetch = None
        if search.prefetch is not None:
            stage = search.prefetch
            prefetch = self._m.Prefetch(
                query=stage.vector, using=stage.using, limit=stage.limit, filter=condition
            )
        response = self.client.query_points(
            self.collection,
            query=search.stage.vector,
            using=search.stage.using,
            prefetch=prefetch,
            query_filter=condition,
            search_params=self._m.SearchParams(exact=search.exact),
            limit=search.stage.limit,
            with_payload=_payload(search.payload),
            with_vectors=[MULTI] if search.with_multivector else False,
        )
        return [found_from(point) for point in response.points]

    def count(self, conditions: tuple[Condition, ...] = ()) -> int:
        condition = build_filter(conditions, self._dialect)
        return int(self.client.count(self.collection, count_filter=condition, exact=True).count)

    def scroll(
        self,
        conditions: tuple[Condition, ...] = (),
        *,
        payload: bool | Sequence[str] = True,
        with_multivector: bool = False,
        page_size: int = 256,
    ) -> Iterator[Found]:
        condition = build_filter(conditions, self._dialect)
        with_payload = _payload(payload)
        offset = None
        while True:
            records, offset = self.client.scroll(
                self.collection,
                scroll_filter=condition,
                limit=page_size,
                offset=offset,
                with_payload=with_payload,
                with_vectors=[MULTI] if with_multivector else False,
            )
            yield from (found_from(record) for record in records)
            if offset is None:
                return


def _payload(payload: bool | Sequence[str]) -> bool | list[str]:
    return payload if isinstance(payload, bool) else list(payload)


def _vector_params(m: Any, layout: Layout) -> dict[str, Any]:
    params = {DENSE: m.VectorParams(size=layout.dense_dim, distance=m.Distance.COSINE)}
    if layout.multivector_dim is not None:
        params[MULTI] = m.VectorParams(
            size=layout.multivector_dim,
            distance=m.Distance.DOT,
            multivector_config=m.MultiVectorConfig(comparator=m.MultiVectorComparator.MAX_SIM),
            datatype=m.Datatype.FLOAT16,
            hnsw_config=m.HnswConfigDiff(m=0),
            on_disk=True,  # memory-mapped by the server; its quantized copy is what stays in RAM
            quantization_config=_quantization(m, layout.codecs[0]),
        )
    if layout.muvera_dim is not None:
        params[MUVERA] = m.VectorParams(
            size=layout.muvera_dim, distance=m.Distance.DOT, datatype=m.Datatype.FLOAT16
        )
    return params


def _quantization(m: Any, codec: str) -> Any:
    """Qdrant's own compression of the multi-vectors for the index's first codec (None for
    float16): its scans score the quantized copy and rescore with the float16 original."""
    if codec == "int8":
        return m.ScalarQuantization(
            scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, always_ram=True)
        )
    if codec == "binary":
        return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
    if codec == "residual":  # Qdrant's product quantization: 128 float32 -> 32 bytes
        return m.ProductQuantization(
            product=m.ProductQuantizationConfig(compression=m.CompressionRatio.X16, always_ram=True)
        )
    return None


def _schema(m: Any, kind: str) -> Any:
    return {
        "keyword": m.PayloadSchemaType.KEYWORD,
        "integer": m.PayloadSchemaType.INTEGER,
        "float": m.PayloadSchemaType.FLOAT,
        "bool": m.PayloadSchemaType.BOOL,
    }[kind]


__all__ = ["ClientStore"]
