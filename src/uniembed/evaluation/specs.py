"""Setting specs (``dense:64``, ``maxsim-binary:200``, ``search:two-stage``, ``all`` …) parsed into
settings: the in-memory studies of :mod:`uniembed.evaluation.settings` and the search modes of
:mod:`uniembed.evaluation.searched`."""

from __future__ import annotations

from collections.abc import Sequence

from uniembed.errors import InvalidInput, ValidationFailed
from uniembed.evaluation.searched import MODES, WITH_CANDIDATES, IndexModel, Searched
from uniembed.evaluation.settings import (
    DEFAULT_CANDIDATES,
    BinaryMaxSim,
    Dense,
    MaxSim,
    MuveraStage,
    Setting,
    TwoStage,
)
from uniembed.models.base import ModelInfo
from uniembed.plans import check_dimensions


def default_specs(info: ModelInfo) -> list[str]:
    """What ``all`` means for a model (late-interaction settings only with multi-vectors)."""
    specs = ["dense:all", "dense-int8", "dense-binary"]
    if info.multivector_dim is not None:
        specs += [
            "maxsim",
            "maxsim-fp16",
            "maxsim-pool:2",
            "maxsim-pool:3",
            "maxsim-binary",
            "two-stage",
            "muvera",
        ]
    return specs


def parse_settings(
    specs: Sequence[str], info: ModelInfo, index_model: IndexModel | None = None
) -> list[Setting]:
    """Settings from specs (see :mod:`~uniembed.evaluation.settings` and
    :mod:`~uniembed.evaluation.searched`), in order, duplicates dropped; ``search:`` specs need
    ``index_model`` (what their index is created with).

    >>> from uniembed.testing.fake import FakeModel
    >>> specs = ["dense:all", "two-stage", "maxsim-pool:2"]
    >>> [s.name for s in parse_settings(specs, FakeModel().info)]
    ['dense:8', 'dense:16', 'dense:32', 'two-stage:8:100', 'maxsim-pool:2']
    """
    settings: dict[str, Setting] = {}
    for spec in specs:
        expanded = default_specs(info) if spec.strip() == "all" else [spec]
        for one in expanded:
            for setting in _parse_one(one.strip(), info, index_model):
                settings.setdefault(setting.name, setting)
    if not settings:
        raise InvalidInput("no settings given")
    return list(settings.values())


def _parse_one(spec: str, info: ModelInfo, index_model: IndexModel | None) -> list[Setting]:
    kind, *args = spec.split(":")
    if kind == "search":
        return [_searched(spec, args, info, index_model)]
    if kind in ("dense", "dense-int8", "dense-binary"):
        precision = {"dense": "float32", "dense-int8": "int8", "dense-binary": "binary"}[kind]
        if args == ["all"]:
            return [Dense(d, precision) for d in _matryoshka(info)]
        return [Dense(_dimensions(_args(spec, args, 1, [info.dim])[0], info, spec), precision)]
    late = {"maxsim", "maxsim-fp16", "maxsim-pool", "maxsim-binary", "two-stage", "muvera"}
    if kind in late and info.multivector_dim is None:
        raise InvalidInput(f"setting {spec!r} needs multi-vectors; {info.name} has none")
    if kind in ("maxsim", "maxsim-fp16"):
        _args(spec, args, 0, [])
        return [MaxSim(storage="float32" if kind == "maxsim" else "float16")]
    if kind == "maxsim-pool":
        (factor,) = _args(spec, args, 1, [None])
        if factor is None or factor < 2:
            raise InvalidInput(
                f"setting {spec!r}: give a pool factor of 2 or more, e.g. maxsim-pool:2"
            )
        return [MaxSim(pool_factor=factor)]
    if kind == "maxsim-binary":
        (candidates,) = _args(spec, args, 1, [DEFAULT_CANDIDATES])
        return [BinaryMaxSim(_positive(candidates, spec))]
    if kind == "muvera":
        (candidates,) = _args(spec, args, 1, [DEFAULT_CANDIDATES])
        return [MuveraStage(_positive(candidates, spec))]
    if kind == "two-stage":
        dimensions, candidates = _args(spec, args, 2, [min(_matryoshka(info)), DEFAULT_CANDIDATES])
        return [TwoStage(_dimensions(dimensions, info, spec), _positive(candidates, spec))]
    raise InvalidInput(
        f"unknown setting {spec!r}; use dense[:DIM|:all], dense-int8[:DIM], dense-binary[:DIM], "
        "maxsim, maxsim-fp16, maxsim-pool:F, maxsim-binary[:N], two-stage[:DIM[:N]], "
        "muvera[:N], search:MODE[:N] or all"
    )


def _searched(
    spec: str, args: list[str], info: ModelInfo, index_model: IndexModel | None
) -> Searched:
    from uniembed.core.codecs import CODECS

    codec = "float16"
    if args and "@" in args[-1]:
        args[-1], codec = args[-1].split("@", 1)
        if codec not in CODECS or args[0] == "dense":
            raise InvalidInput(
                f"setting {spec!r}: @CODEC follows a late mode and is one of {', '.join(CODECS)}"
            )
    if not args or args[0] not in MODES:
        raise InvalidInput(
            f"setting {spec!r}: give search:MODE with MODE one of {', '.join(MODES)}"
        )
    mode, rest = args[0], args[1:]
    if mode != "dense" and info.multivector_dim is None:
        raise InvalidInput(f"setting {spec!r} needs multi-vectors; {info.name} has none")
    most = 1 if mode in WITH_CANDIDATES else 0
    (candidates,) = _args(spec, rest, most, [DEFAULT_CANDIDATES])
    if index_model is None:
        raise InvalidInput(f"setting {spec!r} runs a search index: it needs the model itself")
    return Searched(mode, _positive(candidates, spec), index_model, codec)


def _args(spec: str, args: list[str], most: int, defaults: list[int | None]) -> list[int | None]:
    if len(args) > most:
        raise InvalidInput(f"setting {spec!r}: too many ':' arguments")
    values: list[int | None] = list(defaults)
    for position, text in enumerate(args):
        try:
            values[position] = int(text)
        except ValueError:
            raise InvalidInput(f"setting {spec!r}: {text!r} is not an integer") from None
    return values


def _positive(value: int | None, spec: str) -> int:
    if value is None or value < 1:
        raise InvalidInput(f"setting {spec!r}: the candidate count must be at least 1")
    return value


def _dimensions(value: int | None, info: ModelInfo, spec: str) -> int:
    try:
        check_dimensions(value if value is not None else 0, info)
    except ValidationFailed as error:
        raise InvalidInput(f"setting {spec!r}: {error.message}") from None
    return value  # type: ignore[return-value]


def _matryoshka(info: ModelInfo) -> list[int]:
    return sorted(set(info.matryoshka_dims) | {info.dim})
