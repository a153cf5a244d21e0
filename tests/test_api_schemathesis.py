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
#: Examples per operation and strategy: ~55 operations for the administrator and fewer for
#: the limited user (whose document leaves out what they may not read) stay within a minute.
EXAMPLES = 4
#: A role with scope own everywhere, an entity it may not read at all and hidden fields:
#: its document leaves those out, and the API must keep every promise of that document.
LIMITED_ROLE = {
    "label": {"en": "Limited"},
    "permissions": {
        "*": {"create": "own", "read": "own", "update": "own", "delete": "own"},
        "lead": {"create": "none", "read": "none", "update": "none", "delete": "none"},
    },
    "fields": {
        "account": {"industry": "hidden", "phone": "read_only"},
        "opportunity": {"amount": "hidden"},
        "contact": {"email": "hidden"},
    },
}


@pytest.fixture
def seeded(database):
    store = database.open()
    store.install([SOLUTIONS / "core", SOLUTIONS / "sales"])
    store.customize("roles", {"roles": {"limited": LIMITED_ROLE}})
    admin = store.add_user("fuzz@example.com", roles=["administrator"])
    limited = store.add_user("limited@example.com", roles=["limited"])
    tokens = {
        "admin": store.create_token(admin, "schemathesis"),
        "limited": store.create_token(limited, "schemathesis"),
    }
    # a few records so that ids 1..3 exist and reads find something; the limited user
    # owns the last account and contact (ids 3), the administrator sees them all
    accounts = store.records("account")
    for index, name in enumerate(("Acme", "Globex", "Initech")):
        owner = limited if index == 2 else admin
        account = accounts.create({"name": name, "owner": owner})
        store.records("contact").create(
            {"last_name": name, "account": account["id"], "owner": owner}
        )
    yield store, tokens
    store.close()


@pytest.mark.parametrize(
    ("who", "own_id", "modes"),
    [
        ("admin", 2, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)),
        # the limited user's requests are parsed as anyone's: the positive mode and their
        # own record are what exercises their scope and hidden fields
        ("limited", 3, (GenerationMode.POSITIVE,)),
    ],
)
def test_api_conforms_to_its_openapi_document(seeded, who, own_id, modes):
    store, tokens = seeded
    app = create_app(store, {"TESTING": True, "XRM_API_RATE_LIMIT": "100000 per minute"})
    headers = {"Authorization": f"Bearer {tokens[who]}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 40
    if who == "limited":  # what they may not read is not in their document
        assert not any(op.path.startswith("/api/v1/lead") for op in operations)
    for operation in operations:
        strategies = [operation.as_strategy(generation_mode=mode) for mode in modes]
        if "{id}" in operation.path:  # also aim at records that exist
            strategies.append(operation.as_strategy(path_parameters={"id": own_id}))
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
