"""Errors at the HTTP edge: ONE table from error types to statuses, and the handlers using it.

Every error body is ``{"detail": ...}``: a message string, or for request-validation errors a list of
``{"loc", "msg", "type"}`` (FastAPI's form, without echoing the offending input back).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from uniembed.errors import (
    BatchFailed,
    CheckpointError,
    FetchError,
    InputTooLarge,
    InvalidInput,
    MissingDependency,
    ModelNotFound,
    NotReady,
    Overloaded,
    UniembedError,
    ValidationFailed,
)

logger = logging.getLogger("uniembed.server")

RETRY_AFTER_SECONDS = 1


class Unauthorized(UniembedError):
    """A missing or wrong API key."""


STATUS_BY_ERROR: dict[type[UniembedError], int] = {
    InvalidInput: 400,
    FetchError: 400,
    Unauthorized: 401,
    ModelNotFound: 404,
    InputTooLarge: 413,
    ValidationFailed: 422,
    Overloaded: 429,
    BatchFailed: 500,
    CheckpointError: 500,
    MissingDependency: 500,
    NotReady: 503,
}
"""The status of each error type; a subclass not listed takes its nearest listed base's status."""


def status_of(error: UniembedError) -> int:
    """The HTTP status of ``error`` from :data:`STATUS_BY_ERROR`.

    >>> status_of(FetchError("refused")), status_of(Overloaded("full"))
    (400, 429)
    """
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]  # type: ignore[index]
    return 500


def error_response(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    """A ``{"detail": ...}`` response; 429 and 503 tell the client when to retry."""
    headers = dict(headers or {})
    if status in (429, 503):
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _uniembed_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, UniembedError)
    status = status_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, error.message, headers)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return error_response(422, clean_validation_errors(error.errors()))


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return error_response(error.status_code, error.detail, dict(error.headers or {}))


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response(500, "internal server error; the cause is in the server log")


def clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"loc", "msg", "type"}``: inputs are not echoed (they may be megabytes)."""
    return [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in errors]


def install_error_handlers(app: FastAPI) -> None:
    """Route every error kind through the table above."""
    app.add_exception_handler(UniembedError, _uniembed_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
