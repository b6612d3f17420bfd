"""Control flow and variables through the gateway: choose/when/otherwise, set-variable, set-status, set-header,
set-query-parameter, return-response with expressions, on-error with context.LastError, expression failures."""

from __future__ import annotations

import orjson
import pytest

from gateway.http.client import UpstreamConnectError
from gateway.pipeline import compile_pipeline
from gateway.policy import parse_document
from gateway.policy.builtin.choose import Choose
from gateway.policy.builtin.forward_request import ForwardRequest
from gateway.policy.builtin.set_variable import SetVariable

from ..fakes import FakeUpstream
from .helpers import fixture, gateway, header, trace_of, upstream


def inbound(*statements: str) -> str:
    return "<policies><inbound><base/>" + "".join(statements) + "</inbound></policies>"


#
# choose
#


@pytest.mark.parametrize("name", ["choose-deployment.raw.xml", "choose-deployment.xml"])
async def test_choose_on_matched_parameters_routes_each_deployment(name):
    gw = gateway(upstream(), api_policy=fixture(name))
    response = await gw.chat("gpt-4o")
    assert response.status == 200
    call = gw.last_call
    assert call.target == "/openai/deployments/gpt-4o/chat/completions"
    assert call.header(b"x-route") == b"large:gpt-4o" and call.header(b"api-key") == b"k1"

    await gw.chat("gpt-4o-mini-0718")
    assert gw.last_call.origin.host == "mini.invalid" and gw.last_call.header(b"x-route") == b"small"

    calls = len(gw.pool.calls)
    free = await gw.chat("gpt-4o-mini-0718", headers=[(b"x-tier", b"free")])
    assert free.status == 404 and len(gw.pool.calls) == calls  # otherwise: return-response, no backend call
    assert orjson.loads(free.body) == {"statusCode": 404, "message": "Unknown deployment 'gpt-4o-mini-0718'."}
    assert header(free, b"content-type") == b"application/json"


async def test_first_true_branch_wins_and_no_branch_may_run():
    gw = gateway(
        upstream(),
        api_policy=inbound(
            "<choose>",
            '<when condition="@(context.Request.Headers.ContainsKey(&quot;x-a&quot;))">'
            '<set-header name="x-branch"><value>a</value></set-header></when>',
            '<when condition="true"><set-header name="x-branch"><value>b</value></set-header></when>',
            "</choose>",
            '<choose><when condition="false"><set-header name="x-never"><value>1</value></set-header></when></choose>',
        ),
    )
    await gw.chat(headers=[(b"x-a", b"1")])
    assert gw.last_call.header(b"x-branch") == b"a"
    await gw.chat()
    assert gw.last_call.header(b"x-branch") == b"b"
    assert gw.last_call.header(b"x-never") is None


async def test_nested_choose_and_trace_shows_the_branch():
    gw = gateway(
        upstream(),
        api_policy=inbound(
            '<choose><when condition="@(context.Request.IpAddress.StartsWith(&quot;10.&quot;))">',
            '<choose><when condition="@(context.Request.IpAddress == &quot;10.0.0.1&quot;)">',
            '<set-header name="x-where"><value>one</value></set-header></when>',
            '<otherwise><set-header name="x-where"><value>ten</value></set-header></otherwise></choose>',
            "</when><otherwise><set-header name='x-where'><value>outside</value></set-header></otherwise></choose>",
        ),
    )
    response = await gw.chat(trace=True)
    assert gw.last_call.header(b"x-where") == b"one"
    trace = trace_of(response)
    assert [(e["policy"], e.get("branch")) for e in trace[:3]] == [
        ("choose", "when[1]"),
        ("choose", "when[1]"),
        ("set-header", None),
    ]
    await gw.chat(client_ip="10.9.9.9")
    assert gw.last_call.header(b"x-where") == b"ten"
    await gw.chat(client_ip="192.168.1.1")
    assert gw.last_call.header(b"x-where") == b"outside"


async def test_choose_in_backend_section_holding_forward_request_forwards_once():
    document = (
        "<policies><backend><choose>"
        '<when condition="@(context.Request.Headers.ContainsKey(&quot;x-slow&quot;))">'
        '<forward-request timeout="300"/></when>'
        "<otherwise><forward-request/></otherwise>"
        "</choose></backend></policies>"
    )
    pipeline = compile_pipeline([None, None, parse_document(document, "api"), None])
    assert isinstance(pipeline.backend[0], Choose) and len(pipeline.backend) == 1  # no default forward appended
    gw = gateway(upstream(), api_policy=document)
    assert (await gw.chat()).status == 200
    assert (await gw.chat(headers=[(b"x-slow", b"1")])).status == 200
    assert len(gw.pool.calls) == 2


def test_choose_without_forward_request_in_backend_gets_the_default_forward():
    document = (
        "<policies><backend><choose><when condition='true'><set-variable name='a' value='1'/></when></choose>"
        "</backend></policies>"
    )
    pipeline = compile_pipeline([None, None, parse_document(document, "api"), None])
    assert isinstance(pipeline.backend[-1], ForwardRequest)


#
# set-variable, set-status, set-header, set-query-parameter
#


