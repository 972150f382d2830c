"""Errors at the HTTP edge: ONE table of error codes and their statuses (:data:`ERROR_CODES`), the
code of each error type (:data:`ERROR_TABLE`) and the handlers using them.

Every error body speaks both dialects::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "dimensions",
               "code": "invalid_option"},
     "detail": "..."}

``error`` is OpenAI's form (the openai client shows ``error.message`` in its exception); ``detail``
is what Jina and FastAPI clients read: the same message, or for a schema violation the list of
``{"loc", "msg", "type"}``. Inputs are never echoed back (they may be megabytes), and what a schema
error does echo is bounded: at most :data:`MAX_ISSUES` violations, each field name cut to
:data:`MAX_NAME_CHARS` characters, so a body of a million unknown fields gets a short answer.
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
from uniembed.server.schemas import MAX_ITEMS_HARD, EmbeddingRequest

logger = logging.getLogger("uniembed.server")

RETRY_AFTER_SECONDS = 1
MAX_ISSUES = 10  # schema violations listed in one error body (the rest are counted)
MAX_NAME_CHARS = 64  # characters of a field name (or any part of an error's loc) echoed back


class Unauthorized(UniembedError):
    """A missing or wrong API key."""


ERROR_CODES: dict[str, int] = {
    "invalid_json": 400,  # the body is not JSON, whatever the flaw
    "invalid_input": 400,
    "fetch_failed": 400,
    "invalid_encoding": 400,  # a corrupt gzip/deflate body
    "invalid_header": 400,  # e.g. a Content-Length that is not a number
    "invalid_api_key": 401,
    "model_not_found": 404,
    "not_found": 404,  # an unknown route
    "method_not_allowed": 405,
    "request_timeout": 408,
    "input_too_large": 413,
    "unsupported_media_type": 415,
    "unsupported_content_encoding": 415,
    "invalid_request": 422,  # JSON that does not fit the schema
    "invalid_option": 422,
    "queue_full": 429,
    "model_failed": 500,
    "checkpoint_error": 500,
    "missing_dependency": 500,
    "internal_error": 500,
    "overloaded": 503,
    "not_ready": 503,
}
"""Every error code the service answers with and its HTTP status (docs/server.md's table)."""

ERROR_TABLE: dict[type[UniembedError], str] = {
    InvalidInput: "invalid_input",
    FetchError: "fetch_failed",
    Unauthorized: "invalid_api_key",
    ModelNotFound: "model_not_found",
    InputTooLarge: "input_too_large",
    ValidationFailed: "invalid_option",
    Overloaded: "queue_full",
    BatchFailed: "model_failed",
    CheckpointError: "checkpoint_error",
    MissingDependency: "missing_dependency",
    NotReady: "not_ready",
}
"""The code of each error type; a subclass not listed takes its nearest listed base's."""

STARLETTE_CODES = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}
"""The codes of the errors Starlette raises itself (its only 400: a body it could not parse)."""

TYPE_BY_STATUS = {
    401: "authentication_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}
"""OpenAI's error ``type``; every other status is an ``invalid_request_error``."""


def code_of(error: UniembedError) -> str:
    """The code of ``error`` from :data:`ERROR_TABLE`.

    >>> code_of(FetchError("refused")), code_of(Overloaded("full"))
    ('fetch_failed', 'queue_full')
    """
    for cls in type(error).__mro__:
        if cls in ERROR_TABLE:
            return ERROR_TABLE[cls]  # type: ignore[index]
    return "internal_error"


def status_of(error: UniembedError) -> int:
    """The HTTP status of ``error`` (its code's, in :data:`ERROR_CODES`).

    >>> status_of(FetchError("refused")), status_of(Overloaded("full"))
    (400, 429)
    """
    return ERROR_CODES[code_of(error)]


def error_body(
    code: str, message: str, *, param: str | None = None, detail: Any = None
) -> dict[str, Any]:
    """The two-dialect body of an error with ``code`` (see the module docstring).

    >>> error_body("input_too_large", "too big")["error"]  # doctest: +NORMALIZE_WHITESPACE
    {'message': 'too big', 'type': 'invalid_request_error', 'param': None,
     'code': 'input_too_large'}
    """
    error = {
        "message": message,
        "type": TYPE_BY_STATUS.get(ERROR_CODES[code], "invalid_request_error"),
        "param": param,
        "code": code,
    }
    return {"error": error, "detail": message if detail is None else detail}


def error_response(
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    *,
    param: str | None = None,
    detail: Any = None,
) -> JSONResponse:
    """The response to an error with ``code`` (its status from :data:`ERROR_CODES`); 429 and 503
    tell the client when to retry."""
    status = ERROR_CODES[code]
    headers = dict(headers or {})
    if status in (429, 503):
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    body = error_body(code, message, param=param, detail=detail)
    return JSONResponse(body, status_code=status, headers=headers)


async def _uniembed_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, UniembedError)
    code = code_of(error)
    headers = {"WWW-Authenticate": "Bearer"} if ERROR_CODES[code] == 401 else None
    return error_response(code, error.message, headers, param=_param_of(error))


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    too_many = _too_many_inputs(request, error.errors())
    if too_many is not None:  # the same 413 as any list over max_items_per_request
        return await _uniembed_error(request, too_many)
    issues = clean_validation_errors(error.errors())
    code, message = classify_body_errors(error.errors())
    if code != "invalid_request":  # not JSON, or not sent as JSON: one message
        return error_response(code, message)
    param = ".".join(str(part) for part in issues[0]["loc"][1:]) if issues else None
    return error_response(code, message, param=param or None, detail=issues)


