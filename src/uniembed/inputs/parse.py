"""Raw inputs → :class:`TextItem` / :class:`ImageItem`, for the library and for the HTTP server.

A PDF becomes one :class:`ImageItem` per page, so the item count can grow; the ``*_with_origin``
and API functions also return, for each output item, the index of the input it came from.

>>> items, origin = coerce_items_with_origin(["a", {"text": "b"}])
>>> [item.text for item in items], origin
(['a', 'b'], [0, 1])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from PIL import Image

from uniembed.errors import InputTooLarge, InvalidInput, UniembedError, labelled
from uniembed.inputs.budget import RequestBudget
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.images import (
    URL_SCHEMES,
    load_image,
    read_image_bytes,
    read_image_header,
    to_rgb,
)
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.inputs.limits import InputLimits
from uniembed.inputs.pdf import load_pdf, page_source, pdf_page_sizes, read_pdf_bytes
from uniembed.inputs.pending import (
    Pending,
    PendingImage,
    PendingPage,
    load_pending,
)

# The fields of an input object and the kind each names: "url" and "bytes" are the Jina API's names
# for an image given by URL or as base64 (they take the same values as "image").
FIELDS = {"text": "text", "image": "image", "url": "image", "bytes": "image", "pdf": "pdf"}
_FIELDS = ", ".join(f"'{field}'" for field in FIELDS)
# Strings that are data URIs of these types are images or PDFs, not text.
DATA_URI_KINDS = {"data:image/": "image", "data:application/pdf": "pdf"}


@dataclass(frozen=True)
class _Context:
    limits: InputLimits
    fetcher: SafeFetcher
    allow_paths: bool  # library: yes; server: never

    @classmethod
    def make(
        cls, limits: InputLimits | None, fetcher: SafeFetcher | None, *, allow_paths: bool
    ) -> _Context:
        limits = limits or (fetcher.limits if fetcher is not None else InputLimits())
        return cls(limits, fetcher or SafeFetcher(limits), allow_paths)


@dataclass(frozen=True)
class _Spec:
    """One validated raw input: which kind it is and its value (not yet loaded)."""

    index: int
    kind: str  # "text" | "image" | "pdf" | "item" (already parsed)
    value: Any


# --------------------------------------------------------------------- library
def coerce_items(
    raw: Sequence[Any], limits: InputLimits | None = None, fetcher: SafeFetcher | None = None
) -> list[Item]:
    """Library inputs → items. Accepts strings (text), PIL images, and dicts with exactly one of
    ``"text"``, ``"image"`` (PIL image, bytes, path, URL, data URI, base64) or ``"pdf"`` (bytes,
    path, URL, data URI, base64; one item per page)."""
    return coerce_items_with_origin(raw, limits, fetcher)[0]


def coerce_items_with_origin(
    raw: Sequence[Any],
    limits: InputLimits | None = None,
    fetcher: SafeFetcher | None = None,
    *,
    first_index: int = 0,
) -> tuple[list[Item], list[int]]:
    """Like :func:`coerce_items`, plus the input index of every output item (``raw`` being the
    inputs from ``first_index`` on of a longer list: indices and errors count from there)."""
    context = _Context.make(limits, fetcher, allow_paths=True)
    specs = [_library_spec(i, value) for i, value in enumerate(_as_list(raw), start=first_index)]
    return _flatten([(spec.index, _load_labelled(spec, context)) for spec in specs])


def coerce_image_items(
    raw: Sequence[Any], limits: InputLimits | None = None, fetcher: SafeFetcher | None = None
) -> list[ImageItem]:
    """Image sources (PIL image, bytes, path, URL, data URI, base64) → one item each."""
    context = _Context.make(limits, fetcher, allow_paths=True)
    items = [
        _load_labelled(_Spec(i, "image", value), context) for i, value in enumerate(_as_list(raw))
    ]
    return [item for group in items for item in group]  # type: ignore[misc]


def _library_spec(index: int, value: Any) -> _Spec:
    if isinstance(value, (TextItem, ImageItem)):  # parsed once already (e.g. by Index.add)
        return _Spec(index, "item", value)
    if isinstance(value, str):
        return _string_spec(index, value)
    if isinstance(value, Image.Image):
        return _Spec(index, "image", value)
    if isinstance(value, Mapping):
        return _mapping_spec(index, value)
    raise InvalidInput(
        f"input {index}: expected a string, a PIL image or a dict with one of {_FIELDS}; "
        f"got {type(value).__name__}"
    )


# --------------------------------------------------------------------- server
def parse_api_items(
    raw: Sequence[Any], limits: InputLimits | None = None, fetcher: SafeFetcher | None = None
) -> tuple[list[Item], list[int]]:
    """Items of an API request: strings or ``{"text"|"image"|"url"|"bytes"|"pdf": str}`` objects.

    Image and PDF values must be an http(s) URL, a data URI or base64 — local paths are never
    read. Texts longer than ``max_text_chars`` are refused. Returns items and their input indices.
    """
    context = _Context.make(limits, fetcher, allow_paths=False)
    specs = [_api_spec(i, value, context.limits) for i, value in enumerate(_as_list(raw))]
    return _flatten([(spec.index, _load_labelled(spec, context)) for spec in specs])


async def aparse_api_items(
    raw: Sequence[Any],
    limits: InputLimits | None = None,
    fetcher: SafeFetcher | None = None,
    budget: RequestBudget | None = None,
) -> tuple[list[Item], list[int]]:
    """Async :func:`parse_api_items`: :func:`aprobe_api_items` (charging ``budget``), then every
    image decoded and every page rendered (in a worker thread)."""
    context = _Context.make(limits, fetcher, allow_paths=False)
    pending, origin = await aprobe_api_items(raw, context.limits, context.fetcher, budget)
    return await anyio.to_thread.run_sync(load_pending, pending, context.limits), origin


async def aprobe_api_items(
    raw: Sequence[Any],
    limits: InputLimits | None = None,
    fetcher: SafeFetcher | None = None,
    budget: RequestBudget | None = None,
) -> tuple[list[Pending], list[int]]:
    """The inputs of an API request read and measured, not decoded: texts, and images and PDF pages
    as :mod:`~uniembed.inputs.pending` entries (bytes in hand, sizes read from image headers and the
    PDF page tree), with the input index of each.

    ``budget`` is charged as each input is measured — items (a PDF counts its pages) and pixels, and
    the bytes of downloads — so a request over it is refused before any pixel is decoded. URLs are
    fetched concurrently (at most ``max_concurrent_fetches`` at a time) and reading runs in worker
    threads, so the event loop never blocks. The first failure cancels the remaining work; if
    several inputs failed by then, the error of the lowest input index is raised.
    """
    context = _Context.make(limits, fetcher, allow_paths=False)
    budget = budget or RequestBudget.unlimited()
    specs = [_api_spec(i, value, context.limits) for i, value in enumerate(_as_list(raw))]
    budget.charge_items(len(specs))
    if all(spec.kind == "text" for spec in specs):  # nothing to fetch or read: no task group
        return [TextItem(spec.value) for spec in specs], [spec.index for spec in specs]
    found: dict[int, list[Pending]] = {}
    errors: dict[int, UniembedError] = {}
    limiter = anyio.CapacityLimiter(context.limits.max_concurrent_fetches)

    async with anyio.create_task_group() as group:

        async def probe(spec: _Spec) -> None:
            try:
                entries = await _aprobe(spec, context, limiter, budget)
                budget.charge_items(
                    len(entries) - 1, f"input {spec.index}"
                )  # one was charged above
                for entry in entries:
                    if not isinstance(entry, TextItem):
                        budget.charge_decode(
                            entry.pixels, entry.transient_bytes, f"input {spec.index}"
                        )
                found[spec.index] = entries
            except UniembedError as exc:
                errors[spec.index] = labelled(exc, spec.index)
                group.cancel_scope.cancel()

        for spec in specs:
            if spec.kind == "text":
                found[spec.index] = [TextItem(spec.value)]
            else:
                group.start_soon(probe, spec)
    if errors:
        raise errors[min(errors)]
    entries = [(spec.index, found[spec.index]) for spec in specs]
    return [entry for _, group in entries for entry in group], [
        i for i, group in entries for _ in group
    ]


async def _aprobe(
    spec: _Spec, context: _Context, limiter: anyio.CapacityLimiter, budget: RequestBudget
) -> list[Pending]:
    value = spec.value
    if _is_url(value):
        value = await _afetch(value.strip(), spec, context, limiter, budget)
    return await anyio.to_thread.run_sync(_probe, _Spec(spec.index, spec.kind, value), context)


async def _afetch(
    url: str, spec: _Spec, context: _Context, limiter: anyio.CapacityLimiter, budget: RequestBudget
) -> bytes:
    """Download within the item's byte limit and what is left of the request's download budget."""
    limit = context.limits.max_image_bytes if spec.kind == "image" else context.limits.max_pdf_bytes
    where = f"input {spec.index}"
    async with limiter:
        left = budget.fetch_bytes_left  # read once the download may start
        if left == 0:
            raise budget.fetch_exceeded(where)
        try:
            data = await context.fetcher.afetch(url, max_bytes=min(limit, left))
        except InputTooLarge as exc:
            raise (budget.fetch_exceeded(where) if left < limit else exc) from exc
    budget.charge_fetch(len(data), where)
    return data


def _probe(spec: _Spec, context: _Context) -> list[Pending]:
    """Read one image's header or one PDF's page sizes (checked); decode nothing."""
    limits = context.limits
    if spec.kind == "image":
        data = read_image_bytes(
            spec.value, limits, context.fetcher, allow_paths=False, source="image"
        )
        width, height, transient = read_image_header(data, limits)
        return [PendingImage(data, width, height, spec.index, transient)]
    data = read_pdf_bytes(spec.value, limits, context.fetcher, allow_paths=False)
    return [
        PendingPage(data, page, width, height, spec.index)
        for page, (width, height) in enumerate(pdf_page_sizes(data, limits))
    ]


def _api_spec(index: int, value: Any, limits: InputLimits) -> _Spec:
    if isinstance(value, str):
        spec = _string_spec(index, value)
    elif isinstance(value, Mapping):
        spec = _mapping_spec(index, value)
    else:
        raise InvalidInput(
            f"input {index}: expected a string or an object with one of {_FIELDS}; "
            f"got {type(value).__name__}"
        )
    if spec.kind != "text" and not isinstance(spec.value, str):
        raise InvalidInput(
            f"input {index}: '{spec.kind}' must be a string (an http(s) URL, a data URI or base64)"
        )
    if spec.kind == "text" and len(spec.value) > limits.max_text_chars:
        raise InputTooLarge(
            f"input {index}: the text has {len(spec.value)} characters, more than the limit of "
            f"{limits.max_text_chars}"
        )
    return spec


# --------------------------------------------------------------------- shared
def _string_spec(index: int, value: str) -> _Spec:
    """A string is text, unless it is an image or PDF data URI (what some clients send for
    images)."""
    head = value[:32].lstrip().lower()
    for prefix, kind in DATA_URI_KINDS.items():
        if head.startswith(prefix):
            return _Spec(index, kind, value)
    return _Spec(index, "text", value)


def _mapping_spec(index: int, value: Mapping[str, Any]) -> _Spec:
    present = [field for field in FIELDS if field in value]
    unknown = [key for key in value if key not in FIELDS]
    if unknown:
        raise InvalidInput(
            f"input {index}: unknown field(s) {_names(unknown)}; use exactly one of {_FIELDS}"
        )
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise InvalidInput(f"input {index}: give exactly one of {_FIELDS} (found: {found})")
    field = present[0]
    if field == "text" and not isinstance(value[field], str):
        raise InvalidInput(
            f"input {index}: 'text' must be a string, got {type(value[field]).__name__}"
        )
    return _Spec(index, FIELDS[field], value[field])


def _names(keys: Sequence[Any], shown: int = 5, chars: int = 64) -> str:
    """Some of ``keys`` for an error message, each cut to ``chars`` characters (they come from the
    client: never echo an unbounded number or size).

    >>> _names(["b", "a" * 100, *"cdefgh"], chars=4)
    'aaa…, b, c, d, e and 3 more'
    """
    names = sorted(str(key) for key in keys)
    cut = [name if len(name) <= chars else name[: chars - 1] + "…" for name in names[:shown]]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(cut) + more


def _load_labelled(spec: _Spec, context: _Context) -> list[Item]:
    """:func:`_load` with errors prefixed by the input index."""
    try:
        return _load(spec, context)
    except UniembedError as exc:
        named = labelled(exc, spec.index)
        if named is exc:
            raise
        raise named from exc


def _load(spec: _Spec, context: _Context) -> list[Item]:
    """Load one input (fetch, decode, render) into its items."""
    if spec.kind == "item":
        return [spec.value]
    if spec.kind == "text":
        return [TextItem(spec.value)]
    if spec.kind == "image":
        if isinstance(spec.value, Image.Image):
            return [ImageItem(to_rgb(spec.value))]
        image = load_image(
            spec.value, context.limits, context.fetcher, allow_paths=context.allow_paths
        )
        return [ImageItem(image)]
    if isinstance(spec.value, (str, bytes, bytearray, memoryview, os.PathLike)):
        pages = load_pdf(
            spec.value, context.limits, context.fetcher, allow_paths=context.allow_paths
        )
        return [
            ImageItem(page, page_source("pdf", number))
            for number, page in enumerate(pages, start=1)
        ]
    raise InvalidInput(
        f"'pdf' must be bytes, a URL, a data URI, base64 or a path; got {type(spec.value).__name__}"
    )


def _as_list(raw: Sequence[Any]) -> list[Any]:
    """The inputs as a list; a lone string, dict, bytes or image is a mistake, not a sequence."""
    if isinstance(raw, (str, bytes, bytearray, Mapping, Image.Image)) or not isinstance(
        raw, Sequence
    ):
        raise InvalidInput(
            f"expected a list of inputs, got {type(raw).__name__}; wrap one input in a list"
        )
    return list(raw)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip()[:8].lower().startswith(URL_SCHEMES)


def _flatten(groups: list[tuple[int, list[Item]]]) -> tuple[list[Item], list[int]]:
    items: list[Item] = []
    origin: list[int] = []
    for index, group in groups:
        items.extend(group)
        origin.extend([index] * len(group))
    return items, origin
