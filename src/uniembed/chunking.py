"""Late chunking: encode a whole document once, then mean-pool each chunk's tokens.

Every chunk vector thus sees the context of the whole document (Jina, "Late Chunking in
Long-Context Embedding Models", 2024). The steps, all on top of the model's processor (the CPU side
of the contract, :class:`~uniembed.models.base.Processor`):

1. chunks are character spans of the document: from the API's consecutive items
   (:func:`join_chunks`), from a :data:`Chunker`, or given directly;
2. :func:`char_spans_to_token_spans` maps them to token spans of ``task.prefix + text``; the
   first chunk absorbs the leading tokens (special tokens, the task prefix), the last the trailing;
3. :func:`plan_document` builds one :class:`~uniembed.models.base.Row` per window (one for a
   document that fits) whose spans are the chunks' kept token ranges, so the model returns span
   means only — token states never leave the model;
4. :meth:`uniembed.plans.ChunkPooling.pool` combines each chunk's per-window means into the chunk
   mean.
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from uniembed.core.vectors import Span
from uniembed.errors import InvalidInput
from uniembed.models.base import Processor, Row, TaskSpec
from uniembed.plans import ChunkPart, ChunkPooling

DEFAULT_OVERLAP = 512
Chunker = Callable[[str, Processor], list[Span]]  # (text, the model's processor) → char spans

# ----------------------------------------------------------------- the API form


def join_chunks(chunks: Sequence[str]) -> tuple[str, list[Span]]:
    """Join consecutive chunks into one document; return it and each chunk's character span.

    A single space goes between two chunks unless the first ends or the second starts with
    whitespace already, so split text is rebuilt as it was and words never fuse across chunks.
    Spans are half-open and cover each chunk's own text exactly (never the added space).

    >>> join_chunks(["Berlin is a city.", "It is big. ", "Very."])
    ('Berlin is a city. It is big. Very.', [(0, 17), (18, 29), (29, 34)])
    """
    if not chunks:
        raise InvalidInput("late chunking needs at least one chunk")
    parts: list[str] = []
    spans: list[Span] = []
    position = 0
    for index, chunk in enumerate(chunks):
        if not chunk:
            raise InvalidInput(
                f"input {index} is an empty string; late chunking needs non-empty chunks"
            )
        if parts and _needs_separator(parts[-1], chunk):
            parts.append(" ")
            position += 1
        parts.append(chunk)
        spans.append((position, position + len(chunk)))
        position += len(chunk)
    return "".join(parts), spans


def _needs_separator(left: str, right: str) -> bool:
    return not (left[-1].isspace() or right[0].isspace())


# ----------------------------------------------------------------- chunkers

_SENTENCE_END = re.compile(
    r"[.!?]+[\"'”’)\]»]*(?=\s|$)"  # Latin: needs whitespace or the end after it (3.14, e.g.x stay)
    r"|[。！？]+[\"'”’)\]」』»]*"  # full-width: ends a sentence anywhere (CJK has no spaces)
)


def sentence_spans(text: str) -> list[Span]:
    """Sentence character spans covering ``text`` contiguously.

    A sentence ends after ``. ! ?`` (followed by whitespace or the end) or ``。！？`` (anywhere),
    with closing quotes and brackets; the whitespace after it starts the next sentence (where
    BPE tokenizers put it too, ``"Ġword"``); trailing whitespace stays with the last sentence.

    >>> sentence_spans("Hi there. How are you?  Fine.")
    [(0, 9), (9, 22), (22, 29)]
    >>> sentence_spans("你好。世界！")
    [(0, 3), (3, 6)]
    """
    cuts = [m.end() for m in _SENTENCE_END.finditer(text) if 0 < m.end() < len(text)]
    bounds = [0, *cuts, len(text)] if text else []
    spans: list[Span] = []
    for start, end in itertools.pairwise(bounds):
        if spans and text[start:end].isspace():
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def sentence_chunker() -> Chunker:
    """A :data:`Chunker` with one chunk per sentence (see :func:`sentence_spans`)."""

    def chunk(text: str, processor: Processor) -> list[Span]:
        return sentence_spans(text)

    return chunk


def fixed_token_chunker(tokens_per_chunk: int) -> Chunker:
    """A :data:`Chunker` cutting the text every ``tokens_per_chunk`` tokens of the model's
    tokenizer.

    Cuts fall where a token starts, and the spans cover the text contiguously. Counts are of the
    text tokenised alone; inside the document (after the task prefix) they may differ by a token.
    """
    if tokens_per_chunk < 1:
        raise InvalidInput(f"tokens_per_chunk must be at least 1, got {tokens_per_chunk}")

    def chunk(text: str, processor: Processor) -> list[Span]:
        tokens = processor.tokenize(text)
        pieces = [
            (a, b)
            for (a, b), special in zip(tokens.offsets, tokens.special)
            if not special and b > a
        ]
        return _spans_cut_every(pieces, tokens_per_chunk, len(text))

    return chunk


def _spans_cut_every(
    token_offsets: Sequence[tuple[int, int]], count: int, text_length: int
) -> list[Span]:
    """Cut before every ``count``-th token, but only where no earlier token reaches past the cut
    (byte-level pieces of one character share it and are never split).

    >>> _spans_cut_every([(0, 2), (2, 3), (2, 3), (3, 5)], 1, 6)
    [(0, 2), (2, 3), (3, 6)]
    """
    if text_length == 0:
        return []
    cuts = [0]
    taken = 0
    reach = 0  # the furthest character covered by the tokens so far
    for start, end in token_offsets:
        if taken >= count and start >= reach and start > cuts[-1]:
            cuts.append(start)
            taken = 0
        taken += 1
        reach = max(reach, end)
    return list(zip(cuts, [*cuts[1:], text_length]))


# ----------------------------------------------------------------- characters → tokens


def check_char_spans(spans: Sequence[Span], text_length: int | None = None) -> list[Span]:
    """``spans`` as a list of tuples after checking they are non-empty, in range, sorted and
    disjoint."""
    checked = [(int(start), int(end)) for start, end in spans]
    if not checked:
        raise InvalidInput("no chunks given: give at least one character span")
    for index, (start, end) in enumerate(checked):
        if start >= end:
            raise InvalidInput(
                f"chunk {index} span {(start, end)} is empty; a span needs start < end"
            )
        if start < 0 or (text_length is not None and end > text_length):
            limit = "" if text_length is None else f" of {text_length} characters"
            raise InvalidInput(f"chunk {index} span {(start, end)} is outside the text{limit}")
        if index and start < checked[index - 1][1]:
            raise InvalidInput(
                f"chunk {index} span {(start, end)} overlaps or comes before chunk {index - 1} "
                f"span {checked[index - 1]}; spans must be sorted and must not overlap"
            )
    return checked


def char_spans_to_token_spans(
    offsets: Sequence[tuple[int, int]],
    special: Sequence[bool],
    char_spans: Sequence[Span],
    num_tokens: int,
    *,
    text_start: int = 0,
) -> list[Span]:
    """Map the chunks' character spans to half-open token spans covering all ``num_tokens`` tokens.

    ``offsets``/``special`` come from ``processor.tokenize`` of a string in which the document
    starts at character ``text_start`` (the task prefix's length); ``char_spans`` are relative to
    the document. A token belongs to the first chunk that ends after its first character — the chunk
    holding it, or for a character between chunks the next chunk; tokens after the last chunk go to
    the last. Special tokens and tokens without characters go with the next token that has some
    (trailing ones with the last chunk). So the first chunk absorbs the leading special tokens and
    the prefix, and the last chunk the trailing special tokens. A chunk left without tokens (its
    text lies inside a token that starts in an earlier chunk) is an error.

    >>> # <s> Query: Hello ␣ World </s>
    >>> offsets = [(0, 0), (0, 7), (7, 12), (12, 13), (13, 18), (0, 0)]
    >>> char_spans_to_token_spans(offsets, [1, 0, 0, 0, 0, 1], [(0, 5), (6, 11)], 6, text_start=7)
    [(0, 3), (3, 6)]
    """
    if not len(offsets) == len(special) >= num_tokens:
        raise ValueError(
            f"{len(offsets)} offsets and {len(special)} special flags for {num_tokens} tokens"
        )
    spans = check_char_spans(char_spans)
    ends = [end + text_start for _, end in spans]
    owners = _token_owners(offsets[:num_tokens], special[:num_tokens], ends)
    counts = [0] * len(spans)
    for owner in owners:
        counts[owner] += 1
    for index, count in enumerate(counts):
        if count == 0:
            raise InvalidInput(
                f"chunk {index} span {spans[index]} has no tokens of its own: its text lies inside "
                "a token that starts in an earlier chunk; put chunk boundaries where words start"
            )
    token_spans: list[Span] = []
    start = 0
    for count in counts:
        token_spans.append((start, start + count))
        start += count
    return token_spans


def _token_owners(
    offsets: Sequence[tuple[int, int]], special: Sequence[bool], chunk_ends: list[int]
) -> list[int]:
    """Chunk index of every token, non-decreasing along the sequence."""
    last = len(chunk_ends) - 1
    owners: list[int | None] = [
        None if is_special or end <= start else min(bisect_right(chunk_ends, start), last)
        for (start, end), is_special in zip(offsets, special)
    ]
    following = last  # tokens without characters take the chunk of the next token that has some
    for index in range(len(owners) - 1, -1, -1):
        owner = owners[index]
        if owner is None:
            owners[index] = following
        else:
            following = owner
    result: list[int] = []
    for owner in owners:  # a running maximum keeps every chunk's tokens contiguous
        result.append(max(owner, result[-1]) if result else owner)  # type: ignore[type-var]
    return result


# ----------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` of the document run together; outputs from ``keep_from`` are kept."""

    start: int
    end: int
    keep_from: int


def resolve_overlap(overlap: int | None, window: int) -> int:
    """The overlap to use: ``None`` → ``min(DEFAULT_OVERLAP, window // 2)``; else ``0 <= overlap <
    window``."""
    if window < 1:
        raise InvalidInput(f"window must be at least 1 token, got {window}")
    if overlap is None:
        return min(DEFAULT_OVERLAP, window // 2)
    if not 0 <= overlap < window:
        raise InvalidInput(
            f"overlap must be at least 0 and smaller than the window ({window}), got {overlap}"
        )
    return overlap


def plan_windows(num_tokens: int, window: int, overlap: int) -> list[Window]:
    """Windows of ``window`` tokens stepping by ``window - overlap``; kept parts tile ``[0,
    num_tokens)``.

    Every window after the first drops its first ``overlap`` outputs (they were kept from the
    window before, which saw less right context for them but more left context).

    >>> plan_windows(10, 6, 2)
    [Window(start=0, end=6, keep_from=0), Window(start=4, end=10, keep_from=6)]
    """
    windows = [Window(0, min(window, num_tokens), 0)]
    while windows[-1].end < num_tokens:
        start = windows[-1].start + window - overlap
        windows.append(Window(start, min(start + window, num_tokens), start + overlap))
    return windows


# ----------------------------------------------------------------- the document plan


@dataclass(frozen=True)
class DocumentPlan:
    """Model rows of one late-chunked document and how to pool their outputs into chunk vectors."""

    rows: tuple[Row, ...]  # one per window
    pooling: ChunkPooling
    token_spans: tuple[Span, ...]  # each chunk's tokens in the whole document
    windows: tuple[Window, ...]  # one per row

    @property
    def tokens_per_chunk(self) -> tuple[int, ...]:
        """Tokens of each chunk; they sum to the document's (prefix and special tokens included)."""
        return self.pooling.tokens_per_chunk


def plan_document(
    processor: Processor,
    text: str,
    spans: Sequence[Span],
    task: TaskSpec,
    *,
    window: int,
    overlap: int | None,
    truncate: bool,
) -> DocumentPlan:
    """Plan the late chunking of ``text`` with chunk character ``spans`` (relative to ``text``).

    ``task.prefix + text`` is tokenised once. A document of at most ``window`` tokens is one
    sequence; a longer one runs in windows (:func:`plan_windows`), so a document is never too long.
    ``truncate`` therefore has no effect here: cutting the document would leave later chunks
    without tokens, while one vector per chunk is owed. ``overlap=None`` picks
    ``min(DEFAULT_OVERLAP, window // 2)``.
    """
    del truncate  # documented above: windows make truncation unnecessary
    overlap = resolve_overlap(overlap, window)
    spans = check_char_spans(spans, len(text))
    tokens = processor.tokenize(task.prefix + text)
    num_tokens = len(tokens.ids)
    token_spans = char_spans_to_token_spans(
        tokens.offsets, tokens.special, spans, num_tokens, text_start=len(task.prefix)
    )
    windows = plan_windows(num_tokens, window, overlap)
    rows: list[Row] = []
    parts: list[tuple[ChunkPart, ...]] = []
    for win in windows:
        local_spans, window_parts = _kept_pieces(win, token_spans)
        rows.append(processor.text_sequence(tokens.ids[win.start : win.end], task, local_spans))
        parts.append(tuple(window_parts))
    pooling = ChunkPooling(tuple(parts), tuple(end - start for start, end in token_spans))
    return DocumentPlan(tuple(rows), pooling, tuple(token_spans), tuple(windows))


def _kept_pieces(win: Window, token_spans: Sequence[Span]) -> tuple[list[Span], list[ChunkPart]]:
    """The chunks' pieces inside the kept part of ``win``, as spans local to the window."""
    local: list[Span] = []
    parts: list[ChunkPart] = []
    for chunk, (start, end) in enumerate(token_spans):
        low, high = max(start, win.keep_from), min(end, win.end)
        if low < high:
            local.append((low - win.start, high - win.start))
            parts.append(ChunkPart(chunk, high - low))
    return local, parts
