"""Optional dependencies: one place that imports them and says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from uniembed.errors import MissingDependency


def require(module: str, extra: str, what: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependency` naming the pip extra that brings it.

    >>> require("json", "core").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependency(
            f"{what or module} needs the '{extra}' extra: pip install 'uniembed[{extra}]'"
        ) from error
