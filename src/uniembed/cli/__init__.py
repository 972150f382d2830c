"""The ``uniembed`` command line: one module per command (:mod:`~uniembed.cli.serve`,
:mod:`~uniembed.cli.embed`, :mod:`~uniembed.cli.index` for ``index`` and ``search``,
:mod:`~uniembed.cli.eval`, :mod:`~uniembed.cli.train`, :mod:`~uniembed.cli.bench`), the flags
they share defined once in :mod:`~uniembed.cli.options`.

This package is the top floor: it imports the feature packages, never the other way round.
Importing it is cheap: torch, FastAPI and the models are imported only by the command run (every
command but ``serve`` is imported only when it runs).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
from typer.core import TyperGroup

from uniembed.cli.options import HelpContext, command_app, with_help_layout
from uniembed.cli.serve import SHORT_HELP, serve_command

LAZY_COMMANDS = {
    "embed": ("uniembed.cli.embed", "embed_command", "Embed files into JSONL, Parquet or NumPy."),
    "bench": ("uniembed.cli.bench", "bench_command", "Benchmark batching throughput."),
    "index": (
        "uniembed.cli.index",
        "index_command",
        "Create an index and add or delete documents.",
    ),
    "search": ("uniembed.cli.index", "search_command", "Search an index by text or image."),
    "eval": ("uniembed.cli.eval", "eval_app", "Measure retrieval quality and alignment."),
    "train": (
        "uniembed.cli.train",
        "train_command",
        "Fine-tune a task adapter or add a task.",
    ),
}


class LazyGroup(TyperGroup):
    """A typer group that imports the modules of its lazy commands only when they are run; a lazy
    command is a function (one command) or a ``typer.Typer`` (a group of subcommands). Every
    command gets the shared help layout (:func:`~uniembed.cli.options.with_help_layout`)."""

    context_class = HelpContext

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *LAZY_COMMANDS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in LAZY_COMMANDS:
            command = super().get_command(ctx, cmd_name)
            return None if command is None else with_help_layout(command)
        module, attribute, help_text = LAZY_COMMANDS[cmd_name]
        function = getattr(importlib.import_module(module), attribute)
        if isinstance(function, typer.Typer):
            group = typer.main.get_command(function)
            group.name, group.short_help = cmd_name, help_text
            return with_help_layout(group)
        single = command_app()
        single.command(name=cmd_name, help=function.__doc__ or help_text, short_help=help_text)(
            function
        )
        command = typer.main.get_command(single)
        command.name = cmd_name
        return with_help_layout(command)


app = command_app(
    cls=LazyGroup,
    no_args_is_help=True,
    help="uniembed: self-hosted jina-embeddings-v4 / v3.",
)


@app.callback()
def main() -> None:
    """uniembed: self-hosted universal embeddings (jina-embeddings-v4 and v3)."""


app.command(name="serve", short_help=SHORT_HELP)(serve_command)
