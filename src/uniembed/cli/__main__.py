"""``python -m uniembed.cli``: the ``uniembed`` command."""

from uniembed.cli import app

app()
