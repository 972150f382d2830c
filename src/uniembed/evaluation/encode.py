"""Encode the items of one side (queries or corpus) once, in chunks, through the on-disk cache.

Each chunk is one ``Embedder`` call with ``output="both"``: single vectors and multi-vectors come
from the same forward pass, and every setting is scored from them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput
from uniembed.evaluation.cache import CacheKey, EncodingCache
from uniembed.evaluation.data import EvalItem, encode_input, fingerprint
from uniembed.evaluation.encoded import Encodings

TEXT_CHUNK = 256  # items per chunk (and per cache file)
IMAGE_CHUNK = 16  # decoded images are large: fewer per chunk

Progress = Callable[[int], None]  # items just finished


@dataclass(frozen=True)
class EncodeSettings:
    """Encode options that change the vectors (so they are part of the cache key), and chunking."""

    max_tokens: int | None = None  # per item; longer texts are cut. None: the model's maximum
    max_pixels: int | None = None  # per image; None: the model's default
    chunk_size: int | None = None  # None: TEXT_CHUNK for text, IMAGE_CHUNK otherwise


@dataclass(frozen=True)
class EncodingStats:
    """What encoding a side cost: the seconds are those of the forward passes when they ran, kept
    in the cache, so a fully cached run still reports the original throughput."""

    items: int
    tokens: int
    seconds: float
    chunks: int
    cached_chunks: int
    cached_items: int  # read from the cache: no forward pass ran for them

    @property
    def items_per_second(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def encode_items(
    embedder: Embedder,
    ids: Sequence[str],
    items: Sequence[EvalItem],
    task: str,
    *,
    settings: EncodeSettings = EncodeSettings(),
    cache: EncodingCache | None = None,
    on_progress: Progress | None = None,
) -> tuple[Encodings, EncodingStats]:
    """Single and multi-vectors of ``items`` under ``task``; chunks found in ``cache`` are read,
    the others encoded and written there as they finish."""
    if not items:
        raise InvalidInput(f"nothing to encode with task {task!r}")
    key = CacheKey(
        model=f"{embedder.info.name}|{embedder.info.family}",
        weights=embedder.weights_digest(),
        task=task,
        options=(("max_tokens", settings.max_tokens), ("max_pixels", settings.max_pixels)),
        items=len(items),
        fingerprint=fingerprint(ids, items),
    )
    chunk_size = settings.chunk_size or (TEXT_CHUNK if isinstance(items[0], str) else IMAGE_CHUNK)
    entry = cache.entry(key, chunk_size) if cache is not None else None
    size = entry.chunk_size if entry is not None else chunk_size  # an entry keeps its own size
    chunks = -(-len(items) // size)
    parts, seconds, cached, cached_items = [], 0.0, 0, 0
    for index in range(chunks):
        span = range(index * size, min((index + 1) * size, len(items)))
        if entry is not None and entry.has(index):
            part, took = entry.read(index)
            cached += 1
            cached_items += len(span)
            if on_progress:
                on_progress(len(span))
        else:
            part, took = _encode_chunk(
                embedder, [items[i] for i in span], task, settings, on_progress
            )
            if entry is not None:
                entry.write(index, part, took)
        parts.append(part)
        seconds += took
    encodings = Encodings.concat(parts)
    tokens = int(encodings.token_counts.sum())
    stats = EncodingStats(len(items), tokens, seconds, chunks, cached, cached_items)
    return encodings, stats


def _encode_chunk(
    embedder: Embedder,
    items: list[EvalItem],
    task: str,
    settings: EncodeSettings,
    on_progress: Progress | None,
) -> tuple[Encodings, float]:
    from uniembed.inputs.parse import coerce_items
    from uniembed.plans import EncodeOptions

    started = time.perf_counter()
    options = EncodeOptions(
        output="both", truncate=True, max_tokens=settings.max_tokens, max_pixels=settings.max_pixels
    )
    plan = embedder.plan(coerce_items([encode_input(item) for item in items]), task, options)
    result = embedder.run(plan, on_progress)
    assert result.multivectors is not None  # output="both"
    encodings = Encodings.from_vectors(result.embeddings, result.multivectors, result.token_counts)
    return encodings, time.perf_counter() - started
