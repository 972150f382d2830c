"""Small validators every layer uses, each rule and its message written once."""

from __future__ import annotations

from uniembed.errors import InvalidInput, UniembedError


def is_int_at_least(value: object, minimum: int = 1) -> bool:
    """Whether ``value`` is an integer (``True`` is not) of at least ``minimum``.

    >>> is_int_at_least(3), is_int_at_least(True), is_int_at_least(2.0), is_int_at_least(0, 0)
    (True, False, False, True)
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_int(
    name: str,
    value: object,
    *,
    minimum: int = 1,
    error: type[UniembedError] = InvalidInput,
) -> int:
    """``value`` when it is an integer of at least ``minimum``, else ``error`` naming ``name``.

    >>> check_int("k", 0)
    Traceback (most recent call last):
    uniembed.errors.InvalidInput: k must be an integer >= 1, got 0
    """
    if not is_int_at_least(value, minimum):
        raise error(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value  # type: ignore[return-value]
