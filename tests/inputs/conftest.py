"""Fixtures for input tests: a local HTTP server on 127.0.0.1 (see ``input_samples``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.inputs.input_samples import LocalServer, start_local_server


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    server = start_local_server()
    try:
        yield server
    finally:
        server.stop()
