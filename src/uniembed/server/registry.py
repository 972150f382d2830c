"""The served models, the names clients use for them, and the task a name carries.

Every served model is listed under its **served name** (``--served-model-name``, default: the last
path component of the model's hub id or directory, e.g. ``jina-embeddings-v4``) and under one
**task name** per task: the served name, a hyphen, and the task with its dot as a hyphen
(``jina-embeddings-v4-retrieval-passage``). A task name carries its task, so clients that cannot
send a ``task`` field (the OpenAI clients of LangChain, LlamaIndex, LiteLLM …) still get the right
one. Requests may also use the model's old aliases (the ``--model`` value, its last path component,
the name the model reports); responses always carry a listed name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from uniembed.errors import InvalidInput, ModelNotFound, ValidationFailed

if TYPE_CHECKING:
    from uniembed.embedder import Embedder


def last_path_component(name: str) -> str:
    """The repository name of a hub id or the directory name of a path.

    >>> last_path_component("jinaai/jina-embeddings-v4"), last_path_component("/srv/models/v4/")
    ('jina-embeddings-v4', 'v4')
    """
    return PurePosixPath(name.replace("\\", "/").rstrip("/")).name


def task_model_name(served: str, task: str) -> str:
    """The listed name that carries ``task``.

    >>> task_model_name("jina-embeddings-v4", "retrieval.passage")
    'jina-embeddings-v4-retrieval-passage'
    """
    return f"{served}-{task.replace('.', '-')}"


def aliases_of(served_name: str, model_name: str, source: str | None = None) -> list[str]:
    """Names a request may use for a model besides the listed ones: the served name, the ``--model``
    value it was loaded from, their last path components and the name the model reports.

    >>> aliases_of("v4", "jina-embeddings-v4", "/srv/models/v4/")
    ['v4', '/srv/models/v4/', 'jina-embeddings-v4']
    """
    names = (
        served_name,
        last_path_component(served_name),
        source,
        source and last_path_component(source),
        model_name,
    )
    return list(dict.fromkeys(name for name in names if name))


@dataclass(frozen=True)
class ServedModel:
    """One listed name: the embedder behind it and the task it carries (``None``: the request's, or
    the model's default)."""

    id: str
    served: str  # the served name of its embedder (== id for the plain name)
    embedder: Embedder
    task: str | None = None

    def task_for(self, requested: str | None) -> str | None:
        """The task of a request to this name; a task name refuses a different ``task`` field."""
        if self.task is None or requested in (None, self.task):
            return requested or self.task
        raise ValidationFailed(
            f"model {self.id!r} carries the task {self.task!r}; the request's task {requested!r} "
            f"contradicts it (drop the task field, or use model {self.served!r})"
        )

    @property
    def default_task(self) -> str | None:
        return self.task or self.embedder.info.default_task


class ModelRegistry:
    """Served name → :class:`Embedder`, every listed name, and unambiguous aliases; ``None`` (no
    ``model`` field) means the first served model."""

    def __init__(
        self, embedders: Mapping[str, Embedder], sources: Mapping[str, str] | None = None
    ) -> None:
        """``sources``: served name → the ``--model`` value it was loaded from (an alias)."""
        if not embedders:
            raise InvalidInput("serve at least one model")
        self.embedders = dict(embedders)
        self.sources = dict(sources or {})
        self.default = next(iter(self.embedders))
        self.models = self._list_models()
        self._by_alias = self._build_aliases()

    def _list_models(self) -> dict[str, ServedModel]:
        listed: dict[str, ServedModel] = {}
        for served, embedder in self.embedders.items():
            names = [(served, None)] + [
                (task_model_name(served, t), t) for t in embedder.info.tasks
            ]
            for name, task in names:
                if name in listed:
                    raise InvalidInput(
                        f"the served name {name!r} is used twice; give each model its own "
                        "--served-model-name"
                    )
                listed[name] = ServedModel(name, served, embedder, task)
        return listed

    def _build_aliases(self) -> dict[str, str]:
        owners: dict[str, set[str]] = {}
        for served, embedder in self.embedders.items():
            for alias in aliases_of(served, embedder.info.name, self.sources.get(served)):
                owners.setdefault(alias, set()).add(served)
        return {alias: next(iter(names)) for alias, names in owners.items() if len(names) == 1}

    @property
    def names(self) -> list[str]:
        """The served names (one per model)."""
        return list(self.embedders)

    def lookup(self, requested: str | None) -> ServedModel:
        """The listed model a request names; unknown names → 404 listing the served ones."""
        if requested is None:
            return self.models[self.default]
        if requested in self.models:
            return self.models[requested]
        served = self._by_alias.get(requested)
        if served is None:
            raise ModelNotFound(
                f"model {requested!r} is not served here; served models: {', '.join(self.models)}"
            )
        return self.models[served]

    def resolve(self, requested: str | None) -> tuple[str, Embedder]:
        """The served name and embedder a request names (a task name resolves to its model)."""
        model = self.lookup(requested)
        return model.served, model.embedder
