"""Expressions from the APIM docs and the AI-gateway labs, evaluated against a fake request."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.context import ResponseHead
from gateway.errors import GatewayError
from gateway.expressions import compile_expression

from .fakes import make_ctx

ERROR = GatewayError(429, "Token limit is exceeded.", source="llm-token-limit", reason="TokenLimitExceeded")
ERROR.section, ERROR.scope, ERROR.policy_id = "inbound", "api", "limit-1"
RESPONSE = ResponseHead(
    429, [(b"content-type", b"application/json"), (b"x-ratelimit-remaining-tokens", b"0")], reason=b"Too Many Requests"
)

EXAMPLES: list[tuple[str, dict[str, Any], Any]] = [
    # llm-token-limit counter-key / semantic-cache vary-by / emit-metric dimensions
    ("@(context.Subscription.Id)", {}, "sub-42"),
    ("@(context.Request.IpAddress)", {}, "203.0.113.7"),
    ("@(String.Concat(context.Subscription.Id, context.Api.Id))", {}, "sub-42azure-openai"),
    ('@($"{context.Api.Name}-{context.Subscription.Id}")', {}, "azure-openai-sub-42"),
    ('@(context.Request.Headers.GetValueOrDefault("x-user","anonymous"))', {}, "alice"),
    ('@(context.Request.Headers.GetValueOrDefault("X-Missing","anonymous"))', {}, "anonymous"),
    ('@(context.Request.Headers.GetValueOrDefault("Accept"))', {}, "application/json, text/plain"),
    ('@((string)context.Variables["x"])', {"variables": {"x": "hello"}}, "hello"),
    ('@(context.Variables.ContainsKey("x") ? "yes" : "no")', {}, "no"),
    ('@(context.Request.MatchedParameters["deployment-id"] == "gpt-4o")', {}, True),
    ('@(context.Request.MatchedParameters.GetValueOrDefault("model", "none"))', {}, "none"),
    ('@(context.Request.Body.As<JObject>(preserveContent: true)["model"].ToString())', {}, "gpt-4o"),
    ('@(context.Request.Body.As<JObject>(true)["max_tokens"].Value<int>() * 2)', {}, 512),
    ('@((int)context.Request.Body.As<JObject>(true)["max_tokens"] + 1)', {}, 257),
    ('@((string)context.Request.Body.As<JObject>(true)["user"] ?? "no-user")', {}, "no-user"),
    ('@(context.Request.Body.As<JObject>(true)["stream"]?.Value<bool>() ?? false)', {}, False),
    ('@(context.Request.Body.As<JObject>(true)["stream_options"]?.Value<bool>() ?? true)', {}, True),
    ('@(context.Request.Body.As<JObject>(true)["messages"].Any(m => (string)m["role"] == "system"))', {}, True),
    ('@(context.Request.Body.As<JObject>(true)["messages"].Count())', {}, 2),
    ('@(((JArray)context.Request.Body.As<JObject>(true)["messages"]).Count)', {}, 2),
    ('@(context.Request.Body.As<JObject>(true).SelectToken("messages[1].content").ToString())', {}, "Hello"),
    ('@(context.Request.Body.As<JObject>(true)["messages"].Last["content"].ToString())', {}, "Hello"),
    ('@(context.Request.Body.As<string>(preserveContent: true).Contains("gpt-4o"))', {}, True),
    (
        "@{ var body = context.Request.Body.As<JObject>(preserveContent: true); "
        'return body["messages"][0].ToString(); }',
        {},
        '{\n  "role": "system",\n  "content": "You are helpful."\n}',
    ),
    ('@(context.Variables.GetValueOrDefault<int>("n", 0) > 5 ? "big" : "small")', {"variables": {"n": 7}}, "big"),
    ('@(context.Variables.GetValueOrDefault<int>("n", 0) > 5 ? "big" : "small")', {}, "small"),
    ('@(context.Variables.GetValueOrDefault("model", "gpt-4o-mini"))', {}, "gpt-4o-mini"),
    ('@(context.Variables.GetValueOrDefault<string>("model"))', {}, None),
    ('@(DateTime.UtcNow.ToString("yyyy-MM-dd"))', {}, "2026-11-25"),
    ('@(DateTime.UtcNow.AddSeconds(60).ToString("o"))', {}, "2026-11-25T18:31:05.1234560Z"),
    ('@(context.Timestamp.ToString("o"))', {}, "2026-11-25T18:30:04.8734560Z"),
    ("@(context.Elapsed.TotalMilliseconds)", {}, 250.0),
    ("@(context.RequestId.ToString())", {}, "3f2a9c1e-5b7d-4e21-9a0b-00000000002a"),
    ("@(context.LastError.Reason)", {"last_error": ERROR}, "TokenLimitExceeded"),
    (
        '@($"{context.LastError.Source}/{context.LastError.Section}/{context.LastError.PolicyId}")',
        {"last_error": ERROR},
        "llm-token-limit/inbound/limit-1",
    ),
    # backend-pool retry conditions and response headers
    ("@(context.Response.StatusCode == 429 || context.Response.StatusCode >= 500)", {"response": RESPONSE}, True),
    ("@(context.Response.StatusReason)", {"response": RESPONSE}, "Too Many Requests"),
    (
        '@(context.Response.Headers.GetValueOrDefault("x-ratelimit-remaining-tokens", "-1"))',
        {"response": RESPONSE},
        "0",
    ),
    ("@(context.Deployment.Region)", {}, "westeurope"),
    ('@(context.Deployment.Gateway.Id + "/" + context.Deployment.ServiceName)', {}, "gw-1/sluice-gw"),
    ('@(context.Request.Url.Query.GetValueOrDefault("api-version", "2024-02-01"))', {}, "2024-10-21"),
    (
        "@(context.Request.OriginalUrl.ToString())",
        {},
        "http://gateway.example.com:8443/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    ),
    ("@(context.Api.ServiceUrl.Host)", {}, "my-aoai.openai.azure.com"),
    ('@(context.Operation.Id + " " + context.Operation.Method)', {}, "chat-completions POST"),
    ('@(context.Product?.Name ?? "none")', {"product": None}, "none"),
    ('@(context.User?.Email ?? "unknown")', {}, "unknown"),
    ("@(context.Subscription.Key)", {}, "caller-key-1"),
    (
        '@(context.Request.Headers.GetValueOrDefault("Authorization", "").Replace("Bearer ", ""))',
        {"headers": [(b"authorization", b"Bearer t0ken")]},
        "t0ken",
    ),
    ('@(Convert.ToBase64String(Encoding.UTF8.GetBytes("user:pass")))', {}, "dXNlcjpwYXNz"),
    # doc examples of §2.4
    ("@(true)", {}, True),
    ("@((1+1).ToString())", {}, "2"),
    (
        '@{ string key = context.Request.Headers.GetValueOrDefault("x-user", ""); '
        "if (string.IsNullOrEmpty(key)) { return context.Subscription.Id; } return key; }",
        {},
        "alice",
    ),
]


@pytest.mark.parametrize(("text", "ctx_fields", "expected"), EXAMPLES, ids=[e[0][:60] for e in EXAMPLES])
def test_examples(text: str, ctx_fields: dict[str, Any], expected: Any) -> None:
    compiled = compile_expression(text)
    value = compiled.evaluate(make_ctx(**ctx_fields))
    assert value == expected
    assert type(value) is type(expected)


def test_to_str_uses_dotnet_conversions() -> None:
    ctx = make_ctx()
    assert compile_expression('@(context.Request.Body.As<JObject>(true)["stream"])').to_str(ctx) == "False"
    assert compile_expression("@(5 > 3)").to_str(ctx) == "True"
    assert compile_expression("@(context.User)").to_str(ctx) == ""
    assert compile_expression('@(context.Request.Body.As<JObject>(true)["temperature"])').to_str(ctx) == "0.5"


def test_metadata_flags() -> None:
    plain = compile_expression("@(context.Subscription.Id)")
    assert (plain.uses_body, plain.uses_response, plain.uses_response_body) == (False, False, False)
    body = compile_expression('@(context.Request.Body?.As<JObject>(true)["model"])')
    assert body.uses_body and not body.uses_response
    response = compile_expression("@(context.Response.StatusCode)")
    assert response.uses_response and not response.uses_response_body
    response_body = compile_expression('@(context.Response.Body.As<JObject>(preserveContent: true)["usage"])')
    assert response_body.uses_response and response_body.uses_response_body
    assert plain.result_type == "string" and body.result_type == "JToken"
