"""Policy document parsing and validation: good documents, every error kind with its position, XML attacks."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyError, Section, parse_document, validate_document
from gateway.policy.builtin.forward_request import ForwardRequest
from gateway.policy.builtin.return_response import ReturnResponse
from gateway.policy.builtin.set_backend_service import SetBackendService
from gateway.policy.builtin.set_header import SetHeader
from gateway.policy.builtin.set_status import SetStatus

GOOD = """<policies>
    <inbound>
        <base />
        <set-backend-service backend-id="gemini-backend" />
        <set-header name="X-Trace" exists-action="skip"><value>on</value></set-header>
    </inbound>
    <backend>
        <forward-request timeout="120" buffer-response="false" />
    </backend>
    <outbound>
        <base />
        <set-status code="201" reason="Made" />
    </outbound>
    <on-error>
        <return-response>
            <set-status code="503" />
            <set-header name="content-type"><value>application/json</value></set-header>
            <set-body>{"ok": false}</set-body>
        </return-response>
    </on-error>
</policies>"""


def error_of(text: str, scope: str = "api") -> PolicyError:
    with pytest.raises(PolicyError) as info:
        validate_document(text, scope)
    return info.value


def test_good_document_parses_into_policies():
    doc = parse_document(GOOD, "api")
    assert list(doc.sections) == [Section.INBOUND, Section.BACKEND, Section.OUTBOUND, Section.ON_ERROR]
    inbound = doc.sections[Section.INBOUND]
    assert [p.name for p in inbound] == ["base", "set-backend-service", "set-header"]
    assert isinstance(inbound[1], SetBackendService)
    header = inbound[2]
    assert isinstance(header, SetHeader)
    assert header.header == b"x-trace" and header.action == "skip" and header.entries == ((b"x-trace", b"on"),)
    assert (header.line, header.column, header.section) == (5, 9, Section.INBOUND)
    forward = doc.sections[Section.BACKEND][0]
    assert isinstance(forward, ForwardRequest) and forward.timeout == 120.0
    status = doc.sections[Section.OUTBOUND][1]
    assert isinstance(status, SetStatus) and (status.code, status.reason) == (201, b"Made")
    ret = doc.sections[Section.ON_ERROR][0]
    assert isinstance(ret, ReturnResponse)
    assert ret.status == 503 and ret.body == b'{"ok": false}'
    assert ret.headers == ((b"content-type", b"application/json"),)


@pytest.mark.parametrize("scope", ["global", "product", "api", "operation"])
def test_every_scope_accepts_base_and_empty_sections(scope):
    validate_document("<policies><inbound><base/></inbound><backend><base/></backend><outbound/></policies>", scope)


def test_missing_sections_are_allowed():
    assert parse_document("<policies/>", "operation").sections == {}


def test_policy_error_str_and_attributes():
    err = PolicyError("boom", 3, 7)
    assert (err.message, err.line, err.column) == ("boom", 3, 7)
    assert str(err) == "line 3, column 7: boom"
    assert str(PolicyError("boom")) == "boom"


def test_unknown_scope_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown policy scope"):
        validate_document("<policies/>", "workspace")


@pytest.mark.parametrize(
    ("text", "line", "column", "fragment"),
    [
        ("<policy/>", 1, 1, "root element must be <policies>"),
        ("<policies>\n  <inbound/>\n  <inboundx/>\n</policies>", 3, 3, "unknown section <inboundx>"),
        ("<policies>\n<inbound/>\n<inbound/></policies>", 3, 1, "section <inbound> appears more than once"),
        ("<policies><inbound>\n  <corsage/>\n</inbound></policies>", 2, 3, "unknown policy <corsage>"),
        ("<policies><inbound>\n    <set-header/></inbound></policies>", 2, 5, "missing required attribute 'name'"),
        (
            '<policies><inbound><set-header name="a" colour="red"/></inbound></policies>',
            1,
            20,
            "unknown attribute 'colour'",
        ),
        (
            '<policies><inbound><set-header name="a" exists-action="replace"/></inbound></policies>',
            1,
            20,
            "must be one of override, skip, append, delete",
        ),
        ("<policies><outbound><forward-request/></outbound></policies>", 1, 21, "not allowed in the outbound section"),
        (
            '<policies><outbound><set-backend-service base-url="http://x"/></outbound></policies>',
            1,
            21,
            "<set-backend-service> is not allowed in the outbound section",
        ),
        (
            "<policies><backend>\n<forward-request/>\n<forward-request/></backend></policies>",
            3,
            1,
            "<backend> may hold only one policy element",
        ),
        ("<policies><inbound><set-backend-service/></inbound></policies>", 1, 20, "exactly one of 'backend-id'"),
        (
            '<policies><inbound><set-backend-service backend-id="a" base-url="http://b"/></inbound></policies>',
            1,
            20,
            "exactly one of",
        ),
        (
            '<policies><inbound><set-header name="a"><val/></set-header></inbound></policies>',
            1,
            41,
            "<val> is not allowed",
        ),
        ("<policies><inbound>text</inbound></policies>", 1, 11, "<inbound> must not contain text"),
        ('<policies><outbound><set-status code="99"/></outbound></policies>', 1, 21, "HTTP status code"),
        ('<policies><backend><forward-request timeout="soon"/></backend></policies>', 1, 20, "positive number"),
        ('<policies><inbound><set-header name="Content-Length"/></inbound></policies>', 1, 20, "cannot be changed"),
        ('<policies><inbound><set-header name="bad name"/></inbound></policies>', 1, 20, "invalid header name"),
        (
            '<policies><inbound><base foo="1"/></inbound></policies>',
            1,
            20,
            "<base>: unknown attribute 'foo'",
        ),
        ('<policies a="1"/>', 1, 1, "<policies> takes no attributes"),
        ("<policies>\n  <inbound>\n</policies>", 3, 3, "malformed XML: mismatched tag"),
        ("", 1, 1, "policy document is empty"),  # every rejection has a position (#7)
    ],
)
def test_errors_carry_position_and_element(text, line, column, fragment):
    err = error_of(text)
    assert fragment in err.message
    assert (err.line, err.column) == (line, column)
    if line is not None:
        assert str(err).startswith(f"line {line}, column {column}: ")


def test_named_value_references_are_plain_text_for_validation():
    validate_document(
        '<policies><inbound><set-header name="api-key"><value>{{openai-key}}</value></set-header></inbound></policies>',
        "api",
    )


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<policies><inbound><set-header name="x"><value>&lol3;</value></set-header></inbound></policies>"""

EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE policies [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<policies><inbound><set-header name="x"><value>&xxe;</value></set-header></inbound></policies>"""


@pytest.mark.parametrize("text", [BOMB, EXTERNAL, '<!DOCTYPE policies SYSTEM "http://example.com/p.dtd"><policies/>'])
def test_dtds_entities_and_external_references_are_rejected(text):
    err = error_of(text)
    assert "DTDs (<!DOCTYPE ...>) are not allowed" in err.message
    assert err.line is not None


def test_undeclared_entity_is_malformed():
    err = error_of("<policies><inbound>&ent;</inbound></policies>")
    assert "undefined entity" in err.message


def test_return_response_children_are_validated():
    err = error_of(
        '<policies><inbound><return-response><set-status code="200"/><set-status code="201"/>'
        "</return-response></inbound></policies>"
    )
    assert "at most one <set-status>" in err.message
    err = error_of(
        "<policies><inbound><return-response><set-body><b/></set-body></return-response></inbound></policies>"
    )
    assert "<set-body> must contain text only" in err.message
