"""check-header: a missing header or a value not allowed ends the request with the statement's status and message,
through on-error; load-time validation of its attributes."""

from __future__ import annotations

import orjson
import pytest

from gateway.policy import PolicyError, parse_document

from ..helpers import gateway, header, upstream


def check(attrs: str, values: str = "", on_error: str = "") -> str:
    return (
        f"<policies><inbound><base/><check-header {attrs}>{values}</check-header></inbound>"
        f"{f'<on-error>{on_error}</on-error>' if on_error else ''}</policies>"
    )


AUTH = 'name="X-Client" failed-check-httpcode="401" failed-check-error-message="Not authorized"'


async def test_a_missing_header_is_refused_with_the_configured_status_and_message():
    gw = gateway(upstream(), api_policy=check(f'{AUTH} ignore-case="false"'))
    response = await gw.chat()
    assert response.status == 401
    assert orjson.loads(response.body) == {"statusCode": 401, "message": "Not authorized"}
    assert gw.pool.calls == []
    assert (await gw.chat(headers=[(b"x-client", b"anything")])).status == 200
    assert len(gw.pool.calls) == 1


@pytest.mark.parametrize(
    ("ignore_case", "sent", "status"),
    [
        ("false", b"Alpha", 200),
        ("false", b"alpha", 403),
        ("true", b"ALPHA", 200),
        ("true", b"  beta ", 200),  # optional whitespace around a header value is not part of it
        ("true", b"gamma", 403),
        ("@(context.Request.Headers.ContainsKey(&quot;x-fold&quot;))", b"ALPHA", 403),
    ],
)
async def test_the_value_must_be_one_of_the_allowed_values(ignore_case, sent, status):
    policy = check(
        'name="x-client" failed-check-httpcode="403" failed-check-error-message="Bad client" '
        f'ignore-case="{ignore_case}"',
        "<value>Alpha</value><value>beta</value>",
    )
    gw = gateway(upstream(), api_policy=policy)
    response = await gw.chat(headers=[(b"x-client", sent)])
    assert response.status == status
    if status == 403:
        assert orjson.loads(response.body)["message"] == "Bad client"


async def test_an_expression_value_and_an_expression_case_flag_are_evaluated_per_request():
    policy = check(
        f'{AUTH} ignore-case="@(context.Request.Headers.ContainsKey(&quot;x-fold&quot;))"',
        '<value>@(context.Request.Headers.GetValueOrDefault("x-expected", "none"))</value>',
    )
    gw = gateway(upstream(), api_policy=policy)
    assert (await gw.chat(headers=[(b"x-client", b"Key"), (b"x-expected", b"Key")])).status == 200
    assert (await gw.chat(headers=[(b"x-client", b"KEY"), (b"x-expected", b"key")])).status == 401
    both = [(b"x-client", b"KEY"), (b"x-expected", b"key"), (b"x-fold", b"1")]
    assert (await gw.chat(headers=both)).status == 200


async def test_one_of_several_header_lines_may_match():
    gw = gateway(upstream(), api_policy=check(f'{AUTH} ignore-case="false"', "<value>b</value>"))
    assert (await gw.chat(headers=[(b"x-client", b"a"), (b"x-client", b"b")])).status == 200


async def test_the_refusal_reaches_on_error_with_its_reason():
    on_error = (
        '<set-header name="x-reason"><value>@(context.LastError.Reason)</value></set-header>'
        '<set-header name="x-source"><value>@(context.LastError.Source)</value></set-header>'
    )
    gw = gateway(upstream(), api_policy=check(f'{AUTH} ignore-case="false"', "<value>ok</value>", on_error))
    missing = await gw.chat()
    assert (header(missing, b"x-reason"), header(missing, b"x-source")) == (b"HeaderNotFound", b"check-header")
    wrong = await gw.chat(headers=[(b"x-client", b"nope")])
    assert header(wrong, b"x-reason") == b"HeaderValueNotAllowed"


async def test_an_expression_status_is_evaluated_when_the_check_fails():
    code = '@(context.Request.Headers.GetValueOrDefault("x-code", "418"))'
    policy = check(
        f'name="x-client" failed-check-httpcode=\'{code}\' failed-check-error-message="No" ignore-case="true"'
    )
    gw = gateway(upstream(), api_policy=policy)
    assert (await gw.chat()).status == 418
    assert (await gw.chat(headers=[(b"x-code", b"99")])).status == 500  # not a status: an evaluation failure


@pytest.mark.parametrize(
    ("attrs", "fragment"),
    [
        ('name="x" failed-check-httpcode="401" failed-check-error-message="m"',
         "missing required attribute 'ignore-case'"),
        ('name="x" failed-check-httpcode="abc" failed-check-error-message="m" ignore-case="true"',
         "'failed-check-httpcode' must be an HTTP status (100-599), got 'abc'"),
        ('name="x y" failed-check-httpcode="401" failed-check-error-message="m" ignore-case="true"',
         "invalid header name 'x y'"),
        ('name="x" failed-check-httpcode="401" failed-check-error-message="m" ignore-case="maybe"',
         "'ignore-case' must be true, false or a Boolean expression"),
    ],
)  # fmt: skip
def test_bad_statements_are_refused_at_load_time(attrs, fragment):
    with pytest.raises(PolicyError) as info:
        parse_document(check(attrs), "api")
    assert fragment in info.value.message and info.value.line == 1


def test_check_header_is_inbound_only():
    text = (
        '<policies><outbound><check-header name="x" failed-check-httpcode="401" failed-check-error-message="m" '
        'ignore-case="true"/></outbound></policies>'
    )
    with pytest.raises(PolicyError, match="not allowed in the outbound section"):
        parse_document(text, "api")
