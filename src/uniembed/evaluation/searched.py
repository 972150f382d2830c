"""Settings measured through the search index itself: the cached corpus vectors are added to a real
:class:`uniembed.retrieval.Index` (an embedded Qdrant store in a temporary folder, exactly as
``Index.add_vectors`` stores them) and every query runs :meth:`Index.search_vectors` in the mode, so
a setting's quality is by construction what ``uniembed search`` returns in that mode::

    search:dense               the index's dense mode (cosine on the single vectors, HNSW)
    search:multivector         exact MaxSim over the stored float16 multi-vectors
    search:two-stage[:N]       N dense candidates (default 100), MaxSim reranks them
    search:muvera[:N]          N candidates by MUVERA encodings (HNSW), MaxSim reranks them
    search:binary[:N]          N candidates by Hamming MaxSim over sign bits, MaxSim reranks them

``@CODEC`` after any late mode (``search:multivector@int8``, ``search:two-stage:200@residual``)
builds the index with that codec alone for its token vectors (:mod:`uniembed.core.codecs`), so its
MaxSim is the codec's: the setting measures what the codec costs against float16.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from uniembed.embedder import Embedder
from uniembed.evaluation.encoded import Encodings
from uniembed.evaluation.settings import FLOAT16, FLOAT32, QueryVectors

MODES = ("dense", "multivector", "two-stage", "muvera", "binary")
WITH_CANDIDATES = ("two-stage", "muvera", "binary")
ADD_BATCH = 256  # entries per store operation while the index is built


@dataclass(frozen=True)
class IndexModel:
    """What a searched setting's index is created with: the model the vectors came from and the
    tasks they were encoded with."""

    embedder: Embedder
    query_task: str
    document_task: str


@dataclass(frozen=True)
class Searched:
    """One search mode of a real index (see the module docstring)."""

    mode: str
    candidates: int
    model: IndexModel
    codec: str = "float16"  # of the token vectors

    @property
    def name(self) -> str:
        name = f"search:{self.mode}"
        name += f":{self.candidates}" if self.mode in WITH_CANDIDATES else ""
        return name + (f"@{self.codec}" if self.codec != "float16" else "")

    @property
    def codecs(self) -> tuple[str, ...]:
        """The index's token codecs: the setting's, and sign bits for mode binary."""
        extra = ("binary",) if self.mode == "binary" and self.codec != "binary" else ()
        return (self.codec, *extra)

    @property
    def family(self) -> str:
        return "dense" if self.mode == "dense" else "late"

    def build(self, corpus: Encodings) -> SearchedIndex:
        return SearchedIndex(self, corpus)


class SearchedIndex:
    """The corpus in a temporary index; positions are the entry ids."""

    def __init__(self, setting: Searched, corpus: Encodings) -> None:
        from uniembed.retrieval import Index

        self.setting = setting
        self._folder = tempfile.TemporaryDirectory(prefix="uniembed-eval-")
        self.index = Index.create(
            Path(self._folder.name) / "index",
            setting.model.embedder,
            document_task=setting.model.document_task,
            query_task=setting.model.query_task,
            thumbnails=False,
            codecs=setting.codecs,
            muvera=setting.mode == "muvera",
        )
        late = self.index.settings.multivector_dim is not None
        ids = [str(position) for position in range(len(corpus))]
        self.index.add_vectors(
            ids, corpus.single, corpus.multivectors() if late else None, batch_items=ADD_BATCH
        )
        self.index.optimize()
        self.stored_bytes, self.scanned_bytes = _bytes(setting.mode, corpus)

    def search(self, query: QueryVectors, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        hits = self.index.search_vectors(
            query.single,
            query.multi,
            k=depth,
            mode=self.setting.mode,
            candidates=self.setting.candidates,
        )
        scores = torch.tensor([hit.score for hit in hits], dtype=torch.float32)
        return scores, torch.tensor([int(hit.id) for hit in hits], dtype=torch.int64)

    def close(self) -> None:
        self.index.close()
        self._folder.cleanup()


def _bytes(mode: str, corpus: Encodings) -> tuple[float, float]:
    """Per item: what the index stores of vectors (float32 dense, float16 multi-vectors) and what
    one query's first stage reads."""
    dense = corpus.single.shape[1] * FLOAT32
    rows = float(corpus.lengths.float().mean()) * corpus.multi.shape[1]
    first_stage = {
        "dense": dense,
        "two-stage": dense,
        "muvera": 2560 * FLOAT16,
        "multivector": rows * FLOAT16,
        "binary": rows / 8,
    }
    return dense + rows * FLOAT16, first_stage[mode]