async def test_set_variable_keeps_types_and_expressions_read_them():
    gw = gateway(
        upstream(),
        api_policy=inbound(
            '<set-variable name="n" value="@(40 + 2)"/>',
            '<set-variable name="b" value="@(context.Request.Method == &quot;POST&quot;)"/>',
            '<set-variable name="s" value="literal text"/>',
            '<set-variable name="ip" value="@(context.Request.IpAddress)"/>',
            '<set-header name="x-sum"><value>@(((int)context.Variables["n"] + 1).ToString())</value></set-header>',
            '<set-header name="x-bool"><value>@((bool)context.Variables["b"])</value></set-header>',
        ),
    )
    response = await gw.chat(trace=True)
    call = gw.last_call
    assert call.header(b"x-sum") == b"43"
    assert call.header(b"x-bool") == b"True"
    entries = [e for e in trace_of(response) if e["policy"] == "set-variable"]
    assert [(e["name"], e["value"]) for e in entries] == [
        ("n", 42),
        ("b", True),
        ("s", "literal text"),
        ("ip", "10.0.0.1"),
    ]


async def test_set_status_and_header_with_expressions_in_outbound():
    gw = gateway(
        upstream(status=201),
        api_policy="<policies><outbound><base/>"
        '<set-status code="@(context.Response.StatusCode + 1)" '
        'reason="@(&quot;Code &quot; + context.Response.StatusCode)"/>'
        '<set-header name="@(&quot;x-&quot; + context.Request.MatchedParameters[&quot;deployment-id&quot;])">'
        "<value>@(context.Response.StatusCode.ToString())</value><value>static</value></set-header>"
        "</outbound></policies>",
    )
    response = await gw.chat("m1")
    assert response.status == 202
    assert header(response, b"x-m1") == b"202,static"


async def test_set_header_expression_skip_append_delete():
    gw = gateway(
        upstream(),
        api_policy=inbound(
            '<set-header name="x-a" exists-action="@(context.Request.Headers.ContainsKey(&quot;x-force&quot;) ? '
            '&quot;override&quot; : &quot;skip&quot;)"><value>gateway</value></set-header>',
            '<set-header name="x-del" exists-action="delete"/>',
        ),
    )
    await gw.chat(headers=[(b"x-a", b"client"), (b"x-del", b"1")])
    assert gw.last_call.header(b"x-a") == b"client" and gw.last_call.header(b"x-del") is None
    await gw.chat(headers=[(b"x-a", b"client"), (b"x-force", b"1")])
    assert gw.last_call.header(b"x-a") == b"gateway"


@pytest.mark.parametrize(
    ("action", "query", "expected"),
    [
        ("override", "a=1&api-version=old&b=2", "a=1&b=2&api-version=v%201&api-version=two"),
        ("skip", "api-version=old", "api-version=old"),
        ("skip", "a=1", "a=1&api-version=v%201&api-version=two"),
        ("append", "api-version=old", "api-version=old&api-version=v%201&api-version=two"),
        ("delete", "api-version=old&x=1&api%2Dversion=enc", "x=1"),
    ],
)
async def test_set_query_parameter(action, query, expected):
    gw = gateway(
        upstream(),
        api_policy=inbound(
            f'<set-query-parameter name="api-version" exists-action="{action}">'
            "<value>v 1</value><value>@(&quot;two&quot;)</value></set-query-parameter>"
        ),
    )
    await gw.chat(query=query)
    assert gw.last_call.target == f"/base/deployments/gpt-4o/chat/completions?{expected}"


async def test_backend_conditional_fixture_chooses_backend_and_query():
    gw = gateway(upstream(), api_policy=fixture("backend-conditional.raw.xml"))
    response = await gw.chat(query="api-version=2025-01-01")
    call = gw.last_call
    assert call.header(b"api-key") == b"k1" and call.target.startswith("/openai/")
    assert call.target.endswith("?api-version=2025-01-01&plan=basic")
    assert response.status == 200
    premium = await gw.chat(headers=[(b"x-plan", b"premium")])
    call = gw.last_call
    assert call.header(b"api-key") == b"k2" and call.target.endswith("?api-version=2024-10-21&plan=premium")
    assert premium.status == 203


async def test_set_backend_service_expression_with_unknown_backend_is_an_evaluation_failure(caplog):
    on_error = "<on-error><set-header name='x-detail'><value>@(context.LastError.Message)</value></set-header>"
    gw = gateway(
        upstream(),
        api_policy=inbound('<set-backend-service backend-id="@(&quot;nope&quot;)"/>').replace(
            "</policies>", on_error + "</on-error></policies>"
        ),
    )
    response = await gw.chat()
    assert response.status == 500
    # issue #7 item 9: the client gets APIM's generic answer; the detail is in context.LastError and the log
    assert orjson.loads(response.body) == {"statusCode": 500, "message": "Internal server error."}
    assert b"unknown backend 'nope'" in header(response, b"x-detail")
    assert "unknown backend 'nope'" in caplog.text


#
# return-response, on-error and LastError
#