def _too_many_inputs(request: Request, errors: Any) -> InputTooLarge | None:
    """The item-limit error for an ``input`` list longer than the schema allows, else ``None``."""
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if error.get("type") == "too_long" and loc[:2] == ("body", "input"):
            count = int(error.get("ctx", {}).get("actual_length", MAX_ITEMS_HARD + 1))
            budget = request.app.state.settings.request_budget()
            try:
                budget.charge_items(count)
            except InputTooLarge as refused:
                return refused
    return None


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    message = str(error.detail)
    code = STARLETTE_CODES.get(error.status_code)
    if code is None:  # nothing in Starlette raises others; should it one day, its status stands
        return JSONResponse(error_body("internal_error", message), status_code=error.status_code)
    if code == "invalid_json":
        message = f"the body is not valid JSON ({message})"
    return error_response(code, message, dict(error.headers or {}))


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return error_response("internal_error", "internal server error; the cause is in the server log")


def classify_body_errors(errors: Any) -> tuple[str, str]:
    """The code and a one-line message for FastAPI's request-validation errors: a body that is
    not JSON is 400 whatever the flaw; a body without a JSON content type 415; JSON that does not
    fit the schema 422.

    >>> classify_body_errors(
    ...     [{"type": "json_invalid", "loc": ("body", 3), "msg": "JSON decode error"}]
    ... )[0]
    'invalid_json'
    >>> classify_body_errors([{"type": "int_type", "loc": ("body", "dimensions"), "msg": "bad"}])
    ('invalid_request', 'dimensions: bad')
    """
    errors = list(errors)
    whole_body = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid_json", "the body is not valid JSON: " + _describe_all(errors)
    if any(e.get("type") == "missing" for e in whole_body):
        return "invalid_json", "the body is empty; send a JSON object"
    if any(isinstance(e.get("input"), (bytes, bytearray)) for e in whole_body):
        return (
            "unsupported_media_type",
            "the body must be JSON sent with Content-Type: application/json",
        )
    return "invalid_request", _describe_all(errors)


def _describe_all(errors: list[Any]) -> str:
    """The first :data:`MAX_ISSUES` errors, one clause each, and how many more there are."""
    described = "; ".join(_describe(e) for e in errors[:MAX_ISSUES])
    more = len(errors) - MAX_ISSUES
    return f"{described}; and {more} more" if more > 0 else described


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in _short_loc(error)[1:])
    return f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", ""))


def _short_loc(error: Any) -> list[str | int]:
    """An error's ``loc`` with every name cut to :data:`MAX_NAME_CHARS` characters.

    >>> _short_loc({"loc": ("body", "x" * 100, 3)})[1]
    'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…'
    """
    return [
        part if isinstance(part, int) else _cut(str(part), MAX_NAME_CHARS)
        for part in tuple(error.get("loc", ()))
    ]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _param_of(error: UniembedError) -> str | None:
    """The request field an error is about, when the message starts with it (``input 3: …``,
    ``dimensions must be …``).

    >>> (
    ...     _param_of(InvalidInput("input 3: not an image")),
    ...     _param_of(ValidationFailed("dimensions must be 1")),
    ... )
    ('input.3', 'dimensions')
    """
    head = error.message.split(":", 1)[0]
    if head.startswith("input ") and head[6:].isdigit():
        return f"input.{head[6:]}"
    first = error.message.split(" ", 1)[0]
    return first if first in EmbeddingRequest.model_fields and first != "input" else None


def clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors as ``{"loc", "msg", "type"}``: inputs are not echoed (they may be
    megabytes), names are cut and at most :data:`MAX_ISSUES` errors are listed."""
    return [
        {"loc": _short_loc(e), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in list(errors)[:MAX_ISSUES]
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Route every error kind through the tables above."""
    app.add_exception_handler(UniembedError, _uniembed_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
