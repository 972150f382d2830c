"""uniembed models as MTEB 2 models: ``mteb.evaluate(MTEBModel(uniembed.load(...)), tasks)``.

:class:`MTEBModel` implements MTEB's ``EncoderProtocol`` (``encode`` over a ``DataLoader`` of
batches with ``text`` and/or ``image`` columns, ``similarity``, ``similarity_pairwise`` and
``mteb_model_meta``). Which task (adapter and prefix) encodes a batch follows MTEB's prompt rules
(:func:`mteb.models.abs_encoder.get_prompt_name`: task name, then task type, then prompt type)
over the model's ``info.task_types`` — the routing of MTEB's own entry for the model's family, plus
a query/document fallback for the task types it leaves out — and programming tasks use the
family's ``info.code_task`` where it has one (v4: ``code``). A batch with both text and an image
per row is embedded both ways and fused as MTEB's v4 wrapper does (single vectors: normalised sum;
multi-vectors: concatenated).

With ``multivector=True`` the model returns one multi-vector per input and scores with MaxSim
(:func:`uniembed.core.scores.maxsim`); otherwise single vectors (cut to ``dimensions``)
and cosine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from uniembed._optional import require
from uniembed.core.vectors import normalize
from uniembed.embedder import Embedder
from uniembed.models.base import PASSAGE, QUERY, task_api_names

ENCODE_CHUNK = 256  # items per Embedder call (the engine batches them by its token budget)


class MTEBModel:
    """An :class:`~uniembed.embedder.Embedder` as an MTEB 2 encoder.

    ``tasks`` replaces the prompt-key → task routing (keys as in MTEB's ``model_prompts``:
    task names, task types, ``"<type>-query"``, ``"query"``, …); ``max_pixels`` sets the image
    resolution (the v4 report used 37,788,800 for ViDoRe).
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        multivector: bool = False,
        dimensions: int | None = None,
        tasks: Mapping[str, str] | None = None,
        max_pixels: int | None = None,
    ) -> None:
        self.embedder = embedder
        self.multivector = multivector
        self.dimensions = None if multivector else dimensions
        self.tasks = dict(tasks) if tasks is not None else dict(embedder.info.task_types)
        self.max_pixels = max_pixels
        self._meta: Any = None

    # ----------------------------------------------------------------- metadata
    @property
    def mteb_model_meta(self) -> Any:
        """MTEB's ``ModelMeta``: the name, the weights digest as revision, modalities, scoring."""
        if self._meta is None:
            model_meta = require("mteb.models.model_meta", "mteb", "the MTEB integration")
            info = self.embedder.info
            name = info.name if "/" in info.name else f"local/{info.name}"
            self._meta = model_meta.ModelMeta.create_empty(
                overwrites={
                    "name": name,
                    "revision": self.embedder.weights_digest(),
                    "modalities": sorted(info.modalities),
                    "model_type": ["late-interaction" if self.multivector else "dense"],
                    "similarity_fn_name": "MaxSim" if self.multivector else "cosine",
                    "embed_dim": info.multivector_dim
                    if self.multivector
                    else (self.dimensions or info.dim),
                    "max_tokens": info.max_tokens,
                    "framework": ["PyTorch"],
                    "use_instructions": True,
                }
            )
        return self._meta

    # ----------------------------------------------------------------- tasks
    def task_for(self, task_metadata: Any, prompt_type: Any = None) -> str | None:
        """The API task for a batch of ``task_metadata`` with ``prompt_type`` (query, document or
        None); None means the model's default task."""
        abs_encoder = require("mteb.models.abs_encoder", "mteb", "the MTEB integration")
        key = abs_encoder.get_prompt_name(self.tasks, task_metadata, prompt_type)
        task = self.tasks[key] if key is not None else None
        code = self.embedder.info.code_task
        if code is not None and is_programming(task_metadata):
            document = (
                prompt_type is not None
                and str(getattr(prompt_type, "value", prompt_type)) == "document"
            )
            return task_api_names(code, symmetric=False)[PASSAGE if document else QUERY]
        return task

    # ----------------------------------------------------------------- encoding
    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray | list[torch.Tensor]:
        """One vector (or multi-vector) per input row of the ``DataLoader``."""
        task = self.task_for(task_metadata, prompt_type)
        texts: list[str] = []
        images: list[Any] = []
        for batch in inputs:
            texts += list(batch.get("text", []))
            images += list(batch.get("image", []))
        text_vectors = self._embed(texts, task) if texts else None
        image_vectors = (
            self._embed([{"image": image} for image in images], task) if images else None
        )
        if text_vectors is not None and image_vectors is not None:
            vectors = self._fuse(text_vectors, image_vectors)
        else:
            vectors = text_vectors if text_vectors is not None else image_vectors
        if vectors is None:
            raise ValueError(f"{task_metadata.name}: the batches hold neither 'text' nor 'image'")
        return vectors if self.multivector else torch.stack(vectors).numpy()

    def _embed(self, items: list[Any], task: str | None) -> list[torch.Tensor]:
        vectors: list[torch.Tensor] = []
        for start in range(0, len(items), ENCODE_CHUNK):
            result = self.embedder.encode(
                items[start : start + ENCODE_CHUNK],
                task,
                output="multi" if self.multivector else "single",
                dimensions=self.dimensions,
                truncate=True,
                max_pixels=self.max_pixels,
            )
            vectors += [v.float() for v in result.embeddings]
        return vectors

    def _fuse(self, texts: list[torch.Tensor], images: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(texts) != len(images):
            raise ValueError(
                f"{len(texts)} texts and {len(images)} images: expected one of each per row"
            )
        if self.multivector:
            return [torch.cat([t, i]) for t, i in zip(texts, images, strict=True)]
        return list(normalize(torch.stack(texts) + torch.stack(images)))

    # ----------------------------------------------------------------- scoring
    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """(n, m) scores: cosine of single vectors, or MaxSim of each query with each document."""
        if not self.multivector:
            return normalize(_matrix(embeddings1)) @ normalize(_matrix(embeddings2)).T
        from uniembed.core.scores import maxsim_ragged

        documents = _multivectors(embeddings2)
        rows, lengths = torch.cat(documents), torch.tensor([d.shape[0] for d in documents])
        return torch.stack(
            [maxsim_ragged(query, rows, lengths) for query in _multivectors(embeddings1)]
        )

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """(n,) scores of row i with row i."""
        if not self.multivector:
            return (normalize(_matrix(embeddings1)) * normalize(_matrix(embeddings2))).sum(-1)
        from uniembed.core.scores import maxsim

        pairs = zip(_multivectors(embeddings1), _multivectors(embeddings2), strict=True)
        return torch.stack([maxsim(query, document[None])[0] for query, document in pairs])


def is_programming(task_metadata: Any) -> bool:
    """Whether an MTEB task is about code (a ``*-Code`` language, a programming language or the
    Programming domain) — as MTEB's jina-embeddings-v4 entry decides it."""
    languages = require("mteb.languages.programming_languages", "mteb", "the MTEB integration")
    return (
        any(lang.endswith("-Code") for lang in task_metadata.eval_langs)
        or any(lang in languages.PROGRAMMING_LANGS for lang in task_metadata.languages)
        or "Programming" in (task_metadata.domains or [])
    )


def _matrix(embeddings: Any) -> torch.Tensor:
    tensor = torch.as_tensor(
        np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings
    )
    return tensor.float().reshape(-1, tensor.shape[-1])


def _multivectors(embeddings: Any) -> list[torch.Tensor]:
    """Ragged multi-vectors from a list of (tokens, dim) arrays, or a padded (n, tokens, dim) array
    (as MTEB passes a single query when reranking); all-zero rows are padding and dropped."""
    if isinstance(embeddings, (torch.Tensor, np.ndarray)) and embeddings.ndim == 3:
        rows = list(torch.as_tensor(embeddings))
    else:
        rows = [torch.as_tensor(e) for e in embeddings]
    return [r.float()[r.abs().sum(-1) > 0] for r in rows]
