"""REST fuzzing (#7 battery): schemathesis against /api/schema/, every operation, as a superuser.

Each operation gets generated requests, valid and invalid, sent through the real Django stack (WSGI). No answer
may be a 5xx, and every answer must agree with the schema: a documented status code, content type, headers and
body shape, and invalid input must be refused. The number of cases is `SLUICE_FUZZ_CASES` in all (default: 2000
when `CI` is set, 300 otherwise), spread evenly over the operations. docs/permissions.md has the figures.
"""

import itertools
import logging
import math
import os
import time

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, given, settings
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.management.factories import (
    APIFactory,
    BackendFactory,
    BlocklistFactory,
    NamedValueFactory,
    OperationFactory,
    ProductFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db

TOTAL_CASES = int(os.environ.get("SLUICE_FUZZ_CASES") or (2000 if os.environ.get("CI") else 300))
# The operations of the same generator /api/schema/ serves; test_schema_has_every_operation keeps the two equal.
GENERATED = {
    (method.upper(), path): operation
    for path, item in SchemaGenerator().get_schema(request=None, public=True)["paths"].items()
    for method, operation in item.items()
    if method in ("get", "put", "post", "patch", "delete")
}
OPERATIONS = sorted(GENERATED)
# Operations with something a client chooses besides the path: a query parameter or a body.
WITH_INPUTS = {
    key
    for key, operation in GENERATED.items()
    if "requestBody" in operation or any(parameter["in"] == "query" for parameter in operation.get("parameters", ()))
}
# Half of each operation's cases are valid requests, half invalid ones (negative mode); on a URL naming an object,
# half of each address an object that exists (else nearly every one would be a 404).
# What "contradicts the schema" means here. Not checked: positive_data_acceptance (valid-looking data may still
# name an object that does not exist: 400/404/409 are right answers) and the stateful and authentication checks,
# which this single-user, one-request-at-a-time run cannot judge.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# The existing object a path's {name} names, by the collection it is in.
EXISTING = {"apis": "chat", "operations": "completions", "backends": "llm", "named-values": "token"}
EXISTING |= {"products": "team", "subscriptions": "alice", "blocklists": "words"}
TALLY = {"cases": 0, "failures": 0}
LOADED = {}


@pytest.fixture
def configuration():
    api = APIFactory(name="chat", path="chat")
    OperationFactory(api=api, name="completions")
    ProductFactory(name="team", apis=[api])
    BackendFactory(name="llm")
    BlocklistFactory(name="words")
    NamedValueFactory(name="token", value="fuzz-secret-value", secret=True)
    SubscriptionFactory(name="alice", api=api)


@pytest.fixture
def superuser_token(django_user_model) -> str:
    user = django_user_model.objects.create_superuser("fuzz", password="fuzz-password-not-used")
    return Token.objects.create(user=user).key


@pytest.fixture
def wsgi_app(settings):
    """Django's WSGI application, minus the connection clean-up between requests (as Django's test client does):
    the requests run inside the test's transaction, which closing the connection would end."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def api_schema(superuser_token, wsgi_app):
    """/api/schema/ as served, fetched once per run (building it takes longer than a hundred fuzz cases)."""
    if "schema" not in LOADED:
        LOADED["schema"] = schemathesis.openapi.from_wsgi(
            "/api/schema/?format=json", wsgi_app, headers={"Authorization": f"Token {superuser_token}"}
        )
    return LOADED["schema"]


@pytest.fixture
def quiet():
    """Thousands of 4xx answers are the point here, not news: keep them out of the log."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module", autouse=True)
def report():
    started = time.monotonic()
    yield
    print(
        f"\nREST fuzz: {TALLY['cases']} cases over {len(OPERATIONS)} operations, "
        f"{TALLY['failures']} failing (shrinking included), in {time.monotonic() - started:.1f} s"
    )


def existing_path_parameters(path: str) -> dict[str, str]:
    segments = path.strip("/").split("/")
    parameters = {}
    for previous, segment in itertools.pairwise(segments):
        if segment == "{name}":
            parameters["name"] = EXISTING[previous]
        elif segment == "{api_name}":
            parameters["api_name"] = EXISTING["apis"]
    return parameters


def variants(method: str, path: str) -> list[tuple[GenerationMode, dict[str, str] | None]]:
    """(mode, fixed path parameters) of the runs of one operation.

    Invalid requests are made of invalid query parameters and bodies: where an operation has neither, Hypothesis
    could only try to make a URL path segment "not a string" and would give up after hundreds of draws.
    """
    existing = existing_path_parameters(path)
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if (method, path) in WITH_INPUTS else [])
    return [(mode, fixed) for mode in modes for fixed in ([None, existing] if existing else [None])]


CASES_PER_VARIANT = max(2, math.ceil(TOTAL_CASES / sum(len(variants(*key)) for key in OPERATIONS)))


def fuzz(operation, token: str, mode: GenerationMode, path_parameters: dict[str, str] | None) -> None:
    @settings(
        max_examples=CASES_PER_VARIANT,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters or None))
    def run(case):
        TALLY["cases"] += 1
        try:
            case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)
        except BaseException:  # schemathesis raises an exception group
            TALLY["failures"] += 1
            raise

    run()


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_as_documented(configuration, api_schema, superuser_token, quiet, method, path):
    """Valid and invalid requests, to generated names and to the names of existing objects."""
    operation = api_schema[path][method]
    for mode, path_parameters in variants(method, path):
        fuzz(operation, superuser_token, mode, path_parameters)


def test_schema_has_every_operation(api_schema):
    operations = (result.ok() for result in api_schema.get_all_operations())
    served = sorted((operation.method.upper(), operation.path) for operation in operations)
    assert served == OPERATIONS
    assert len(OPERATIONS) > 30
