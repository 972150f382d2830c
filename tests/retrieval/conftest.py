"""Fixtures of the retrieval tests."""

from __future__ import annotations

import pytest

from uniembed.embedder import Embedder
from uniembed.testing.fake import FakeModel


@pytest.fixture
def fake_embedder() -> Embedder:
    return Embedder(FakeModel())
