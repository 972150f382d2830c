"""Wire encodings of embeddings, byte-exact with the Jina and OpenAI embedding APIs.

Jina's ``embedding_type`` (one name or a list of names):

* ``float``   — a list of numbers (the float32 values);
* ``base64``  — base64 of the vector as little-endian float32 bytes (``'<f4'``);
* ``ubinary`` — sign bits (bit = value > 0) packed 8 per byte, most significant bit first
  (``numpy.packbits``), the vector padded with zero bits to a multiple of 8, as uint8 numbers;
* ``binary``  — the same bytes as int8 numbers: ``uint8 - 128``.

OpenAI's ``encoding_format`` is ``float`` or ``base64`` with the same meaning (OpenAI's base64 is
also little-endian float32).

A multi-vector (``(tokens, dim)``) is encoded token by token: a list of per-token encodings.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from uniembed.errors import InvalidInput

EMBEDDING_TYPES = ("float", "base64", "binary", "ubinary")
OPENAI_ENCODING_FORMATS = ("float", "base64")
FLOAT32_LE = np.dtype("<f4")

Vector = torch.Tensor | np.ndarray
Encoded = list[float] | str | list[int]


def parse_kinds(kinds: str | Sequence[str], allowed: Sequence[str] = EMBEDDING_TYPES) -> list[str]:
    """Validate one encoding name or a list of them → the list of names, duplicates removed.

    >>> parse_kinds(["ubinary", "float", "ubinary"])
    ['ubinary', 'float']
    """
    names = [kinds] if isinstance(kinds, str) else list(kinds)
    if not names:
        raise InvalidInput(f"give at least one embedding type; valid types: {', '.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise InvalidInput(
                f"unknown embedding type {name!r}; valid types: {', '.join(allowed)}"
            )
    return list(dict.fromkeys(names))


def as_float32(vector: Vector) -> np.ndarray:
    """A tensor or array (any float dtype, any device) as a contiguous little-endian float32
    array."""
    if isinstance(vector, torch.Tensor):
        vector = vector.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.ascontiguousarray(vector, dtype=FLOAT32_LE)


def pack_sign_bits(vector: np.ndarray) -> np.ndarray:
    """Bits ``value > 0`` packed MSB-first into uint8, zero-padded to whole bytes.

    >>> pack_sign_bits(np.array([1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 3.0, 4.0, 9.0])).tolist()
    [155, 128]
    """
    return np.packbits(vector > 0, axis=-1, bitorder="big")


def _encode_vector(vector: np.ndarray, kind: str) -> Encoded:
    if kind == "float":
        return vector.tolist()
    if kind == "base64":
        return base64.b64encode(vector.tobytes()).decode("ascii")
    packed = pack_sign_bits(vector)
    if kind == "ubinary":
        return packed.tolist()
    return (packed.astype(np.int16) - 128).astype(np.int8).tolist()


def encode_embedding(vector: Vector, kind: str) -> Encoded | list[Encoded]:
    """Encode one embedding: a vector ``(dim,)``, or a multi-vector ``(tokens, dim)`` row by row.

    >>> encode_embedding(np.array([1.0, -2.0]), "base64")
    'AACAPwAAAMA='
    >>> encode_embedding(np.array([[1.0, -2.0], [-1.0, 3.0]]), "ubinary")
    [[128], [64]]
    """
    parse_kinds(kind)
    return _encode(as_float32(vector), kind)


def _encode(array: np.ndarray, kind: str) -> Encoded | list[Encoded]:
    if array.ndim == 1:
        return _encode_vector(array, kind)
    if array.ndim == 2:
        return [_encode_vector(row, kind) for row in array]
    raise InvalidInput(
        f"an embedding has 1 (vector) or 2 (multi-vector) dimensions, got shape {array.shape}"
    )


def encode_all(embeddings: Iterable[Vector], kinds: str | Sequence[str]) -> list[Any]:
    """The JSON ``embedding`` value of each item of a response.

    ``kinds`` is the request's ``embedding_type``: one name gives each item's encoding directly;
    a list of names (even of one) gives each item a dict ``{kind: encoding}`` in the order asked,
    which is what the Jina API returns for a list-valued ``embedding_type``.

    >>> encode_all([np.array([0.5, -1.0])], "float")
    [[0.5, -1.0]]
    >>> encode_all([np.array([0.5, -1.0])], ["float", "ubinary"])
    [{'float': [0.5, -1.0], 'ubinary': [128]}]
    """
    names = parse_kinds(kinds)
    items = [as_float32(e) for e in embeddings]
    if isinstance(kinds, str):
        return [_encode(item, kinds) for item in items]
    return [{name: _encode(item, name) for name in names} for item in items]


def encode_openai(vector: Vector, encoding_format: str) -> Encoded | list[Encoded]:
    """OpenAI ``encoding_format`` (``float`` | ``base64``) of one embedding."""
    parse_kinds(encoding_format, OPENAI_ENCODING_FORMATS)
    return encode_embedding(vector, encoding_format)


def decode_base64(data: str) -> np.ndarray:
    """Inverse of the ``base64`` encoding → float32 array ``(dim,)``.

    >>> decode_base64("AACAPwAAAMA=").tolist()
    [1.0, -2.0]
    """
    try:
        raw = base64.b64decode(data, validate=True)
    except binascii.Error as error:
        raise InvalidInput(f"not valid base64: {error}") from None
    if len(raw) % FLOAT32_LE.itemsize:
        raise InvalidInput(f"base64 embedding has {len(raw)} bytes, not a multiple of 4 (float32)")
    return np.frombuffer(raw, dtype=FLOAT32_LE).astype(np.float32)


def decode_ubinary(values: Sequence[int], dim: int | None = None) -> np.ndarray:
    """Inverse of ``ubinary`` → the sign bits as uint8 0/1, cut to ``dim`` (padding dropped).

    >>> decode_ubinary([155, 128], dim=9).tolist()
    [1, 0, 0, 1, 1, 0, 1, 1, 1]
    """
    packed = np.asarray(values)
    if packed.ndim != 1 or packed.size and (packed.min() < 0 or packed.max() > 255):
        raise InvalidInput("ubinary values must be a list of integers 0…255")
    return _unpack(packed.astype(np.uint8), dim)


def decode_binary(values: Sequence[int], dim: int | None = None) -> np.ndarray:
    """Inverse of ``binary`` (int8 = uint8 − 128) → the sign bits as uint8 0/1.

    >>> decode_binary([27, 0], dim=9).tolist()
    [1, 0, 0, 1, 1, 0, 1, 1, 1]
    """
    signed = np.asarray(values)
    if signed.ndim != 1 or signed.size and (signed.min() < -128 or signed.max() > 127):
        raise InvalidInput("binary values must be a list of integers -128…127")
    return _unpack((signed.astype(np.int16) + 128).astype(np.uint8), dim)


def _unpack(packed: np.ndarray, dim: int | None) -> np.ndarray:
    bits = np.unpackbits(packed, bitorder="big")
    if dim is not None:
        if not 0 <= dim <= bits.size:
            raise InvalidInput(
                f"dim {dim} does not fit in {packed.size} packed bytes ({bits.size} bits)"
            )
        bits = bits[:dim]
    return bits
