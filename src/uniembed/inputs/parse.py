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

from uniembed.errors import InputTooLarge, InvalidInput, UniembedError
from uniembed.inputs.fetch import SafeFetcher
from uniembed.inputs.images import URL_SCHEMES, load_image, to_rgb
from uniembed.inputs.items import ImageItem, Item, TextItem
from uniembed.inputs.limits import InputLimits
from uniembed.inputs.pdf import load_pdf, page_source

KINDS = ("text", "image", "pdf")


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
    kind: str  # "text" | "image" | "pdf"
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
    raw: Sequence[Any], limits: InputLimits | None = None, fetcher: SafeFetcher | None = None
) -> tuple[list[Item], list[int]]:
    """Like :func:`coerce_items`, plus the input index of every output item."""
    context = _Context.make(limits, fetcher, allow_paths=True)
    specs = [_library_spec(i, value) for i, value in enumerate(_as_list(raw))]
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
    if isinstance(value, str):
        return _Spec(index, "text", value)
    if isinstance(value, Image.Image):
        return _Spec(index, "image", value)
    if isinstance(value, Mapping):
        return _mapping_spec(index, value)
    raise InvalidInput(
        f"input {index}: expected a string, a PIL image or a dict with one of "
        "'text', 'image', 'pdf'; "
        f"got {type(value).__name__}"
    )


# --------------------------------------------------------------------- server
def parse_api_items(
    raw: Sequence[Any], limits: InputLimits | None = None, fetcher: SafeFetcher | None = None
) -> tuple[list[Item], list[int]]:
    """Items of an API request: strings or ``{"text"|"image"|"pdf": str}`` objects.

    Image and PDF values must be an http(s) URL, a data URI or base64 — local paths are never
    read. Texts longer than ``max_text_chars`` are refused. Returns items and their input indices.
    """
    context = _Context.make(limits, fetcher, allow_paths=False)
    specs = [_api_spec(i, value, context.limits) for i, value in enumerate(_as_list(raw))]
    return _flatten([(spec.index, _load_labelled(spec, context)) for spec in specs])


async def aparse_api_items(
    raw: Sequence[Any], limits: InputLimits | None = None, fetcher: SafeFetcher | None = None
) -> tuple[list[Item], list[int]]:
    """Async :func:`parse_api_items`: URLs are fetched concurrently (at most
    ``max_concurrent_fetches`` at a time) and decoding runs in worker threads, so the event loop
    never blocks. The first failure cancels the remaining work; if several inputs failed by then,
    the error of the lowest input index is raised."""
    context = _Context.make(limits, fetcher, allow_paths=False)
    specs = [_api_spec(i, value, context.limits) for i, value in enumerate(_as_list(raw))]
    if all(spec.kind == "text" for spec in specs):  # nothing to fetch or decode: no task group
        return [TextItem(spec.value) for spec in specs], [spec.index for spec in specs]
    loaded: dict[int, list[Item]] = {}
    errors: dict[int, UniembedError] = {}
    limiter = anyio.CapacityLimiter(context.limits.max_concurrent_fetches)

    async with anyio.create_task_group() as group:

        async def load(spec: _Spec) -> None:
            try:
                loaded[spec.index] = await _aload(spec, context, limiter)
            except UniembedError as exc:
                errors[spec.index] = _with_index(exc, spec.index)
                group.cancel_scope.cancel()

        for spec in specs:
            if spec.kind == "text":
                loaded[spec.index] = [TextItem(spec.value)]
            else:
                group.start_soon(load, spec)
    if errors:
        raise errors[min(errors)]
    return _flatten([(spec.index, loaded[spec.index]) for spec in specs])


async def _aload(spec: _Spec, context: _Context, limiter: anyio.CapacityLimiter) -> list[Item]:
    value = spec.value
    if _is_url(value):
        max_bytes = (
            context.limits.max_image_bytes if spec.kind == "image" else context.limits.max_pdf_bytes
        )
        async with limiter:
            value = await context.fetcher.afetch(value.strip(), max_bytes=max_bytes)
    return await anyio.to_thread.run_sync(_load, _Spec(spec.index, spec.kind, value), context)


def _api_spec(index: int, value: Any, limits: InputLimits) -> _Spec:
    if isinstance(value, str):
        spec = _Spec(index, "text", value)
    elif isinstance(value, Mapping):
        spec = _mapping_spec(index, value)
    else:
        raise InvalidInput(
            f"input {index}: expected a string or an object with one of 'text', 'image', 'pdf'; "
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
def _mapping_spec(index: int, value: Mapping[str, Any]) -> _Spec:
    present = [kind for kind in KINDS if kind in value]
    unknown = sorted(str(key) for key in value if key not in KINDS)
    if unknown:
        raise InvalidInput(
            f"input {index}: unknown field(s) {', '.join(unknown)}; "
            "use exactly one of 'text', 'image', 'pdf'"
        )
    if len(present) != 1:
        found = ", ".join(present) or "none"
        raise InvalidInput(
            f"input {index}: give exactly one of 'text', 'image', 'pdf' (found: {found})"
        )
    kind = present[0]
    if kind == "text" and not isinstance(value[kind], str):
        raise InvalidInput(
            f"input {index}: 'text' must be a string, got {type(value[kind]).__name__}"
        )
    return _Spec(index, kind, value[kind])


def _load_labelled(spec: _Spec, context: _Context) -> list[Item]:
    """:func:`_load` with errors prefixed by the input index."""
    try:
        return _load(spec, context)
    except UniembedError as exc:
        labelled = _with_index(exc, spec.index)
        if labelled is exc:
            raise
        raise labelled from exc


def _load(spec: _Spec, context: _Context) -> list[Item]:
    """Load one input (fetch, decode, render) into its items."""
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


def _with_index(exc: UniembedError, index: int) -> UniembedError:
    """The same error type with the input index in front of the message."""
    if exc.message.startswith(f"input {index}:"):
        return exc
    return type(exc)(f"input {index}: {exc.message}")


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip()[:8].lower().startswith(URL_SCHEMES)


def _flatten(groups: list[tuple[int, list[Item]]]) -> tuple[list[Item], list[int]]:
    items: list[Item] = []
    origin: list[int] = []
    for index, group in groups:
        items.extend(group)
        origin.extend([index] * len(group))
    return items, origin
