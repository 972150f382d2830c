"""One domain error type; the server maps each kind to an HTTP status in one table
(:data:`uniembed.server.errors.STATUS_BY_ERROR`)."""

from __future__ import annotations


class UniembedError(Exception):
    """Base of every error uniembed raises on purpose; ``message`` is safe to show to a client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def labelled(error: UniembedError, index: int | None) -> UniembedError:
    """The same error type with ``input {index}:`` in front of its message (once; as is for
    ``None``).

    >>> labelled(InvalidInput("not an image"), 3).message
    'input 3: not an image'
    """
    if index is None or error.message.startswith(f"input {index}:"):
        return error
    return type(error)(f"input {index}: {error.message}")


class InvalidInput(UniembedError):
    """A request or call argument is malformed or refers to something that does not exist."""


class ValidationFailed(InvalidInput):
    """An option has a value outside what the model or the schema allows (HTTP 422, not 400)."""


class InputTooLarge(UniembedError):
    """An input exceeds a configured limit (bytes, pixels, pages, tokens, items)."""


class FetchError(InvalidInput):
    """A URL could not be fetched, or was refused (scheme, private address, size, timeout)."""


class ModelNotFound(UniembedError):
    """The requested model is not served by this process."""


class CheckpointError(UniembedError):
    """A model snapshot is missing, incomplete or malformed; the message names the file."""


class MissingDependency(UniembedError):
    """An optional feature needs a package that is not installed; the message names the extra."""


class BatchFailed(UniembedError):
    """The model raised while running a batch; the cause is chained and logged, never sent to
    clients."""


class Overloaded(UniembedError):
    """The batching queue is full; the caller should retry later."""


class NotReady(UniembedError):
    """The engine is starting or shutting down."""
