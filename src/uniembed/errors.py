"""One domain error type; the server maps each kind to an HTTP status in one table."""

from __future__ import annotations


class UniembedError(Exception):
    """Base of every error uniembed raises on purpose. ``status`` is the HTTP status it maps to."""

    status: int = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(UniembedError):
    """A request or call argument is malformed or refers to something that does not exist."""

    status = 400


class ValidationFailed(UniembedError):
    """A field has a value outside what the schema allows (FastAPI-style 422)."""

    status = 422


class InputTooLarge(UniembedError):
    """An input exceeds a configured limit (bytes, pixels, pages, tokens, items)."""

    status = 413


class FetchError(InvalidInput):
    """A URL could not be fetched, or was refused (scheme, private address, size, timeout)."""


class ModelNotFound(UniembedError):
    """The requested model is not served by this process."""

    status = 404


class CheckpointError(UniembedError):
    """A model snapshot is missing, incomplete or malformed; the message names the file."""

    status = 500


class Overloaded(UniembedError):
    """The batching queue is full; the client should retry later."""

    status = 429


class NotReady(UniembedError):
    """The service is starting or shutting down."""

    status = 503
