"""The flags every command shares, defined once: ``-m/--model``, ``--device``, ``--dtype``,
``--progress/--no-progress`` and ``--ray``, each with its ``UNIEMBED_*`` environment twin.

Commands annotate their parameters with these types (typer copies the option for each command), and
build their typer apps with :func:`command_app`, so every command's help has the same layout.
Importing this module is cheap: typer only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

import typer

from uniembed.models import DEFAULT_MODEL

_KEEP = "\u2011"  # a non-breaking hyphen stands in for "-" while help text is wrapped


def env(name: str) -> str:
    """The environment twin of a flag.

    >>> env("MAX_BODY_BYTES")
    'UNIEMBED_MAX_BODY_BYTES'
    """
    return f"UNIEMBED_{name}"


def command_app(**settings: Any) -> typer.Typer:
    """A typer app with the help layout of every uniembed command: click's plain help, which wraps
    to the terminal (80 columns at most) instead of rich's table, which cuts long words
    (environment variables, model ids) with an ellipsis in an 80-column terminal. The commands
    get :class:`HelpContext` from :func:`with_help_layout`."""
    return typer.Typer(add_completion=False, rich_markup_mode=None, **settings)


_Formatter: Any = typer.Context.formatter_class  # click's (typer vendors its own click)


class HelpFormatter(_Formatter):
    """click's help layout, wrapped at spaces only: a model id, a flag or ``Retry-After`` is never
    split at its hyphens."""

    def write_text(self, text: str) -> None:
        super().write_text(text.replace("-", _KEEP))

    def write_dl(self, rows: Iterable[tuple[str, str]], *args: Any, **kwargs: Any) -> None:
        super().write_dl([(term, text.replace("-", _KEEP)) for term, text in rows], *args, **kwargs)

    def getvalue(self) -> str:
        return super().getvalue().replace(_KEEP, "-")


class HelpContext(typer.Context):
    """A click context that formats help with :class:`HelpFormatter`."""

    formatter_class = HelpFormatter


def with_help_layout(command: Any) -> Any:
    """``command`` (and a group's subcommands) with :class:`HelpContext`; returns it."""
    command.context_class = HelpContext
    for sub in getattr(command, "commands", {}).values():
        with_help_layout(sub)
    return command


def model_option(help: str, **settings: Any) -> Any:
    """``-m/--model`` with its twin ``UNIEMBED_MODEL``, for a command whose model default or help
    differs from :data:`Model`'s."""
    return typer.Option("--model", "-m", envvar=env("MODEL"), help=help, **settings)


Model = Annotated[str, model_option("Model: hub id or local snapshot.")]
IndexModel = Annotated[
    str | None,
    model_option(
        "Model: hub id or local snapshot (default: the one the index records; a new index: "
        f"{DEFAULT_MODEL}).",
        show_default=False,
    ),
]
Device = Annotated[
    str | None,
    typer.Option(
        envvar=env("DEVICE"),
        show_default=False,
        help="cpu, cuda, cuda:1, mps … (default: CUDA if available, else cpu).",
    ),
]
Dtype = Annotated[
    str | None,
    typer.Option(
        envvar=env("DTYPE"),
        show_default=False,
        help="float32, bfloat16, float16, or int8 (CPU only: int8 linears, float32 "
        "elsewhere) (default: bfloat16 on CUDA, else float32).",
    ),
]
Progress = Annotated[
    bool,
    typer.Option("--progress/--no-progress", envvar=env("PROGRESS"), help="Show progress bars."),
]
Ray = Annotated[
    str | None,
    typer.Option(
        envvar=env("RAY"),
        show_default=False,
        help="Run on Ray (pip install 'uniembed[ray]'): 'local' starts a cluster here, 'auto' "
        "joins this node's, or HOST:PORT / ray://HOST:10001.",
    ),
]
