from __future__ import annotations

import base64
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from uniembed.core.wire import (
    EMBEDDING_TYPES,
    decode_base64,
    decode_binary,
    decode_ubinary,
    encode_all,
    encode_embedding,
    encode_openai,
    pack_sign_bits,
    parse_kinds,
)
from uniembed.errors import InvalidInput

finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
vectors = arrays(np.float32, st.integers(1, 40), elements=finite_f32)


# ----------------------------------------------------------------- exact bytes
def test_float_is_python_floats_of_the_float32_values() -> None:
    encoded = encode_embedding(torch.tensor([0.1, -2.5, 0.0]), "float")
    assert encoded == [float(np.float32(0.1)), -2.5, 0.0]
    assert all(type(v) is float for v in encoded)


def test_base64_is_little_endian_float32() -> None:
    expected = base64.b64encode(struct.pack("<3f", 1.0, -2.0, 0.5)).decode()
    assert encode_embedding(np.array([1.0, -2.0, 0.5]), "base64") == expected
    # hand-computed: 1.0 = 00 00 80 3F, -2.0 = 00 00 00 C0
    assert encode_embedding(np.array([1.0, -2.0]), "base64") == "AACAPwAAAMA="


def test_base64_of_bfloat16_tensor_is_float32() -> None:
    vector = torch.tensor([1.0, -2.0], dtype=torch.bfloat16)
    assert encode_embedding(vector, "base64") == "AACAPwAAAMA="


def test_ubinary_packs_sign_bits_msb_first_with_zero_padding() -> None:
    # bits: 1 0 0 1 1 0 1 1 | 1 (0 is not positive) → 0b10011011 = 155, 0b1_0000000 = 128
    vector = np.array([1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 3.0, 4.0, 9.0])
    assert encode_embedding(vector, "ubinary") == [155, 128]


def test_binary_is_ubinary_minus_128_as_int8() -> None:
    vector = np.array([1.0, -1.0, 0.0, 2.0, 0.5, -0.5, 3.0, 4.0, 9.0])
    assert encode_embedding(vector, "binary") == [27, 0]
    assert encode_embedding(-np.ones(8), "binary") == [-128]
    assert encode_embedding(np.ones(8), "binary") == [127]


def test_multivector_is_encoded_row_by_row() -> None:
    multi = torch.tensor([[1.0, -2.0], [-1.0, 3.0]])
    assert encode_embedding(multi, "ubinary") == [[128], [64]]
    assert encode_embedding(multi, "float") == [[1.0, -2.0], [-1.0, 3.0]]
    assert encode_embedding(multi, "base64") == [
        encode_embedding(multi[0], "base64"),
        encode_embedding(multi[1], "base64"),
    ]


def test_three_dimensional_input_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="1 \\(vector\\) or 2 \\(multi-vector\\)"):
        encode_embedding(np.zeros((2, 2, 2)), "float")


# ----------------------------------------------------------------- kinds
def test_encode_all_single_kind_gives_values() -> None:
    out = encode_all([np.array([0.5, -1.0]), np.array([-0.5, 1.0])], "ubinary")
    assert out == [[128], [64]]


def test_encode_all_list_of_kinds_gives_dicts_in_asked_order() -> None:
    out = encode_all(torch.tensor([[0.5, -1.0]]), ["ubinary", "float", "ubinary"])
    assert out == [{"ubinary": [128], "float": [0.5, -1.0]}]
    assert list(out[0]) == ["ubinary", "float"]


def test_encode_all_one_element_list_still_gives_dicts() -> None:
    assert encode_all([np.array([1.0])], ["base64"]) == [{"base64": "AACAPw=="}]


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(
        InvalidInput,
        match="unknown embedding type 'int8'; valid types: float, base64, binary, ubinary",
    ):
        encode_embedding(np.zeros(2), "int8")
    with pytest.raises(InvalidInput, match="unknown embedding type 'bits'"):
        encode_all([np.zeros(2)], ["float", "bits"])


def test_empty_kind_list_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="at least one embedding type"):
        parse_kinds([])


def test_openai_formats() -> None:
    assert encode_openai(np.array([1.0, -2.0]), "base64") == "AACAPwAAAMA="
    assert encode_openai(np.array([1.0, -2.0]), "float") == [1.0, -2.0]
    with pytest.raises(InvalidInput, match="valid types: float, base64$"):
        encode_openai(np.zeros(2), "binary")


# ----------------------------------------------------------------- round trips
@settings(max_examples=60, deadline=None)
@given(vectors)
def test_base64_round_trip(vector: np.ndarray) -> None:
    decoded = decode_base64(encode_embedding(vector, "base64"))  # type: ignore[arg-type]
    assert decoded.dtype == np.float32
    assert decoded.tobytes() == vector.astype("<f4").tobytes()


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_float_round_trip(vector: np.ndarray) -> None:
    assert np.array_equal(np.array(encode_embedding(vector, "float"), dtype=np.float32), vector)


@settings(max_examples=60, deadline=None)
@given(vectors)
def test_binary_encodings_round_trip_to_sign_bits(vector: np.ndarray) -> None:
    signs = (vector > 0).astype(np.uint8)
    ubinary = encode_embedding(vector, "ubinary")
    binary = encode_embedding(vector, "binary")
    assert len(ubinary) == len(binary) == -(-vector.size // 8)  # type: ignore[arg-type]
    assert np.array_equal(decode_ubinary(ubinary, vector.size), signs)  # type: ignore[arg-type]
    assert np.array_equal(decode_binary(binary, vector.size), signs)  # type: ignore[arg-type]
    assert [u - 128 for u in ubinary] == binary  # type: ignore[union-attr]


def test_ubinary_matches_numpy_packbits() -> None:
    vector = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    assert encode_embedding(vector, "ubinary") == np.packbits(vector > 0).tolist()
    assert pack_sign_bits(vector).tolist() == np.packbits(vector > 0).tolist()


def test_decode_without_dim_keeps_padding_bits() -> None:
    assert decode_ubinary([128]).tolist() == [1, 0, 0, 0, 0, 0, 0, 0]


# ----------------------------------------------------------------- decoding errors
def test_decode_base64_rejects_bad_text_and_lengths() -> None:
    with pytest.raises(InvalidInput, match="not valid base64"):
        decode_base64("not base64!")
    with pytest.raises(InvalidInput, match="3 bytes, not a multiple of 4"):
        decode_base64(base64.b64encode(b"abc").decode())


def test_decode_bits_reject_out_of_range_values() -> None:
    with pytest.raises(InvalidInput, match="0…255"):
        decode_ubinary([256])
    with pytest.raises(InvalidInput, match="-128…127"):
        decode_binary([128])
    with pytest.raises(InvalidInput, match="dim 9 does not fit in 1 packed bytes"):
        decode_ubinary([1], dim=9)


def test_every_kind_is_covered() -> None:
    assert set(EMBEDDING_TYPES) == {"float", "base64", "binary", "ubinary"}
