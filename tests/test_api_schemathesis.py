"""Property-based API testing with schemathesis, in process, over the whole OpenAPI
document of the shipped packs: whatever a client sends that the document allows (and a
share of what it does not), the server must not fail, and every response must be one the
document promises (status, content type, body schema, headers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from xrm.web import create_app

SOLUTIONS = Path(__file__).resolve().parents[1] / "xrm" / "solutions" / "packs"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
#: Examples per operation and strategy: ~55 operations stay well within a minute.
EXAMPLES = 6


@pytest.fixture
def seeded(database):
    store = database.open()
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    admin = store.add_user("fuzz@example.com", roles=["administrator"])
    token = store.create_token(admin, "schemathesis")
    # a few records so that ids 1..3 exist and reads find something
    accounts = store.records("account")
    for name in ("Acme", "Globex", "Initech"):
        account = accounts.create({"name": name})
        store.records("contact").create({"last_name": name, "account": account["id"]})
    yield store, token
    store.close()


def test_api_conforms_to_its_openapi_document(seeded):
    store, token = seeded
    app = create_app(store, {"TESTING": True, "XRM_API_RATE_LIMIT": "100000 per minute"})
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 50
    for operation in operations:
        strategies = [
            operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
            operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
        ]
        if "{id}" in operation.path:  # also aim at records that exist
            strategies.append(operation.as_strategy(path_parameters={"id": 2}))
        for strategy in strategies:

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                response = case.call(headers=headers)
                case.validate_response(response, checks=CHECKS, headers=headers)

            run()
