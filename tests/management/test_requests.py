"""Cross-cutting request handling: body size limit (413), malformed JSON, error shapes, routes, schema, rotation."""

import io

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import override_settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError

from backends.models import Backend
from gateway_admin.api.parsers import JSONParser
from named_values import crypto
from named_values.models import NamedValue
from subscriptions.models import Subscription

from .factories import NamedValueFactory, SubscriptionFactory

pytestmark = pytest.mark.django_db

TEST_KEY = "4-EeuvhFWBrcspQYU2fIeA5CmBcIS_g7uLJ4Xv-dBe4="


def test_oversized_body_is_413_with_json_parser(api_client, settings):
    body = '{"name": "b", "url": "https://x.example.com", "description": "' + "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    response = api_client.generic("POST", "/api/backends/", body + '"}', content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is too large."}
    assert not Backend.objects.exists()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=200)
@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/api/apis/import-language-model/"),
        ("PUT", "/api/policies/global/"),
        ("POST", "/api/named-values/"),
    ],
)
def test_size_limit_applies_to_every_write(api_client, method, url):
    response = api_client.generic(method, url, '{"value": "' + "x" * 300 + '"}', content_type="application/json")
    assert response.status_code == 413


def test_body_at_the_limit_is_accepted(api_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 80
    body = '{"name": "b", "url": "https://x.example.com"}'
    body = body[:-1] + " " * (80 - len(body)) + "}"
    assert api_client.generic("POST", "/api/backends/", body, content_type="application/json").status_code == 201


@pytest.mark.parametrize("body", ['{"name": ', "[1, 2", "null", "[]", '"text"'])
def test_malformed_or_non_object_json_is_400(api_client, body):
    response = api_client.generic("POST", "/api/backends/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()
    assert not Backend.objects.exists()


@pytest.mark.parametrize(
    ("url", "body", "field", "message"),
    [
        ("/api/products/", {"name": 0, "display_name": "0"}, "name", "Not a valid string."),
        (
            "/api/products/",
            {"name": "p", "display_name": "P", "subscription_required": "true"},
            "subscription_required",
            "Must be a boolean (true or false).",
        ),
        (
            "/api/products/",
            {"name": "p", "display_name": "P", "subscriptions_limit": "5"},
            "subscriptions_limit",
            "A valid integer is required.",
        ),
        (
            "/api/products/",
            {"name": "p", "display_name": "P", "subscriptions_limit": True},
            "subscriptions_limit",
            "A valid integer is required.",
        ),
        (
            "/api/apis/import-language-model/",
            {
                "display_name": "x",
                "url": "http://127.0.0.1:9/v1",
                "path": "x",
                "type": "openai",
                "content_safety": {"backend": "builtin", "blocklists": [7]},
            },
            "content_safety",
            "Not a valid string.",
        ),
    ],
)
def test_a_json_value_of_the_wrong_type_is_400_naming_the_field(api_client, url, body, field, message):
    """DRF alone would store `0` as the name "0" and "5" as the number 5 (found by the REST fuzz)."""
    response = api_client.post(url, body, format="json")
    assert response.status_code == 400
    assert message in str(response.json()[field])
    assert api_client.get("/api/products/").json() == []


# Bodies on which orjson and the standard library differ, or that one of them refuses.
PARSER_BODIES = [
    b'{"records": [{"ts_ms": 1700000000123, "latency_ms": 1.5, "cache_hit": false, "model": null}]}',
    b'{"a": 1, "a": 2}',
    b'{"n": 12345678901234567890123, "m": -9999999999999999999}',
    b'{"n": 18446744073709551615, "m": -9223372036854775808, "id": "1234567890123456789"}',
    b'{"x": 1e400}',
    b'{"x": 1e-400, "y": -0.0, "z": -0}',
    b'{"x": NaN}',
    b'{"x": Infinity}',
    b'{"s": "\\ud800"}',
    b'{"s": "\\ud83d\\ude00 \\u0000"}',
    b'{"s": "caf\xc3\xa9"}',
    b'{"s": "\xff"}',
    b'\xef\xbb\xbf{"a": 1}',
    b'{"s": "a\tb"}',
    b"[1, 2",
    b'{"a": 1} x',
    b"",
    b"  [1]  ",
]


@pytest.mark.parametrize("charset", [None, "utf-8", "UTF8", "latin-1"])
@pytest.mark.parametrize("body", PARSER_BODIES, ids=repr)
def test_the_json_parser_reads_what_drfs_reads(body, charset):
    """orjson reads a UTF-8 body; what it refuses or reads differently goes to DRF's parser: same data, same error."""

    def parse(parser):
        context = {} if charset is None else {"encoding": charset}
        try:
            return repr(parser.parse(io.BytesIO(body), "application/json", context))
        except ParseError as exc:
            return f"ParseError: {exc}"

    assert parse(JSONParser()) == parse(parsers.JSONParser())


def test_non_json_content_type_is_415(api_client):
    response = api_client.generic("POST", "/api/backends/", "name=b", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_names_with_dots_route(api_client):
    NamedValueFactory(name="region.eu", value="1")
    assert api_client.get("/api/named-values/region.eu/").json()["name"] == "region.eu"


def test_api_root_lists_resources(api_client):
    body = api_client.get("/api/").json()
    assert {"apis", "backends", "named-values", "products", "subscriptions"} <= set(body)


#
# OpenAPI schema
#


def test_schema_renders_with_every_path(api_client):
    response = api_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = set(response.json()["paths"])
    assert {
        "/api/apis/",
        "/api/apis/{name}/",
        "/api/apis/{name}/policy/",
        "/api/apis/import-language-model/",
        "/api/apis/{api_name}/operations/",
        "/api/apis/{api_name}/operations/{name}/",
        "/api/apis/{api_name}/operations/{name}/policy/",
        "/api/backends/",
        "/api/named-values/{name}/list-value/",
        "/api/products/{name}/policy/",
        "/api/subscriptions/{name}/list-secrets/",
        "/api/subscriptions/{name}/regenerate-primary-key/",
        "/api/subscriptions/{name}/regenerate-secondary-key/",
        "/api/policies/global/",
    } <= paths
    assert api_client.get("/api/docs/").status_code == 200


def test_schema_generation_has_no_warnings(tmp_path):
    # --fail-on-warn turns any drf-spectacular warning (unresolvable type, enum naming, ...) into an error.
    call_command("spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yaml"))


#
# Encryption at rest and key rotation
#


def test_rotate_secrets_re_encrypts_with_the_first_key(settings):
    named_value = NamedValueFactory(name="k", value="the-secret", secret=True)
    subscription = SubscriptionFactory(name="s")
    primary = subscription.primary_key
    new_key = Fernet.generate_key().decode()
    settings.SLUICE = {**settings.SLUICE, "SECRET_KEYS": [new_key, TEST_KEY]}
    call_command("rotate_secrets", stdout=open("/dev/null", "w"))  # noqa: SIM115
    named_value.refresh_from_db()
    subscription.refresh_from_db()
    # Only the new key is needed now.
    settings.SLUICE = {**settings.SLUICE, "SECRET_KEYS": [new_key]}
    assert NamedValue.objects.get(name="k").value == "the-secret"
    assert Subscription.objects.get(name="s").primary_key == primary
    assert Subscription.objects.get(name="master").primary_key


def test_missing_secret_keys_fail_clearly(settings):
    settings.SLUICE = {**settings.SLUICE, "SECRET_KEYS": []}
    with pytest.raises(ImproperlyConfigured, match="SLUICE_SECRET_KEYS"):
        crypto.encrypt("x")


def test_rotate_with_unknown_key_changes_nothing(settings):
    NamedValueFactory(name="k", value="v", secret=True)
    settings.SLUICE = {**settings.SLUICE, "SECRET_KEYS": [Fernet.generate_key().decode()]}
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="Nothing was changed"):
        call_command("rotate_secrets")
    settings.SLUICE = {**settings.SLUICE, "SECRET_KEYS": [TEST_KEY]}
    assert NamedValue.objects.get(name="k").value == "v"


#
# Django admin
#


@pytest.mark.parametrize(
    "url",
    [
        "/admin/apis/api/",
        "/admin/backends/backend/",
        "/admin/named_values/namedvalue/",
        "/admin/named_values/namedvalue/add/",
        "/admin/subscriptions/product/",
        "/admin/subscriptions/subscription/",
        "/admin/policies/policy/",
        "/admin/gateway_admin/configrevision/",
    ],
)
def test_admin_pages_render(admin_client, url):
    SubscriptionFactory(name="s")
    NamedValueFactory(name="hidden", value="admin-secret-value", secret=True)
    response = admin_client.get(url)
    assert response.status_code == 200
    assert "admin-secret-value" not in response.content.decode()


def test_admin_creates_an_encrypted_named_value(admin_client):
    response = admin_client.post(
        "/admin/named_values/namedvalue/add/",
        {"name": "from-admin", "secret": "on", "tags": "[]", "new_value": "typed-in-admin"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    named_value = NamedValue.objects.get(name="from-admin")
    assert named_value.plain_value == "" and named_value.value == "typed-in-admin"
    page = admin_client.get(f"/admin/named_values/namedvalue/{named_value.pk}/change/").content.decode()
    assert "typed-in-admin" not in page and named_value.encrypted_value not in page


def test_schema_and_docs_need_a_login(anon_client, staff_less_client):
    # They show the API's shape, no data: any logged-in user may read them (#7 item 4, docs/permissions.md).
    assert anon_client.get("/api/schema/").status_code in (401, 403)
    assert anon_client.get("/api/docs/").status_code in (401, 403)
    assert staff_less_client.get("/api/schema/").status_code == 200
    assert staff_less_client.get("/api/docs/").status_code == 200


def test_exception_handler_maps_model_validation_errors():
    from django.core.exceptions import ValidationError as DjangoValidationError

    from gateway_admin.exceptions import exception_handler

    duplicate = exception_handler(DjangoValidationError({"name": [DjangoValidationError("taken", code="unique")]}), {})
    assert duplicate.status_code == 409 and duplicate.data == {"name": ["taken"]}
    invalid = exception_handler(DjangoValidationError({"url": ["bad"]}), {})
    assert invalid.status_code == 400 and invalid.data == {"url": ["bad"]}
