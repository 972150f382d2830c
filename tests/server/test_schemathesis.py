"""schemathesis against the live app: generated requests, fitting the OpenAPI document and breaking
it, for every operation; every answer must be documented and fit its schema, and none may be a
5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from uniembed.embedder import Embedder
from uniembed.server.app import create_app
from uniembed.server.settings import ServerSettings
from uniembed.testing.fake import FakeModel
from uniembed.testing.live import LiveServer

EXAMPLES = 25  # per operation and mode: a few seconds in all
# Schema-valid requests may still be refused for what the schema cannot say: base64 that is not an
# image (400), a model that is not served (404), a limit (413), an option the model does not allow
# (422 invalid_option). What must never happen to them: being told the request itself is malformed.
MALFORMED = ("invalid_json", "invalid_request", "unsupported_media_type")


@schemathesis.check
def schema_valid_requests_are_well_formed(ctx, response, case) -> None:
    if (
        case.meta is None
        or case.meta.generation.mode != GenerationMode.POSITIVE
        or response.status_code < 400
    ):
        return
    code = response.json()["error"]["code"]
    assert code not in MALFORMED, (
        f"a schema-valid request was refused as malformed: {response.text}"
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_documented_promises(mode):
    app = create_app(ServerSettings(models=("fake-model",)), {"fake-model": Embedder(FakeModel())})
    with LiveServer(app) as live:
        schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 6
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(
                    excluded_checks=[positive_data_acceptance],
                    additional_checks=[schema_valid_requests_are_well_formed],
                )

            try:
                check()
            except Unsatisfiable:  # no request breaks this operation's schema (GET /health, say)
                assert mode == GenerationMode.NEGATIVE, operation.label