async def test_return_response_with_expressions():
    gw = gateway(
        upstream(),
        api_policy=inbound(
            "<return-response>"
            '<set-status code="@(context.Request.Headers.ContainsKey(&quot;x-teapot&quot;) ? 418 : 200)"/>'
            '<set-header name="x-dep"><value>@(context.Request.MatchedParameters["deployment-id"])</value></set-header>'
            '<set-body>@($"{{\\"deployment\\": \\"{context.Request.MatchedParameters["deployment-id"]}\\"}}")'
            "</set-body></return-response>"
        ),
    )
    response = await gw.chat("d1", headers=[(b"x-teapot", b"1")])
    assert response.status == 418
    assert header(response, b"x-dep") == b"d1"
    assert orjson.loads(response.body) == {"deployment": "d1"}
    assert (await gw.chat("d2")).status == 200
    assert gw.pool.calls == []


async def test_on_error_returns_last_error_fields():
    gw = gateway(upstream(), api_policy=fixture("on-error-last-error.raw.xml"))
    assert (await gw.chat()).status == 200
    assert (await gw.chat()).status == 200
    response = await gw.chat()
    assert response.status == 503
    assert response.body == b"RateLimitExceeded: Rate limit is exceeded. Try again in 60 seconds."
    assert header(response, b"x-error-source") == b"rate-limit-by-key"
    assert header(response, b"retry-after") == b"60"
    assert header(response, b"content-type") == b"text/plain"


async def test_on_error_sees_backend_failures_through_last_error():
    gw = gateway(
        api_policy="<policies><on-error><base/><return-response><set-status code='503'/>"
        "<set-body>@(context.LastError.Source + &quot;|&quot; + context.LastError.Reason)</set-body>"
        "</return-response></on-error></policies>"
    )
    gw.pool.error = UpstreamConnectError("refused")
    response = await gw.chat()
    assert (response.status, response.body) == (503, b"forward-request|BackendConnectionFailure")


async def test_expression_failure_is_expression_value_evaluation_failure_of_the_policy():
    gw = gateway(
        upstream(),
        api_policy="<policies><inbound><base/>"
        '<set-header name="x-n"><value>@(((int)context.Variables["missing"]).ToString())</value></set-header>'
        "</inbound><on-error><set-header name='x-source'><value>@(context.LastError.Source)</value></set-header>"
        "<set-header name='x-reason'><value>@(context.LastError.Reason)</value></set-header></on-error></policies>",
    )
    response = await gw.chat()
    assert response.status == 500
    assert header(response, b"x-source") == b"set-header"
    assert header(response, b"x-reason") == b"ExpressionValueEvaluationFailure"
    assert orjson.loads(response.body) == {"statusCode": 500, "message": "Internal server error."}
    assert gw.pool.calls == []


async def test_expression_failure_detail_goes_to_the_trace_not_the_client():
    """Issue #7 item 9: Python's exception text (``invalid literal for int()``) never reaches the client."""
    gw = gateway(
        upstream(),
        api_policy="<policies><inbound><base/>"
        '<set-header name="x-n"><value>@(int.Parse("abc").ToString())</value></set-header>'
        "</inbound></policies>",
    )
    response = await gw.chat(trace=True)
    assert response.status == 500
    assert orjson.loads(response.body) == {"statusCode": 500, "message": "Internal server error."}
    entries = trace_of(response)
    detail = next(e for e in entries if e.get("section") == "on-error")["error"]
    assert detail["reason"] == "ExpressionValueEvaluationFailure" and detail["source"] == "set-header"
    assert detail["message"].startswith("Expression evaluation failed.") and len(detail["message"]) > 30


async def test_failing_when_condition_is_reported_against_choose():
    gw = gateway(
        upstream(),
        api_policy=inbound('<choose><when condition="@((bool)context.Variables[&quot;nope&quot;])"/></choose>').replace(
            "</policies>",
            "<on-error><set-header name='x-source'><value>@(context.LastError.Source)</value>"
            "</set-header></on-error></policies>",
        ),
    )
    response = await gw.chat(trace=True)
    assert response.status == 500 and header(response, b"x-source") == b"choose"
    assert trace_of(response)[0]["policy"] == "choose" and "error" in trace_of(response)[0]


async def test_outbound_expression_reading_the_response_body_buffers_a_stream():
    gw = gateway(
        lambda call: FakeUpstream(
            chunks=[b'{"model": "gpt', b'-4o", "n": 1}'], headers=[(b"content-type", b"application/json")]
        ),
        api_policy="<policies><outbound><base/><set-header name='x-model'>"
        '<value>@((string)context.Response.Body.As&lt;JObject&gt;(preserveContent: true)["model"])</value>'
        "</set-header></outbound></policies>",
    )
    response = await gw.chat()
    assert header(response, b"x-model") == b"gpt-4o"
    assert orjson.loads(response.body) == {"model": "gpt-4o", "n": 1}


def test_set_variable_statement():
    doc = parse_document(inbound('<set-variable name="v" value="@(1)"/>'), "operation")
    step = doc.sections[next(iter(doc.sections))][1]
    assert isinstance(step, SetVariable) and step.variable == "v" and not step.value.is_literal
