"""Search routes and the search page of ``uniembed serve --index``; every route calls the library's
:class:`~uniembed.retrieval.index.Index` (no search logic lives here).

* ``POST /v1/search`` — a text or image query → hits (scores, ids, pages, metadata; optional
  thumbnails and similarity maps);
* ``POST /v1/index/documents`` — add documents (texts, images, PDFs as base64 or data URIs, or URLs
  under the server's fetching rules); ``DELETE /v1/index/documents/{id}``; ``GET /v1/index``;
* ``GET /`` and ``GET /ui`` — the search page (``server/static/search.html``).

Inputs are parsed with the API rules (no file paths, the server's limits), as for embeddings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from uniembed.errors import InvalidInput, UniembedError
from uniembed.inputs.items import Item
from uniembed.retrieval.documents import MAX_ID_CHARS, Document, check_id, check_metadata
from uniembed.retrieval.index import Index
from uniembed.server.auth import ApiKeyCheck
from uniembed.server.routes import COMMON_ERRORS, EMBEDDING_ERRORS
from uniembed.server.schemas import ErrorResponse, _whole_number
from uniembed.server.settings import ServerSettings

PAGE = Path(__file__).parent / "static" / "search.html"
MAX_K = 1000
MAX_CANDIDATES = 100_000
MAX_DOCUMENTS = 256


class _Strict(BaseModel):
    """Types as declared, as on ``/v1/embeddings``: ``"5"`` is no integer, ``0`` no boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SearchRequest(_Strict):
    query: str | dict[str, Any] = Field(
        description='A text, or {"text": …} / {"image": base64 | data URI | URL}.'
    )
    k: Annotated[int, Field(ge=1, le=MAX_K), BeforeValidator(_whole_number)] = 10
    filter: dict[str, Any] | None = Field(
        default=None,
        description='E.g. {"metadata.lang": "en", "page": {"lte": 3}}; values must fit the '
        "field's type.",
    )
    mode: Literal["dense", "multivector", "two-stage", "muvera", "binary"] | None = None
    candidates: (
        Annotated[int, Field(ge=1, le=MAX_CANDIDATES), BeforeValidator(_whole_number)] | None
    ) = None
    maps: bool = Field(default=False, description="Similarity maps for image and page hits.")
    thumbnails: bool = Field(default=False, description="JPEG data URIs of image and page hits.")


class DocumentIn(_Strict):
    id: str | None = Field(
        default=None, min_length=1, max_length=MAX_ID_CHARS, description="Printable characters."
    )
    text: str | None = None
    image: str | None = None
    pdf: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddRequest(_Strict):
    documents: Annotated[list[DocumentIn], Field(min_length=1, max_length=MAX_DOCUMENTS)]


NO_SUCH_ID = {
    404: {
        "model": ErrorResponse,
        "description": "The id holds a control character (no route takes it, and no document id "
        "can hold one); a printable id that is not indexed is deleted as a no-op",
    }
}


def build_search_router(index: Index, auth: ApiKeyCheck, settings: ServerSettings) -> APIRouter:
    """The routes above, over ``index``; ``/v1/*`` needs an API key when keys are configured.
    Queries and added documents are read under the server's input limits and one request budget per
    request."""
    router = APIRouter()
    secured = [Depends(auth)]

    @router.post(
        "/v1/search", dependencies=secured, responses=EMBEDDING_ERRORS, summary="Search the index"
    )
    async def search(body: SearchRequest) -> dict[str, Any]:
        item = await _one_item(body.query, settings)
        hits = await run_in_threadpool(
            index.search,
            item,
            k=body.k,
            filter=body.filter,
            mode=body.mode,
            candidates=body.candidates,
            maps=body.maps,
            thumbnails=body.thumbnails,
        )
        return {"results": [hit.to_json() for hit in hits]}

    @router.post(
        "/v1/index/documents",
        dependencies=secured,
        responses=EMBEDDING_ERRORS,
        summary="Add or replace documents",
    )
    async def add_documents(body: AddRequest) -> dict[str, Any]:
        _check_documents(body.documents)  # before any input is read
        documents = await _documents(body.documents, settings)
        ids = await run_in_threadpool(index.add_documents, documents)
        return {"ids": ids, "entries": sum(len(d.items) for d in documents)}

    @router.delete(
        "/v1/index/documents/{doc_id:path}",
        dependencies=secured,
        responses=COMMON_ERRORS | NO_SUCH_ID,
        summary="Delete a document",
    )
    async def delete_document(doc_id: str) -> dict[str, Any]:
        await run_in_threadpool(index.delete, [doc_id])
        return {"deleted": doc_id}

    @router.get("/v1/index", dependencies=secured, summary="Entries and settings of the index")
    async def index_info() -> dict[str, Any]:
        return await run_in_threadpool(index.info)

    @router.get("/", include_in_schema=False, response_class=HTMLResponse)
    @router.get("/ui", include_in_schema=False, response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    return router


async def _one_item(query: str | dict[str, Any], settings: ServerSettings) -> Item:
    from uniembed.inputs.parse import aparse_api_items

    if isinstance(query, dict) and "pdf" in query:
        raise InvalidInput("a query is a text or an image, not a PDF")
    items, _ = await aparse_api_items(
        [query], settings.input_limits, budget=settings.request_budget()
    )
    return items[0]


def _check_documents(documents: list[DocumentIn]) -> None:
    """The ids and metadata of every document, against the index's limits (docs/search.md)."""
    for position, doc in enumerate(documents):
        if doc.id is not None:
            try:
                check_id(doc.id)
            except UniembedError as error:
                raise type(error)(f"document {position}: {error.message}") from error
        check_metadata(doc.metadata, f"document {position}")


async def _documents(docs: list[DocumentIn], settings: ServerSettings) -> list[Document]:
    """The documents of one add request, measured as a whole before anything is decoded: every
    input is read and charged to one request budget (items, pages, pixels, downloads), as for
    ``/v1/embeddings``, so a request over it is refused before the first image is decoded or the
    first page rendered; only then are images decoded and pages rendered (in a worker thread)."""
    import uuid

    from uniembed.inputs.parse import aprobe_api_items
    from uniembed.inputs.pending import load_pending

    kinds = [_kind(position, doc) for position, doc in enumerate(docs)]
    raw = [{kind: getattr(doc, kind)} for kind, doc in zip(kinds, docs)]
    try:
        pending, origin = await aprobe_api_items(
            raw, settings.input_limits, budget=settings.request_budget()
        )
        items = await run_in_threadpool(load_pending, pending, settings.input_limits)
    except UniembedError as error:
        raise type(error)(_as_document_error(error.message)) from error
    grouped: list[list[Item]] = [[] for _ in docs]
    for item, position in zip(items, origin):
        grouped[position].append(item)
    return [
        Document(doc.id or uuid.uuid4().hex, kind, tuple(group), doc.metadata)  # type: ignore[arg-type]
        for doc, kind, group in zip(docs, kinds, grouped)
    ]


def _kind(position: int, doc: DocumentIn) -> str:
    given = [kind for kind in ("text", "image", "pdf") if getattr(doc, kind) is not None]
    if len(given) != 1:
        raise InvalidInput(f"document {position}: give exactly one of text, image, pdf")
    return given[0]


def _as_document_error(message: str) -> str:
    """``input 3: …`` (the parser's words for the 4th input) as ``document 3: …``.

    >>> _as_document_error("input 3: not an image")
    'document 3: not an image'
    """
    head, colon, rest = message.partition(": ")
    if colon and head.startswith("input ") and head[6:].isdigit():
        return f"document {head[6:]}: {rest}"
    return message
