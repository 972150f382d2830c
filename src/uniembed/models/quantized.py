"""int8 linears for the CPU: ``dtype="int8"`` in :func:`uniembed.load`.

Each ``nn.Linear`` of a backbone (language model, v4's vision tower; not v4's small multi-vector
projector, not embeddings or norms) becomes an :class:`Int8Linear`: weights quantized once, at load,
to int8 with one scale per output channel (symmetric), activations quantized per call to int8 with
one scale for the whole input (symmetric, from its min and max), and the product run by oneDNN's
int8 matmul (``torch.ops.onednn.qlinear_pointwise``, the kernel torch's own x86 int8 inference
uses), which reaches the CPU's AMX-int8 / AVX512-VNNI units and dequantizes and adds the bias in the
same pass. LoRA adapters stay in float32 around it (:mod:`uniembed.models.lora`): the task's delta
is added to the int8 base's output.

Weights are quantized as the checkpoint is read (:func:`quantize_weight` through
:func:`uniembed.models.loading.load_tensors`), so a load never holds the float32 model: its peak is
about the int8 weights plus what stays in float (embeddings, norms, adapters). Why this kernel and
not another (torch.ao's dynamic linear holds every weight twice; ``torch._int_mm`` needs the
dequantization as separate passes; torchao's CPU paths measured slower than float32 here):
BENCHMARKS.md, "int8 on the CPU".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from uniembed.errors import InvalidInput

INT8 = "int8"
_QMAX = 127.0
_TINY = 1e-12  # scale floor: an all-zero weight row or input gives zeros, not NaN


def is_int8(dtype: object) -> bool:
    """Whether a ``dtype`` argument of :func:`uniembed.load` asks for int8 linears.

    >>> is_int8("int8"), is_int8("INT8"), is_int8(torch.int8), is_int8("bfloat16"), is_int8(None)
    (True, True, True, False, False)
    """
    return dtype == torch.int8 or (isinstance(dtype, str) and dtype.lower() == INT8)


def check_int8_device(device: torch.device) -> None:
    """int8 runs on the CPU only: refuse another device, and a torch without the oneDNN kernel."""
    if device.type != "cpu":
        raise InvalidInput(
            f"dtype int8 runs on the CPU only (oneDNN int8 kernels), not on {device}; on a GPU "
            "use bfloat16 (the default there)"
        )
    if not kernel_available():
        raise InvalidInput(
            f"dtype int8 needs torch's oneDNN int8 matmul (torch.ops.onednn.qlinear_pointwise), "
            f"which this torch ({torch.__version__}) lacks; use float32 or bfloat16"
        )


def kernel_available() -> bool:
    """Whether this torch has the oneDNN int8 linear (x86 builds with oneDNN since torch 2.2)."""
    try:
        ops = torch.ops.onednn
        return hasattr(ops, "qlinear_prepack") and hasattr(ops.qlinear_pointwise, "tensor")
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class Int8Weight:
    """A linear weight quantized per output channel: ``values`` (out, in) int8 and ``scale`` (out,)
    float32, ``weight ≈ values * scale[:, None]``. Stands in for the float weight in a checkpoint's
    tensors until it is packed; :meth:`chunk` splits it by output rows as a fused weight is split
    (v3's ``Wqkv``)."""

    values: torch.Tensor
    scale: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def chunk(self, parts: int, dim: int = 0) -> tuple[Int8Weight, ...]:
        if dim != 0:
            raise ValueError("an int8 weight splits along its output rows (dim 0) only")
        return tuple(
            Int8Weight(v, s)
            for v, s in zip(self.values.chunk(parts, 0), self.scale.chunk(parts, 0))
        )

    def dequantize(self) -> torch.Tensor:
        """The float32 weight it stands for (tests, error bounds)."""
        return self.values.float() * self.scale[:, None]


def quantize_weight(weight: torch.Tensor) -> Int8Weight:
    """Symmetric int8 per output channel (row) of a 2-D float weight.

    >>> w = torch.tensor([[0.5, -1.0], [0.0, 0.0]])
    >>> q = quantize_weight(w)
    >>> q.values.tolist(), q.dequantize().tolist()
    ([[64, -127], [0, 0]], [[0.5039370059967041, -1.0], [0.0, 0.0]])
    """
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp_(min=_TINY).div_(_QMAX)  # (out,)
    values = torch.round(weight / scale[:, None]).clamp_(-_QMAX, _QMAX).to(torch.int8)
    return Int8Weight(values, scale)


class Int8Linear(nn.Module):
    """``y = x Wᵀ + b`` with ``W`` in int8 (per output channel) and ``x`` quantized to int8 per
    call (one scale per input), run by oneDNN; float32 in, float32 out, no gradient.

    Holds the oneDNN-packed weight (1 byte a parameter), the per-channel ``weight_scale`` and the
    float ``bias`` (both in ``state_dict``); not the unpacked int8 weight.
    """

    def __init__(self, weight: Int8Weight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = (int(n) for n in weight.shape)
        self.compute_dtype = torch.float32
        self.register_buffer("weight_scale", weight.scale.float().contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.float(), requires_grad=False)
        self._packed = torch.ops.onednn.qlinear_prepack(weight.values.contiguous(), None)
        self._zero_points = torch.zeros(self.out_features, dtype=torch.int64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()  # (tokens, in)
        if flat.shape[0] == 0:
            return x.new_zeros(*x.shape[:-1], self.out_features, dtype=torch.float32)
        low, high = torch.aminmax(flat)
        scale = torch.maximum(high, -low).clamp_(min=_TINY).div_(_QMAX)  # () float32
        quantized = torch.div(flat, scale).round_().to(torch.int8)  # |x / scale| ≤ 127
        out = torch.ops.onednn.qlinear_pointwise.tensor(
            quantized,
            scale,
            torch.zeros((), dtype=torch.int64),
            self._packed,
            self.weight_scale,
            self._zero_points,
            self.bias,
            1.0,  # output scale and zero point: unused for a float output
            0,
            torch.float32,
            "none",  # no fused activation
            [],
            "",
        )  # (tokens, out) float32
        return out.view(*x.shape[:-1], self.out_features)

    def packed_bytes(self) -> int:
        """Bytes the int8 weight takes (the packed tensor is opaque to ``parameters()``)."""
        return self.out_features * self.in_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def linear_weight_names(root: nn.Module, skip: Iterable[str] = ()) -> list[str]:
    """State-dict keys (``path.weight``) of every ``nn.Linear`` under ``root`` (a model on the
    meta device, before its weights are read), but those under a path in ``skip``."""
    skipped = tuple(skip)
    return [
        f"{path}.weight"
        for path, module in root.named_modules()
        if isinstance(module, nn.Linear)
        and not any(path == s or path.startswith(s + ".") for s in skipped)
    ]


def install_int8(
    root: nn.Module, state: dict[str, torch.Tensor | Int8Weight]
) -> dict[str, torch.Tensor]:
    """Replace each ``nn.Linear`` under ``root`` whose weight in ``state`` is an :class:`Int8Weight`
    by an :class:`Int8Linear` (packed now, one at a time, its entries taken out of ``state`` so the
    unpacked int8 copy is freed as it goes); returns the rest of ``state`` (float tensors, loaded
    as usual)."""
    rest: dict[str, torch.Tensor] = {}
    for key in list(state):
        if key not in state:  # a bias taken with its weight
            continue
        value = state.pop(key)
        if not isinstance(value, Int8Weight):
            rest[key] = value  # type: ignore[assignment]
            continue
        path = key.removesuffix(".weight")
        parent_path, _, name = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        if not isinstance(getattr(parent, name, None), nn.Linear):
            raise KeyError(f"an int8 weight for {path!r}, which is not an nn.Linear")
        bias = state.pop(f"{path}.bias", None)
        if bias is None:
            bias = rest.pop(f"{path}.bias", None)
        setattr(parent, name, Int8Linear(value, bias))
        del value
    return rest


def int8_reader(names: Iterable[str]) -> Callable[[str], bool]:
    """The predicate :func:`uniembed.models.loading.load_tensors` quantizes by: checkpoint keys."""
    wanted = frozenset(names)
    return wanted.__contains__
