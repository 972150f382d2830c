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
    """No NaN or infinity in a float array; contiguous float16 and float32 by their exponent bits
    in one compiled pass (numpy's ``isfinite`` widens float16 and writes a mask).

    >>> all_finite(np.array([1.0, 65504.0], np.float16)), all_finite(np.array([np.inf], np.float16))
    (True, False)
    """
    if array.dtype in (np.float16, np.float32) and array.flags.c_contiguous:
        from uniembed.core._kernels import any_nonfinite

        return not any_nonfinite(array.reshape(-1).view(np.uint8), array.dtype == np.float16)
    return bool(np.isfinite(array).all())
