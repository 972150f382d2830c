"""schemathesis against the live app: generated requests, fitting the OpenAPI document and breaking
it, for every operation; every answer must be documented and fit its schema, and none may be a
5xx."""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.generation.modes import GenerationMode

from tests.fuzz import fuzz_operations
from uniembed.embedder import Embedder
from uniembed.server.app import create_app
from uniembed.server.settings import ServerSettings
from uniembed.testing.fake import FakeModel
from uniembed.testing.live import LiveServer


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_documented_promises(mode):
    app = create_app(ServerSettings(models=("fake-model",)), {"fake-model": Embedder(FakeModel())})
    with LiveServer(app) as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 6
        fuzz_operations(operations, mode)
