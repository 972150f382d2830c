"""Codecs for stored multi-vector rows, each scored directly by a compiled MaxSim kernel.

A codec turns each token vector (``dim`` float32 values) into a fixed number of bytes,
``bytes_per_token``, one row per token, and scores a query against documents stored back to back
in that form without decoding them first (``uniembed.core._kernels``, built from ``_kernels.c``):

========== ======================= ================================================================
name       bytes per 128-d token   scored by
========== ======================= ================================================================
float16    256                     fp16 → fp32 conversion fused with the dot products (exact)
int8       132 (+ f32 scale)       int8 dot products (AVX512-VNNI), the query quantised per token
binary     20 (signs, 2 × f16)     popcounts (AVX512-VPOPCNTDQ) against a 4-bit query, RaBitQ-style
residual   38 (id, 2-bit, 2 × f16) a per-query centroid table + popcounts on a 2-bit residual
========== ======================= ================================================================

``codec.maxsim(query, codes, offsets)`` returns, for each document ``i`` (code rows
``offsets[i]:offsets[i+1]``), ``Σ_t max_u <q_t, x̂_u>`` over the query's tokens ``q_t`` and the
document's decoded tokens ``x̂_u`` (the codec's estimate of each dot product); ``codes`` may be a
``np.memmap``: it is read in place, never copied. ``codec.error_bound(query, codes, offsets)``
bounds, per document, the difference from the float32 MaxSim of the vectors that were encoded:

* float16: rounding only, ``Σ_t ‖q_t‖ · max_u ‖x̂_u‖ · (2⁻¹¹ + (dim + q) · 2⁻²⁴) · (1 + 2⁻¹⁰)``;
* int8: ``Σ_t max_u (‖q_t‖₁ · s_u / 2 + ‖x̂_u‖₁ · s_t / 2)`` for the row scales ``s_u`` and the
  query token scales ``s_t`` (each value is off by at most half a step);
* binary and residual: ``Σ_t max_u (‖q_t‖ · e_u + ‖q_t − q̂_t‖₁ · m_u)``, with the norm of each
  token's quantisation error ``e_u`` stored in its code (rounded up), the 4-bit query ``q̂_t`` and
  the largest decoded value ``m_u``; certain, by Cauchy-Schwarz. Because both sides are rotated by a
  random orthogonal (signed Hadamard) map first, ``<q_t, e_u>`` behaves like ``‖q_t‖‖e_u‖ · N(0,
  1/dim)``: ``error_bound(..., sigmas=4)`` gives the bound that holds with that many standard
  deviations, about ``4 / √dim`` of the certain one's first term.

Both bounds are asserted by ``tests/core/test_codecs.py`` on random and structured vectors;
BENCHMARKS.md ("Codecs and the exact kernel") has the measured errors, recall and speed.

>>> rng = np.random.default_rng(0)
>>> rows = rng.standard_normal((5, 16)).astype(np.float32)
>>> codec = make_codec("float16", 16)
>>> codes = codec.encode(rows)
>>> codes.shape, codes.dtype
((5, 32), dtype('uint8'))
>>> offsets = np.array([0, 2, 5])
>>> scores = codec.maxsim(rows[:3], codes, offsets)
>>> exact = [sum(max(q @ d for d in rows[a:b]) for q in rows[:3]) for a, b in [(0, 2), (2, 5)]]
>>> bool(np.allclose(scores, exact, atol=1e-2))
True
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from uniembed.core.checks import all_finite
from uniembed.errors import InvalidInput, MissingDependency

CODEC_NAMES = ("float16", "int8", "binary", "residual")
PARALLEL_ROWS = 8192  # below this many code rows one thread scores everything
QUERY_LEVELS = 15  # the binary and residual kernels take the query as 4-bit codes (0..15)
_FLOAT16_ULP = 2.0**-11
_FLOAT32_EPS = 2.0**-24


def _kernels() -> Any:
    try:
        from uniembed.core import _kernels
    except ImportError as error:
        raise MissingDependency(
            "the compiled MaxSim kernels (uniembed.core._kernels) are not built: "
            "pip install -e . (or python setup.py build_ext --inplace in a checkout)"
        ) from error
    return _kernels


def kernel_features() -> dict[str, bool]:
    """Which kernels run their SIMD path on this CPU (the others run portable C).

    >>> sorted(kernel_features())
    ['bits', 'float16', 'int8']
    """
    return dict(_kernels().features())


class Codec:
    """One codec: ``encode``/``decode`` rows, ``maxsim`` on the codes, its ``error_bound`` and the
    ``state`` (plus ``arrays``) that rebuilds it with :func:`load_codec`."""

    name: ClassVar[str]
    encodes_half: ClassVar[bool] = False  # _encode takes float16 rows as they are

    def __init__(self, dim: int) -> None:
        if not isinstance(dim, int | np.integer) or dim < 1:
            raise InvalidInput(f"codec dim must be a positive integer, got {dim!r}")
        self.dim = int(dim)

    @property
    def bytes_per_token(self) -> int:
        raise NotImplementedError

    def encode(
        self, vectors: np.ndarray, out: np.ndarray | None = None, *, known_finite: bool = False
    ) -> np.ndarray:
        """(n, dim) float vectors → (n, bytes_per_token) uint8 codes, one row per vector, written
        into ``out`` when given (a buffer reused across writes) and returned (the float16 codec
        returns contiguous float16 rows as a view of their own memory instead). ``known_finite``:
        the caller has checked that every value is finite (the token files check a write once for
        all their codecs)."""
        vectors = self._check_vectors(vectors, keep_half=True, finite=not known_finite)
        return self._encoded(vectors, out)

    def _encoded(self, vectors: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        out = self._check_out(out, len(vectors))
        if self.encodes_half and vectors.dtype == np.float16:  # no temporaries but the codes
            self._encode(vectors, out)
            return out
        for start in range(0, vectors.shape[0], 65536):  # bounded temporaries
            stop = min(vectors.shape[0], start + 65536)
            chunk = vectors[start:stop]
            if chunk.dtype != np.float32 and not self.encodes_half:
                chunk = chunk.astype(np.float32)
            self._encode(chunk, out[start:stop])
        return out

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, bytes_per_token) uint8 codes → (n, dim) float32: the vectors the kernel scores."""
        return self._decode(self._check_codes(codes))

    def maxsim(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        *,
        threads: int | None = None,
        portable: bool = False,
    ) -> np.ndarray:
        """MaxSim of ``query`` (q, dim) against each document ``codes[offsets[i]:offsets[i+1]]``
        → (len(offsets) - 1,) float32. ``threads`` splits the documents by rows (default: the
        usable CPUs); ``portable`` forces the plain C path (tests compare the two)."""
        query = self._check_query(query)
        codes = self._check_codes(codes)
        offsets = _check_offsets(offsets, codes.shape[0])
        out = np.zeros(len(offsets) - 1, dtype=np.float32)
        if len(out) == 0:
            return out
        run = self._scorer(query, codes, offsets, out, portable)
        _run_split(run, offsets, threads)
        return out

    def error_bound(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        *,
        sigmas: float | None = None,
    ) -> np.ndarray:
        """Per document, a bound on |maxsim − float32 MaxSim of the encoded vectors|: certain with
        ``sigmas=None``; for the rotated codecs (binary, residual) ``sigmas=k`` gives the bound of
        k standard deviations of the rotated error (see the module's docstring)."""
        query = self._check_query(query)
        codes = self._check_codes(codes)
        offsets = _check_offsets(offsets, codes.shape[0])
        if len(offsets) == 1:
            return np.zeros(0)
        return self._bound(query.astype(np.float64), codes, offsets, sigmas)

    def state(self) -> dict[str, Any]:
        """JSON-able settings; with :meth:`arrays`, what :func:`load_codec` needs."""
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        """Trained arrays (the residual codec's centroids); saved as .npy by :func:`save_codec`."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, bytes_per_token={self.bytes_per_token})"

    # -------------------------------------------------------------- per codec
    def _encode(self, vectors: np.ndarray, out: np.ndarray) -> None:
        """Write the codes of ``vectors`` into ``out`` ((n, bytes_per_token) uint8)."""
        raise NotImplementedError

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _scorer(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        out: np.ndarray,
        portable: bool,
    ) -> Callable[[int, int], None]:
        raise NotImplementedError

    def _bound(
        self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, sigmas: float | None
    ) -> np.ndarray:
        raise NotImplementedError

    # -------------------------------------------------------------- checks (the edge)
    def _check_vectors(
        self, vectors: Any, keep_half: bool = False, finite: bool = True
    ) -> np.ndarray:
        """Finite (n, dim) rows, contiguous float32 (float16 kept as it is with ``keep_half``)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InvalidInput(f"vectors must be (n, {self.dim}), got shape {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise InvalidInput(f"vectors must be floating point, got {vectors.dtype}")
        half = keep_half and vectors.dtype == np.float16
        vectors = np.ascontiguousarray(vectors, dtype=np.float16 if half else np.float32)
        if finite and not all_finite(vectors):
            raise InvalidInput("vectors must be finite (no NaN or infinity)")
        return vectors

    def _check_out(self, out: np.ndarray | None, rows: int) -> np.ndarray:
        shape = (rows, self.bytes_per_token)
        if out is None:
            return np.empty(shape, dtype=np.uint8)
        if out.dtype != np.uint8 or out.shape != shape or not out.flags.c_contiguous:
            raise InvalidInput(f"out must be a contiguous {shape} uint8 array")
        return out

    def _check_query(self, query: Any) -> np.ndarray:
        query = self._check_vectors(query)
        if query.shape[0] == 0:
            raise InvalidInput("the query has no token vectors")
        return query

    def _check_codes(self, codes: Any) -> np.ndarray:
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
            raise InvalidInput(f"codes must be a uint8 numpy array, got {type(codes).__name__}")
        if codes.ndim != 2 or codes.shape[1] != self.bytes_per_token:
            raise InvalidInput(
                f"{self.name} codes must be (n, {self.bytes_per_token}), got shape {codes.shape}"
            )
        if not codes.flags.c_contiguous:
            raise InvalidInput("codes must be C-contiguous rows (a slice of rows, not columns)")
        return codes


def _check_offsets(offsets: Any, rows: int) -> np.ndarray:
    offsets = np.asarray(offsets)
    if offsets.ndim != 1 or len(offsets) < 1 or not np.issubdtype(offsets.dtype, np.integer):
        raise InvalidInput("offsets must be a 1-D integer array of (documents + 1) row offsets")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets[0] < 0 or offsets[-1] > rows:
        raise InvalidInput(f"offsets must lie in 0..{rows} (the code rows)")
    if len(offsets) > 1 and not (np.diff(offsets) > 0).all():
        raise InvalidInput("offsets must increase: every document has at least one row")
    return offsets


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_POOL: ThreadPoolExecutor | None = None  # created on first parallel call, grown on demand
_POOL_SIZE = 0


def _run_split(run: Callable[[int, int], None], offsets: np.ndarray, threads: int | None) -> None:
    """``run(first, last)`` over document ranges of about equal rows, one per thread (the kernels
    release the GIL)."""
    documents = len(offsets) - 1
    rows = int(offsets[-1] - offsets[0])
    parts = max(1, min(threads or _usable_cpus(), documents, rows // PARALLEL_ROWS or 1))
    targets = offsets[0] + (rows * np.arange(1, parts)) // parts
    cuts = np.searchsorted(offsets, targets).tolist()
    _in_parallel(run, sorted({0, documents, *[min(max(c, 0), documents) for c in cuts]}))


def _run_rows(run: Callable[[int, int], None], rows: int) -> None:
    """``run(first, last)`` over equal ranges of ``rows`` rows, one per thread."""
    parts = max(1, min(_usable_cpus(), rows // PARALLEL_ROWS or 1))
    _in_parallel(run, sorted({0, rows, *(rows * np.arange(1, parts) // parts).tolist()}))


def _in_parallel(run: Callable[[int, int], None], bounds: list[int]) -> None:
    """``run`` over each pair of neighbouring ``bounds``, on the shared pool when there are
    several."""
    global _POOL, _POOL_SIZE
    parts = len(bounds) - 1
    if parts <= 1:
        run(bounds[0], bounds[-1])
        return
    if _POOL is None or _POOL_SIZE < parts:
        _POOL = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="uniembed-maxsim")
        _POOL_SIZE = parts
    futures = [_POOL.submit(run, a, b) for a, b in itertools.pairwise(bounds)]
    for future in futures:
        future.result()


def _call(kernel: Callable[..., None], *args: Any) -> None:
    try:
        kernel(*args)
    except ValueError as error:  # the kernel's own checks (should not fire past the edge)
        raise InvalidInput(f"MaxSim kernel: {error}") from error


def _per_document_max(values: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Max of per-row ``values`` (N,) over each document's rows → (m,)."""
    return np.maximum.reduceat(values, offsets[:-1])


def _rows_of(offsets: np.ndarray) -> slice:
    return slice(int(offsets[0]), int(offsets[-1]))


# ------------------------------------------------------------------ float16
class Float16Codec(Codec):
    """IEEE half precision, the truth: scored exactly (float32 products and sums) by a blocked
    AVX-512 kernel that converts 16 rows at a time into a transposed float32 tile in L1 and
    accumulates groups of up to 16 query tokens in registers."""

    name = "float16"
    encodes_half = True

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.dim

    def _encoded(self, vectors: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if vectors.dtype == np.float16:  # finite float16 is the code itself: no copy
            return vectors.view(np.uint8)
        return super()._encoded(vectors, out)

    def _encode(self, vectors: np.ndarray, out: np.ndarray) -> None:
        if len(vectors) and np.abs(vectors).max() > np.finfo(np.float16).max:
            raise InvalidInput("a value is beyond float16's range (65504): scale the vectors")
        np.copyto(out.view(np.float16), vectors, casting="same_kind")

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        return codes.view(np.float16).astype(np.float32)

    def _scorer(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        out: np.ndarray,
        portable: bool,
    ) -> Callable[[int, int], None]:
        kernel = _kernels().maxsim_f16

        def run(first: int, last: int) -> None:
            _call(kernel, query, *query.shape, codes, codes.shape[1], offsets, first, last, out,
                  portable)  # fmt: skip

        return run

    def _bound(
        self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, sigmas: float | None
    ) -> np.ndarray:
        rows = codes[_rows_of(offsets)].view(np.float16)
        norms = np.sqrt(np.square(rows, dtype=np.float32).sum(axis=1, dtype=np.float64))
        norms = np.concatenate([np.zeros(int(offsets[0])), norms])
        factor = (_FLOAT16_ULP + (self.dim + len(query)) * _FLOAT32_EPS) * (1 + 2.0**-10)
        slack = 2.0**-25 * np.abs(query).sum()  # float16 subnormals: absolute steps of 2^-25
        q_norm = np.linalg.norm(query, axis=1).sum()
        return q_norm * _per_document_max(norms, offsets) * factor + slack + 1e-30


# ------------------------------------------------------------------ int8
class Int8Codec(Codec):
    """Symmetric int8 per token: ``x ≈ s · c`` with ``s = max|x| / 127`` (float32 after the dim
    bytes). The query is quantised the same way per token; the kernel multiplies int8 by int8 with
    AVX512-VNNI (``vpdpbusd``), scales each row's dot products by ``s_row · s_query``."""

    name = "int8"
    encodes_half = True

    @property
    def bytes_per_token(self) -> int:
        return self.dim + 4

    def _encode(self, vectors: np.ndarray, out: np.ndarray, portable: bool = False) -> None:
        def run(first: int, last: int) -> None:
            # one compiled pass per row (float16 rows read as they are): what _quantize_int8
            # computes for the query, byte for byte, and the scale after the values
            _kernels().int8_encode(
                vectors, vectors.dtype == np.float16, self.dim, out, out.shape[1], first, last,
                portable,
            )  # fmt: skip

        _run_rows(run, len(vectors))

    def _split(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        values = codes[:, : self.dim].view(np.int8)
        scales = np.ascontiguousarray(codes[:, self.dim :]).view("<f4").reshape(-1)
        return values, scales

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        values, scales = self._split(codes)
        return values.astype(np.float32) * scales[:, None]

    def _scorer(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        out: np.ndarray,
        portable: bool,
    ) -> Callable[[int, int], None]:
        kernel = _kernels().maxsim_i8
        values, scales = _quantize_int8(query)

        def run(first: int, last: int) -> None:
            _call(kernel, values, scales, *query.shape, codes, codes.shape[1], offsets, first,
                  last, out, portable)  # fmt: skip

        return run

    def _bound(
        self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, sigmas: float | None
    ) -> np.ndarray:
        values, scales = self._split(codes[_rows_of(offsets)])
        l1 = np.abs(values.astype(np.int32)).sum(axis=1) * scales.astype(np.float64)
        pad = np.zeros(int(offsets[0]))
        max_scale = _per_document_max(np.concatenate([pad, scales.astype(np.float64)]), offsets)
        max_l1 = _per_document_max(np.concatenate([pad, l1]), offsets)
        _, q_scales = _quantize_int8(query.astype(np.float32))
        q_l1 = np.abs(query).sum(axis=1)
        bound = q_l1.sum() * max_scale / 2 + q_scales.astype(np.float64).sum() * max_l1 / 2
        rounding = (self.dim + len(query)) * _FLOAT32_EPS * 4
        q_norm = np.linalg.norm(query, axis=1).sum()
        return (bound + rounding * q_norm * max_l1) * (1 + 2.0**-10) + 1e-30


def _quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 → (n, d) int8 and (n,) float32 scales, ``x ≈ scale · value``."""
    top = np.abs(vectors).max(axis=1)
    scales = (top / 127).astype(np.float32)
    safe = np.where(scales > 0, scales, 1)
    values = np.clip(np.rint(vectors / safe[:, None]), -127, 127).astype(np.int8)
    return np.ascontiguousarray(values), scales


# ------------------------------------------------------------------ bit codes
class _BitCodec(Codec):
    """Shared by binary and residual: a signed Hadamard rotation, the 4-bit query and the bits
    kernel. Bit vectors are packed little-endian into 64-bit words (dim rounded up to 64)."""

    def __init__(self, dim: int, signs: list[int] | None = None, seed: int = 0) -> None:
        super().__init__(dim)
        self.seed = int(seed)
        if signs is None:
            signs = np.random.default_rng(seed).choice([-1, 1], size=self.dim).tolist()
        if len(signs) != self.dim or any(s not in (-1, 1) for s in signs):
            raise InvalidInput(f"signs must be {self.dim} values of ±1")
        self.signs = np.asarray(signs, dtype=np.float32)
        self.hadamard = self.dim & (self.dim - 1) == 0  # a power of two: rotate; else signs only
        self.words = (self.dim + 63) // 64

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        """The codec's orthogonal map: signs, then the normalised Walsh-Hadamard transform."""
        return np.asarray(vectors, dtype=np.float32) @ self._rotation

    def unrotate(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, dtype=np.float32) @ self._rotation.T

    @functools.cached_property
    def _rotation(self) -> np.ndarray:
        """The map as a (dim, dim) matrix (row i: the image of the i-th unit vector), so that a
        batch rotates in one BLAS product (10x the transform's numpy passes)."""
        signed = np.diag(self.signs)
        return _hadamard(signed) if self.hadamard else signed

    def _pack(self, bits: np.ndarray) -> np.ndarray:
        """(n, dim) bool → (n, 8 · words) uint8."""
        padded = np.zeros((bits.shape[0], 64 * self.words), dtype=bool)
        padded[:, : self.dim] = bits
        return np.packbits(padded, axis=1, bitorder="little")

    def _unpack(self, packed: np.ndarray) -> np.ndarray:
        return np.unpackbits(packed, axis=1, bitorder="little")[:, : self.dim].astype(bool)

    def _query(self, rotated: np.ndarray) -> tuple[np.ndarray, ...]:
        """4-bit codes of the rotated query: bit-planes (q, 4, words) uint64, and per token the
        low end, the step and the quantised query itself (float64)."""
        low = rotated.min(axis=1)
        step = (rotated.max(axis=1) - low) / QUERY_LEVELS
        safe = np.where(step > 0, step, 1)
        levels = np.clip(np.rint((rotated - low[:, None]) / safe[:, None]), 0, QUERY_LEVELS)
        levels = levels.astype(np.uint8)
        planes = np.stack([self._pack((levels >> p) & 1 == 1) for p in range(4)], axis=1)
        planes = np.ascontiguousarray(planes).view(np.uint64)  # (q, 4, words)
        quantized = low[:, None].astype(np.float64) + step[:, None].astype(np.float64) * levels
        return planes, low.astype(np.float32), step.astype(np.float32), quantized

    def state(self) -> dict[str, Any]:
        return {"seed": self.seed, "signs": self.signs.astype(int).tolist()}


def _hadamard(vectors: np.ndarray) -> np.ndarray:
    """Normalised fast Walsh-Hadamard transform of the last axis (a power of two long)."""
    n, dim = vectors.shape
    out = np.array(vectors, dtype=np.float32)
    h = 1
    while h < dim:
        view = out.reshape(n, dim // (2 * h), 2, h)
        a, b = view[:, :, 0, :].copy(), view[:, :, 1, :]
        view[:, :, 0, :] += b
        view[:, :, 1, :] = a - b
        h *= 2
    return out / np.float32(math.sqrt(dim))


def _row_norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean norm of each float32 row, nudged up by float32's rounding of the sum (a norm
    that goes into a bound must not come out smaller)."""
    squares = np.einsum("ij,ij->i", rows, rows)
    return np.sqrt(squares) * np.float32(1 + rows.shape[1] * 2.0**-24)


def _f16_up(values: np.ndarray) -> np.ndarray:
    """float16 no smaller than ``values`` (bounds stay bounds after rounding)."""
    rounded = values.astype(np.float16)
    low = rounded.astype(np.float64) < values
    rounded[low] = np.nextafter(rounded[low], np.float16(np.inf))
    return rounded


class BinaryCodec(_BitCodec):
    """One sign bit per rotated dimension and two float16s per token (RaBitQ's estimator):
    ``x̂ = f · sign(Px)`` with ``f = ‖x‖² / ‖Px‖₁`` (the unbiased scale of the sign vector), and
    ``e = ‖Px − x̂‖``, the error norm the bound uses. The query stays rotated float, quantised to
    4 bits per value; the kernel computes ``<q̂, sign>`` from 4 popcounts per 64 dims."""

    name = "binary"
    encodes_half = True

    @property
    def bytes_per_token(self) -> int:
        return 8 * self.words + 4

    def _encode(self, vectors: np.ndarray, out: np.ndarray, portable: bool = False) -> None:
        def run(first: int, last: int) -> None:
            # one compiled pass: signs, the transform, the sign bits, then f = ‖Px‖² / ‖Px‖₁ and
            # the error norm ‖|Px| − f‖ (rounded up: it goes into a bound) as two float16s;
            # float16 rows read as they are
            _kernels().binary_encode(
                vectors, vectors.dtype == np.float16, self.signs, self.hadamard,
                out, out.shape[1], first, last, portable,
            )  # fmt: skip

        _run_rows(run, len(vectors))

    def _parts(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        tail = np.ascontiguousarray(codes[:, 8 * self.words :]).view(np.float16)
        return self._unpack(codes[:, : 8 * self.words]), tail[:, 0], tail[:, 1]

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        positive, factor, _ = self._parts(codes)
        return self.unrotate(np.where(positive, 1.0, -1.0) * factor.astype(np.float32)[:, None])

    def _scorer(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        out: np.ndarray,
        portable: bool,
    ) -> Callable[[int, int], None]:
        kernel = _kernels().maxsim_bits
        planes, low, step, quantized = self._query(self.rotate(query))
        constant = (-quantized.sum(axis=1)).astype(np.float32)  # <q̂, ±1> = 2<q̂, bits> − Σq̂
        weights = np.array([2.0], dtype=np.float32)
        table = np.zeros(1, dtype=np.float32)

        def run(first: int, last: int) -> None:
            _call(kernel, planes, low, step, constant, weights, len(query), self.words, codes,
                  codes.shape[1], 0, 8 * self.words, -1, table, 1, offsets, first, last, out,
                  portable)  # fmt: skip

        return run

    def _bound(
        self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, sigmas: float | None
    ) -> np.ndarray:
        _, factor, error = self._parts(codes[_rows_of(offsets)])
        _, _, _, quantized = self._query(self.rotate(query.astype(np.float32)))
        gap = self.rotate(query.astype(np.float32)) - quantized
        return _bit_bound(query, offsets, error, factor.astype(np.float64), gap, sigmas, self.dim)


def _bit_bound(
    query: np.ndarray,
    offsets: np.ndarray,
    error: np.ndarray,
    largest: np.ndarray,
    gap: np.ndarray,
    sigmas: float | None,
    dim: int,
) -> np.ndarray:
    """Σ_t (‖q_t‖ · κ · max_u e_u + ‖g_t‖ · max_u m_u) + float slack, per document, for the
    query's quantisation error ``gap`` g (q, dim): κ = 1 and the 1-norm of g when certain."""
    pad = np.zeros(int(offsets[0]))
    max_error = _per_document_max(np.concatenate([pad, error.astype(np.float64)]), offsets)
    max_value = _per_document_max(np.concatenate([pad, largest]), offsets)
    q_norm = np.linalg.norm(query, axis=1).sum()
    if sigmas is None:
        bound = q_norm * max_error + np.abs(gap).sum() * max_value
    else:  # <q, e> ~ ‖q‖‖e‖ N(0, 1/dim); <g, x̂> ~ ‖g‖‖x̂‖ N(0, 1/dim), ‖x̂‖ ≤ √dim · max|x̂|
        kappa = min(1.0, sigmas / math.sqrt(dim))
        gap_norm = np.linalg.norm(gap, axis=1)
        bound = q_norm * kappa * max_error + (
            np.minimum(np.abs(gap).sum(axis=1), sigmas * gap_norm).sum() * max_value
        )
    slack = 1e-5 * q_norm * (max_value * math.sqrt(dim) + max_error) + 1e-6 * len(query)
    return bound + slack


class ResidualCodec(_BitCodec):
    """PLAID-style: the nearest of ``K`` k-means centroids (a uint16 id) plus the rotated residual
    at 2 bits per value, ``r̂ = δ · (2·b₁ + b₀ − 1.5)`` with a per-token step ``δ``
    (float16) and the residual's error norm ``e`` (float16): 38 bytes per 128-d token. Scored as
    ``<q, c> + <Pq, r̂>``: a (q, K) table of centroid scores per query, then popcounts."""

    name = "residual"

    def __init__(
        self,
        dim: int,
        centroids: np.ndarray,
        signs: list[int] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(dim, signs, seed)
        centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        if centroids.ndim != 2 or centroids.shape[1] != dim or not 1 <= len(centroids) <= 65536:
            raise InvalidInput(f"centroids must be (1..65536, {dim}), got {centroids.shape}")
        self.centroids = centroids

    @property
    def bytes_per_token(self) -> int:
        return 16 * self.words + 6

    def _encode(self, vectors: np.ndarray, out: np.ndarray) -> None:
        ids = nearest_centroids(vectors, self.centroids)
        rotated = self.rotate(vectors - self.centroids[ids])
        rms = np.sqrt(np.square(rotated).mean(axis=1))
        best_error = np.full(len(vectors), np.inf)
        step = np.zeros(len(vectors), dtype=np.float16)
        for multiple in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25):  # the best uniform step
            trial = (rms * multiple).astype(np.float16)
            error = _row_norms(rotated - _levels(rotated, trial))
            better = error < best_error
            best_error[better], step[better] = error[better], trial[better]
        level = _level_codes(rotated, step)
        error = _row_norms(rotated - (level - 1.5) * step.astype(np.float32)[:, None])
        bits = 8 * self.words
        out[:, :bits] = self._pack(level >= 2)
        out[:, bits : 2 * bits] = self._pack(level % 2 == 1)
        out[:, 2 * bits : 2 * bits + 2] = ids.astype("<u2").view(np.uint8).reshape(-1, 2)
        tail = np.stack([step, _f16_up(error)], axis=1)
        out[:, 2 * bits + 2 :] = tail.view(np.uint8)

    def _parts(self, codes: np.ndarray) -> tuple[np.ndarray, ...]:
        bits = 8 * self.words
        high, low = self._unpack(codes[:, :bits]), self._unpack(codes[:, bits : 2 * bits])
        ids = np.ascontiguousarray(codes[:, 2 * bits : 2 * bits + 2]).view("<u2").reshape(-1)
        tail = np.ascontiguousarray(codes[:, 2 * bits + 2 :]).view(np.float16)
        return high, low, ids, tail[:, 0], tail[:, 1]

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        high, low, ids, step, _ = self._parts(codes)
        if len(ids) and ids.max() >= len(self.centroids):
            raise InvalidInput("a centroid id is outside this codec's centroids")
        levels = 2.0 * high + low - 1.5
        return self.centroids[ids] + self.unrotate(levels * step.astype(np.float32)[:, None])

    def _scorer(
        self,
        query: np.ndarray,
        codes: np.ndarray,
        offsets: np.ndarray,
        out: np.ndarray,
        portable: bool,
    ) -> Callable[[int, int], None]:
        kernel = _kernels().maxsim_bits
        planes, low, step, quantized = self._query(self.rotate(query))
        constant = (-1.5 * quantized.sum(axis=1)).astype(np.float32)
        weights = np.array([2.0, 1.0], dtype=np.float32)
        table = np.ascontiguousarray(query @ self.centroids.T, dtype=np.float32)  # (q, K)
        bits = 8 * self.words

        def run(first: int, last: int) -> None:
            _call(kernel, planes, low, step, constant, weights, len(query), self.words, codes,
                  codes.shape[1], 0, 2 * bits + 2, 2 * bits, table, len(self.centroids), offsets,
                  first, last, out, portable)  # fmt: skip

        return run

    def _bound(
        self, query: np.ndarray, codes: np.ndarray, offsets: np.ndarray, sigmas: float | None
    ) -> np.ndarray:
        _, _, _, step, error = self._parts(codes[_rows_of(offsets)])
        rotated = self.rotate(query.astype(np.float32))
        gap = rotated - self._query(rotated)[3]
        largest = 1.5 * step.astype(np.float64)
        bound = _bit_bound(query, offsets, error, largest, gap, sigmas, self.dim)
        table_rounding = (  # the (q, K) table is a float32 matrix product
            4 * self.dim * _FLOAT32_EPS * np.linalg.norm(query, axis=1).sum()
            * (np.linalg.norm(self.centroids, axis=1).max() + 1)
        )  # fmt: skip
        return bound + table_rounding

    def state(self) -> dict[str, Any]:
        return {**super().state(), "centroids": len(self.centroids)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids}


def _level_codes(rotated: np.ndarray, step: np.ndarray) -> np.ndarray:
    """2-bit level codes 0..3 of (level − 1.5) · step nearest each value."""
    safe = np.where(step > 0, step.astype(np.float32), 1)[:, None]
    return np.clip(np.floor(rotated / safe) + 2, 0, 3).astype(np.uint8)


def _levels(rotated: np.ndarray, step: np.ndarray) -> np.ndarray:
    return (_level_codes(rotated, step) - 1.5) * step.astype(np.float32)[:, None]


def nearest_centroids(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (Euclidean) of each row, in blocks of 16k rows."""
    half_norms = 0.5 * np.square(centroids).sum(axis=1)
    ids = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), 16384):
        block = vectors[start : start + 16384]
        ids[start : start + len(block)] = np.argmax(block @ centroids.T - half_norms, axis=1)
    return ids


def kmeans(sample: np.ndarray, k: int, *, iterations: int = 10, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means from ``k`` distinct sample rows; an emptied cluster keeps its centroid.

    >>> points = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]], dtype=np.float32)
    >>> [round(float(v), 2) for v in np.sort(kmeans(points, 2)[:, 1])]
    [0.05, 5.05]
    """
    rng = np.random.default_rng(seed)
    k = min(k, len(sample))
    centroids = sample[rng.choice(len(sample), size=k, replace=False)].astype(np.float32)
    for _ in range(iterations):
        ids = nearest_centroids(sample, centroids)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, ids, sample)
        counts = np.bincount(ids, minlength=k)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centroids


def default_centroids(rows: int) -> int:
    """PLAID's rule, 2^⌊log2(16·√rows)⌋, capped by the sample (≥ 32 rows per centroid) and 65536.

    >>> default_centroids(640_000), default_centroids(1000)
    (8192, 16)
    """
    by_corpus = 2 ** int(math.log2(max(1.0, 16 * math.sqrt(rows))))
    return int(max(1, min(by_corpus, 65536, 2 ** int(math.log2(max(1, rows // 32))))))


# ------------------------------------------------------------------ registry
CODECS: dict[str, type[Codec]] = {
    codec.name: codec for codec in (Float16Codec, Int8Codec, BinaryCodec, ResidualCodec)
}


def _codec_class(name: str) -> type[Codec]:
    if name not in CODECS:
        raise InvalidInput(f"unknown codec {name!r}; choose one of {', '.join(CODEC_NAMES)}")
    return CODECS[name]


def make_codec(
    name: str,
    dim: int,
    sample: np.ndarray | None = None,
    *,
    centroids: int | None = None,
    seed: int = 0,
    iterations: int = 10,
) -> Codec:
    """A new codec; ``residual`` trains ``centroids`` k-means centroids (default
    :func:`default_centroids` of the sample) on ``sample`` (n, dim).

    >>> make_codec("int8", 128).bytes_per_token
    132
    >>> make_codec("zip", 128)
    Traceback (most recent call last):
    uniembed.errors.InvalidInput: unknown codec 'zip'; choose one of float16, int8, binary, residual
    """
    cls = _codec_class(name)
    if cls is ResidualCodec:
        if sample is None:
            raise InvalidInput("the residual codec needs a training sample of token vectors")
        sample = Codec(dim)._check_vectors(sample)
        if len(sample) == 0:
            raise InvalidInput("the residual codec's training sample is empty")
        k = centroids or default_centroids(len(sample))
        trained = kmeans(sample, k, iterations=iterations, seed=seed)
        return ResidualCodec(dim, trained, seed=seed)
    if cls in (BinaryCodec,):
        return BinaryCodec(dim, seed=seed)
    return cls(dim)


def load_codec(
    name: str, dim: int, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> Codec:
    """The codec that ``state()`` (and ``arrays()``) describe.

    >>> codec = make_codec("binary", 64, seed=3)
    >>> load_codec("binary", 64, codec.state()).signs.tolist() == codec.signs.tolist()
    True
    """
    cls = _codec_class(name)
    if cls is ResidualCodec:
        if arrays is None or "centroids" not in arrays:
            raise InvalidInput("the residual codec needs its centroids array to load")
        return ResidualCodec(dim, arrays["centroids"], state.get("signs"), state.get("seed", 0))
    if cls is BinaryCodec:
        return BinaryCodec(dim, state.get("signs"), state.get("seed", 0))
    return cls(dim)


def save_codec(codec: Codec, folder: Path | str) -> None:
    """``codec.json`` (name, dim, state) and one ``codec-NAME.npy`` per array in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in codec.arrays().items():
        np.save(folder / f"codec-{key}.npy", array)
    manifest = {"name": codec.name, "dim": codec.dim, "state": codec.state()}
    manifest["arrays"] = sorted(codec.arrays())
    (folder / "codec.json").write_text(json.dumps(manifest))


def read_codec(folder: Path | str) -> Codec:
    """The codec :func:`save_codec` wrote in ``folder``."""
    folder = Path(folder)
    manifest = json.loads((folder / "codec.json").read_text())
    arrays = {key: np.load(folder / f"codec-{key}.npy") for key in manifest.get("arrays", [])}
    return load_codec(manifest["name"], manifest["dim"], manifest["state"], arrays)
