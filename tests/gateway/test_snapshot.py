"""Snapshot validation, secret decryption, named-value substitution and compilation."""

from __future__ import annotations

import copy

import pytest

from gateway.policy import Section
from gateway.policy.builtin.set_header import SetHeader
from gateway.snapshot import SnapshotError, load_snapshot

from .helpers import TOKEN, api, base_snapshot, encrypt, op


def load(data, token=TOKEN):
    return load_snapshot(data, gateway_token=token)


def test_loads_and_compiles(snapshot_data):
    config = load(snapshot_data)
    assert config.revision == 7 and config.generated_at == "2026-11-25T18:00:00Z"
    backend = config.backends["llm-backend"]
    assert backend.headers == ((b"authorization", b"Bearer s3cret"),)  # secret decrypted and substituted
    assert backend.query == "region=eu"
    assert backend.base_path == "/base/v1"
    assert backend.url_for("/chat", "a=1") == "/base/v1/chat?a=1&region=eu"
    chat = config.apis["chat"]
    assert chat.key_header == b"ocp-apim-subscription-key"
    assert set(chat.products) == {"starter"}  # unpublished "hidden" is no context
    assert chat.allowed_scopes == {"/apis", "/apis/chat", "/products/starter"}
    assert config.apis["open-api"].open_access.product.name == "open"
    assert config.apis["free"].no_key_access.product is None
    assert len(config.subscriptions) == 12


def test_products_without_policy_share_the_api_pipeline(snapshot_data):
    config = load(snapshot_data)
    pipelines = config.pipelines[config.apis["chat"].operations[0]]
    assert set(pipelines) == {None, "starter"}
    assert pipelines[None] is pipelines["starter"]
    assert pipelines[None].backend[-1].name == "forward-request"  # implicit forward-request


def test_named_values_are_xml_escaped_in_policies(snapshot_data):
    snapshot_data["named_values"].append(
        {"name": "tricky", "secret": False, "value": 'a<b&"c"', "encrypted_value": None}
    )
    snapshot_data["global_policy"] = (
        '<policies><inbound><set-header name="x-t"><value>{{tricky}}-{{upstream-key}}</value></set-header>'
        "</inbound></policies>"
    )
    config = load(snapshot_data)
    step = config.pipelines[config.apis["chat"].operations[0]][None].inbound[0]
    assert isinstance(step, SetHeader)
    assert step.entries == ((b"x-t", b'a<b&"c"-s3cret'),)


def test_set_backend_service_resolves_backend_ids_and_urls(snapshot_data):
    chat = snapshot_data["apis"][0]
    chat["policy"] = '<policies><inbound><set-backend-service backend-id="llm-backend"/></inbound></policies>'
    chat["operations"][0]["policy"] = (
        '<policies><inbound><base/><set-backend-service base-url="http://127.0.0.1:9/base/v1/"/></inbound></policies>'
    )
    chat["operations"][1]["policy"] = (
        '<policies><inbound><base/><set-backend-service base-url="https://elsewhere.example/api/"/></inbound>'
        "</policies>"
    )
    config = load(snapshot_data)
    ops = config.apis["chat"].operations
    first = config.pipelines[ops[0]][None].inbound
    assert first[0].target is config.backends["llm-backend"]
    assert first[1].target is config.backends["llm-backend"]  # same URL as a backend entity: uses it
    other = config.pipelines[ops[1]][None].inbound[1].target
    assert (other.name, other.origin.host, other.origin.port, other.base_path) == (
        None,
        "elsewhere.example",
        443,
        "/api",
    )


def test_api_without_service_url_is_allowed(snapshot_data):
    snapshot_data["apis"][3]["service_url"] = ""
    assert load(snapshot_data).apis["free"].backend is None


def test_secret_with_wrong_gateway_token_is_invalid(snapshot_data):
    with pytest.raises(SnapshotError, match="named value 'upstream-key': cannot decrypt"):
        load(snapshot_data, token="another-token")


def test_corrupt_secret_is_invalid(snapshot_data):
    snapshot_data["named_values"][0]["encrypted_value"] = "not-a-fernet-token"
    with pytest.raises(SnapshotError, match="cannot decrypt"):
        load(snapshot_data)


