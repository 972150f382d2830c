"""The one settings object of the service, built by the CLI (``uniembed serve``) or by tests.

Nothing here reads the environment: the CLI maps every flag to a field and typer gives each flag its
``UNIEMBED_*`` environment-variable twin.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uniembed.core.checks import check_int
from uniembed.engine.planning import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_GATHER_SECONDS,
    DEFAULT_MAX_QUEUE_ROWS,
    DEFAULT_TOKEN_BUDGET,
)
from uniembed.errors import InvalidInput
from uniembed.inputs.budget import (
    DEFAULT_MAX_FETCH_BYTES,
    DEFAULT_MAX_ITEMS,
    DEFAULT_MAX_PIXELS,
    RequestBudget,
)
from uniembed.inputs.limits import InputLimits
from uniembed.models import DEFAULT_MODEL
from uniembed.server.registry import last_path_component
from uniembed.server.schemas import MAX_ITEMS_HARD

MiB = 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    """Everything the service needs to run; every value is checked when the object is built.

    >>> ServerSettings(port=9000).port
    9000
    >>> ServerSettings(max_items_per_request=0)
    Traceback (most recent call last):
    ...
    uniembed.errors.InvalidInput: max_items_per_request must be an integer >= 1, got 0
    """

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    served_model_names: tuple[
        str, ...
    ] = ()  # one per model; empty: each model's last path component
    host: str = "127.0.0.1"
    port: int = 8080
    device: str | None = None  # None: CUDA when available, else CPU
    dtype: str | None = None  # None: bfloat16 on CUDA, float32 on CPU
    api_keys: tuple[str, ...] = field(default=(), repr=False)  # empty: no authentication
    adapters: tuple[tuple[str, str], ...] = ()  # (task name, adapter folder), served by every model
    index: str | None = (
        None  # an index (directory or Qdrant URL) to search: /v1/search, the search page
    )
    # batching
    token_budget: int = DEFAULT_TOKEN_BUDGET  # tokens per forward batch (real ones when packed)
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # rows per forward batch
    packing: bool = True  # padding-free batches; False: padded ones, the reference path
    max_queue_rows: int = (
        DEFAULT_MAX_QUEUE_ROWS  # rows waiting per model before new requests get 429
    )
    batch_gather_ms: float = (
        DEFAULT_MAX_GATHER_SECONDS * 1000
    )  # wait for returning clients; 0: never
    cpu_workers: int = 8  # threads for tokenising, image/PDF decoding and large responses
    torch_threads: int | None = None  # CPU threads of each model's forward; None: torch's default
    # connections (see uniembed.server.connections)
    max_connections: int = 2048  # open connections; at the limit the longest-idle one is closed
    max_concurrent_requests: int = 512  # requests in progress; more get 503 + Retry-After
    header_timeout: float = 10.0  # s from connecting (or the last response) to complete headers
    body_timeout: float = 60.0  # s from the headers to the end of the body
    keep_alive_timeout: float = 5.0  # s an idle connection stays open after a response
    # request limits
    max_body_bytes: int = 64 * MiB
    max_items_per_request: int = DEFAULT_MAX_ITEMS
    max_pixels_per_request: int = DEFAULT_MAX_PIXELS
    max_fetch_bytes_per_request: int = DEFAULT_MAX_FETCH_BYTES
    max_tokens_per_item: int | None = None  # None: the model's context length
    max_tokens_per_request: int = 1_000_000
    input_limits: InputLimits = field(default_factory=InputLimits)
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not self.models:
            raise InvalidInput("serve at least one model")
        if len(set(self.models)) != len(self.models):
            raise InvalidInput(f"a model is listed twice: {list(self.models)}")
        if not 0 <= self.port <= 65535:
            raise InvalidInput(f"port must be between 0 and 65535, got {self.port}")
        names = [name for name, _ in self.adapters]
        if len(set(names)) != len(names):
            raise InvalidInput(f"an adapter name is given twice: {names}")
        if any(not key or key != key.strip() for key in self.api_keys):
            raise InvalidInput("API keys must be non-empty and have no surrounding whitespace")
        for name in (
            "token_budget",
            "max_batch_size",
            "max_queue_rows",
            "cpu_workers",
            "max_body_bytes",
            "max_items_per_request",
            "max_tokens_per_request",
            "max_pixels_per_request",
            "max_fetch_bytes_per_request",
            "max_connections",
            "max_concurrent_requests",
        ):
            check_int(name, getattr(self, name))
        if self.max_items_per_request > MAX_ITEMS_HARD:
            raise InvalidInput(
                f"max_items_per_request must be at most {MAX_ITEMS_HARD} (the API's bound), got "
                f"{self.max_items_per_request}"
            )
        for name in ("header_timeout", "body_timeout", "keep_alive_timeout"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value <= 3600
            ):
                raise InvalidInput(f"{name} must be between 0 and 3600 seconds, got {value!r}")
        self._check_served_names()
        if not 0 <= self.batch_gather_ms <= 1000:
            raise InvalidInput(
                f"batch_gather_ms must be between 0 and 1000, got {self.batch_gather_ms}"
            )
        for name in ("max_tokens_per_item", "torch_threads"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name))

    def _check_served_names(self) -> None:
        names = self.served_names
        if self.served_model_names and len(self.served_model_names) != len(self.models):
            raise InvalidInput(
                f"give one served model name per model: {len(self.models)} models, "
                f"{len(self.served_model_names)} names"
            )
        if any(not name or name != name.strip() or "/" in name for name in self.served_model_names):
            raise InvalidInput(
                "served model names must be non-empty, without surrounding spaces or '/'"
            )
        if len(set(names)) != len(names):
            raise InvalidInput(
                f"two models would be served as the same name {names}; give --served-model-name"
            )

    def request_budget(self) -> RequestBudget:
        """A fresh budget for one request, from the ``*_per_request`` limits."""
        return RequestBudget(
            max_items=self.max_items_per_request,
            max_pixels=self.max_pixels_per_request,
            max_fetch_bytes=self.max_fetch_bytes_per_request,
        )

    @property
    def served_names(self) -> tuple[str, ...]:
        """The name each model is served as, in order.

        >>> ServerSettings(models=("jinaai/jina-embeddings-v4", "/m/v3/")).served_names
        ('jina-embeddings-v4', 'v3')
        """
        return self.served_model_names or tuple(last_path_component(model) for model in self.models)
