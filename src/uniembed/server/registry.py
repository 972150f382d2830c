"""The served models and how a request's ``model`` field finds one of them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath

from uniembed.embedder import Embedder
from uniembed.errors import InvalidInput, ModelNotFound


def aliases_of(served_name: str, model_name: str) -> list[str]:
    """Names a request may use for a model: the served name, its last path component (a hub id's
    repository name or a directory's name) and the name the model reports.

    >>> aliases_of("jinaai/jina-embeddings-v4", "jina-embeddings-v4")
    ['jinaai/jina-embeddings-v4', 'jina-embeddings-v4']
    >>> aliases_of("/srv/models/v4/", "jina-embeddings-v4")
    ['/srv/models/v4/', 'v4', 'jina-embeddings-v4']
    """
    last = PurePosixPath(served_name.replace("\\", "/").rstrip("/")).name
    return list(dict.fromkeys(name for name in (served_name, last, model_name) if name))


class ModelRegistry:
    """Served name → :class:`Embedder`, with unambiguous aliases; ``None`` means the first model."""

    def __init__(self, embedders: Mapping[str, Embedder]) -> None:
        if not embedders:
            raise InvalidInput("serve at least one model")
        self.embedders = dict(embedders)
        self.default = next(iter(self.embedders))
        self._by_alias = self._build_aliases()

    def _build_aliases(self) -> dict[str, str]:
        owners: dict[str, set[str]] = {}
        for served, embedder in self.embedders.items():
            for alias in aliases_of(served, embedder.info.name):
                owners.setdefault(alias, set()).add(served)
        by_alias = {alias: next(iter(names)) for alias, names in owners.items() if len(names) == 1}
        by_alias.update({served: served for served in self.embedders})  # served names always win
        return by_alias

    @property
    def names(self) -> list[str]:
        return list(self.embedders)

    def resolve(self, requested: str | None) -> tuple[str, Embedder]:
        """The served name and embedder a request asks for; unknown names → 404 listing the served ones."""
        served = self.default if requested is None else self._by_alias.get(requested)
        if served is None:
            raise ModelNotFound(f"model {requested!r} is not served here; served models: {', '.join(self.names)}")
        return served, self.embedders[served]
