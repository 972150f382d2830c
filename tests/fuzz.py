"""schemathesis over a live app's operations, shared by the embeddings and the search API tests:
every answer must be documented and fit its schema, none may be a 5xx, and a schema-valid request
is never refused as malformed."""

from __future__ import annotations

from collections.abc import Iterable

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

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


def fuzz_operations(operations: Iterable, mode: GenerationMode) -> None:
    """Send ``EXAMPLES`` generated requests of ``mode`` to each operation and check every answer.
    An operation whose schema no request can break (``GET /health``, say) is skipped in the
    negative mode."""
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
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE, operation.label
