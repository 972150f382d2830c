"""Shared fixtures: tiny random checkpoints in the official layouts, written once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

import uniembed
from uniembed.embedder import Embedder
from uniembed.models.base import EmbeddingModel
from uniembed.models.registry import load_model


@pytest.fixture(scope="session")
def tiny_v4_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uniembed.testing.jina_v4 import write_tiny_jina_v4

    return write_tiny_jina_v4(tmp_path_factory.mktemp("jina-v4") / "tiny-jina-v4", seed=0)


@pytest.fixture(scope="session")
def tiny_v4(tiny_v4_path: Path) -> Embedder:
    return uniembed.load(tiny_v4_path, device="cpu")


@pytest.fixture(scope="session")
def tiny_v3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from uniembed.testing.jina_v3 import write_tiny_jina_v3

    return write_tiny_jina_v3(tmp_path_factory.mktemp("jina-v3") / "tiny-jina-v3", seed=0)


@pytest.fixture(scope="session")
def tiny_v3(tiny_v3_path: Path) -> Embedder:
    return uniembed.load(tiny_v3_path, device="cpu")


@pytest.fixture(scope="session")
def tiny_v4_model(tiny_v4_path: Path) -> EmbeddingModel:
    """The model behind the contract, for tests of model internals (the same weights as
    ``tiny_v4``)."""
    return load_model(tiny_v4_path, device="cpu")


@pytest.fixture(scope="session")
def tiny_v3_model(tiny_v3_path: Path) -> EmbeddingModel:
    return load_model(tiny_v3_path, device="cpu")