def mutate(path_fn):
    data = copy.deepcopy(base_snapshot())
    path_fn(data)
    return data


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=2), "unsupported version"),
        (lambda d: d.update(revision="7"), "revision: expected a non-negative integer"),
        (lambda d: d.update(apis={}), "snapshot.apis: expected a list"),
        (lambda d: d["apis"][0].update(subscription_required="yes"), "subscription_required: expected true or false"),
        (lambda d: d["apis"][3].update(name="chat"), "duplicate name 'chat'"),
        (lambda d: d["apis"][0].update(service_url="ftp://x"), "expected an http(s) URL"),
        (lambda d: d["apis"][0].update(subscription_key_header="bad header"), "invalid subscription_key_header"),
        (lambda d: d["apis"][0]["operations"][0].update(method="BREW"), "unsupported method 'BREW'"),
        (lambda d: d["products"][0].update(apis=["chat", "ghost"]), "product 'starter': unknown API 'ghost'"),
        (lambda d: d["subscriptions"][0].update(scope="/apis/ghost"), "invalid or unknown scope '/apis/ghost'"),
        (lambda d: d["subscriptions"][0].update(scope="/products/ghost"), "invalid or unknown scope"),
        (lambda d: d["subscriptions"][0].update(scope="/users/x"), "invalid or unknown scope"),
        (lambda d: d["subscriptions"][0].update(key_hashes=["ABC"]), "SHA-256 hex"),
        (lambda d: d["subscriptions"][1].update(key_hashes=d["subscriptions"][0]["key_hashes"]), "shared with"),
        (
            lambda d: d["backends"][0].update(credentials_header={"Authorization": "{{nope}}"}),
            "backend 'llm-backend': unknown named value 'nope'",
        ),
        (lambda d: d["backends"][0].update(credentials_header={"X": "a\r\nb"}), "contains CR, LF or NUL"),
        (
            lambda d: d.update(global_policy="<policies><inbound><set-header/></inbound></policies>"),
            "global policy: line 1, column 20: <set-header>: missing required attribute 'name'",
        ),
        (
            lambda d: d.update(global_policy="<policies><inbound>{{ghost}}</inbound></policies>"),
            "global policy: unknown named value 'ghost'",
        ),
        (
            lambda d: d["apis"][0].update(
                policy="<policies><inbound><set-backend-service backend-id='ghost'/></inbound></policies>"
            ),
            "API 'chat' policy: line 1, column 20: set-backend-service: unknown backend 'ghost'",
        ),
        (
            lambda d: d["apis"][0]["operations"][0].update(
                policy="<policies><outbound><forward-request/></outbound></policies>"
            ),
            "operation 'chat/chat-completions' policy: line 1, column 21",
        ),
        (
            lambda d: d["products"][0].update(policy="<policies><inbound><x/></inbound></policies>"),
            "product 'starter' policy: line 1, column 20: unknown policy <x>",
        ),
        (lambda d: d["named_values"].append({"name": "region", "secret": False, "value": "x"}), "duplicate name"),
        (lambda d: d["named_values"][1].update(value=None), "value: expected a string"),
    ],
)
def test_invalid_snapshots_are_rejected_with_a_clear_message(change, message):
    with pytest.raises(SnapshotError) as info:
        load(mutate(change))
    assert message in str(info.value)


def test_not_a_dict():
    with pytest.raises(SnapshotError, match="expected an object"):
        load([])


def test_operation_policy_inherits_through_all_scopes(snapshot_data):
    def marker(name):
        return f'<set-header name="x-{name}" exists-action="append"><value>1</value></set-header>'

    snapshot_data["global_policy"] = f"<policies><inbound>{marker('g')}</inbound></policies>"
    snapshot_data["products"][0]["policy"] = f"<policies><inbound><base/>{marker('p')}</inbound></policies>"
    snapshot_data["apis"][0]["policy"] = f"<policies><inbound><base/>{marker('a')}</inbound></policies>"
    snapshot_data["apis"][0]["operations"][0]["policy"] = (
        f"<policies><inbound>{marker('o')}<base/></inbound></policies>"
    )
    config = load(snapshot_data)
    pipelines = config.pipelines[config.apis["chat"].operations[0]]
    assert [s.header for s in pipelines["starter"].inbound] == [b"x-o", b"x-g", b"x-p", b"x-a"]
    assert [s.header for s in pipelines[None].inbound] == [b"x-o", b"x-g", b"x-a"]
    assert all(s.section is Section.INBOUND for s in pipelines[None].inbound)


def test_extra_apis_are_routed(snapshot_data):
    snapshot_data["apis"].append(api("extra", "extra/v2", operations=[op("m", "GET", "/m")]))
    assert load(snapshot_data).router.match("GET", "/extra/v2/m").operation.name == "m"


def test_encrypt_helper_roundtrip():
    assert encrypt("x") != encrypt("x")  # fresh IV each time
