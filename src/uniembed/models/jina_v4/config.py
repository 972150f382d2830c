"""jina-embeddings-v4's config.json: the keys the model needs, checked once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uniembed.errors import CheckpointError

FAMILY = "jina-embeddings-v4"
MAX_TOKENS = 32768
# Symmetric tasks have one API name and always use the query prefix (the official code does so for
# text-matching); others are called task.query / task.passage. Added symmetric tasks are listed in
# config.json under SYMMETRIC_TASKS_KEY (a uniembed key; the official code ignores it).
OFFICIAL_SYMMETRIC_TASKS = ("text-matching",)
SYMMETRIC_TASKS_KEY = "symmetric_task_names"


def check_config(snapshot: Path, config: dict[str, Any]) -> None:
    """Fail on a config.json that lacks what the model reads, naming the file."""
    for key in ("text_config", "vision_config", "task_names", "image_token_id"):
        if key not in config:
            raise CheckpointError(f"malformed {snapshot / 'config.json'}: missing key {key!r}")
    symmetric = config.get(SYMMETRIC_TASKS_KEY, [])
    if not (isinstance(symmetric, list) and set(symmetric) <= set(config["task_names"])):
        raise CheckpointError(
            f"malformed {snapshot / 'config.json'}: {SYMMETRIC_TASKS_KEY} must list names of "
            "task_names"
        )
