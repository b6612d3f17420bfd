"""Compile-time errors (with offsets), sandbox escapes, limits, and runtime failures."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.errors import GatewayError
from gateway.expressions import (
    MAX_EXPRESSION_LENGTH,
    REASON_EVALUATION_FAILURE,
    ExpressionError,
    ExpressionRuntimeError,
    compile_expression,
)

from .fakes import make_ctx


def compile_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    return info.value


COMPILE_ERRORS: list[tuple[str, str, str]] = [
    # (text, the text at the reported offset, a fragment of the message)
    ("@(context.Foo)", "Foo", "does not contain a definition for 'Foo'"),
    ("@(context.Subscription.PrimaryKey)", "PrimaryKey", "only hashes of subscription keys"),
    ("@(context.Subscription.SecondaryKey)", "SecondaryKey", "use context.Subscription.Key"),
    ("@(context.Api.Version)", "Version", "not available"),
    ("@(context.Api.Name +)", ")", "expected an expression"),
    ("@(context.Api.Name", "@(", "must have the form"),
    ('@("unterminated)', '"unterminated', "unterminated string"),
    ("@(1 +* 2)", "* 2", "operator '*' is not supported"),
    ('@(context.Variables["x"].Length)', "Length", "'object' does not contain a definition for 'Length'"),
    ('@(context.Api.Name.Substring("x"))', "Substring", "no overload of 'Substring'"),
    ("@(context.Request.Body.As<int>())", "As<int>", "does not accept the type argument 'int'"),
    ("@(context.Api.Name())", "Name()", "is not a method"),
    ("@(context.Api.Name.ToUpper)", "ToUpper", "is a method"),
    ('@(context.Trace("x"))', "Trace", "void"),
    ('@("a" < "b")', '< "b"', "operator '<' cannot be applied"),
    ("@(1 ? 2 : 3)", "1 ?", "cannot implicitly convert type 'int' to 'bool'"),
    ('@(true ? 1 : "x")', "? 1", "type of conditional expression"),
    ("@(5 ?? 1)", "?? 1", "never null"),
    ("@((string)5)", "(string)5", "cannot convert type 'int' to 'string'"),
    ("@((float)1.5)", "float", "'float' is not supported"),
    ("@((List)x)", "List", "not allowed"),
    ("@(x => x)", "x =>", "lambda"),
    ("@(Math)", "Math", "is a type or namespace"),
    ('@(context.Variables["a"] as string)', "as string", "'as' is not supported"),
    ("@{ return x; }", "x;", "'x' does not exist"),
    ("@{ string s; return s; }", "s; }", "unassigned local variable 's'"),
    ("@{ var a = 1; var a = 2; return a; }", "a = 2", "already defined"),
    ("@{ var context = 1; return context; }", "context = 1", "already defined"),
    ("@{ var n = null; return n; }", "n = null", "implicitly typed"),
    ('@{ int n = "x"; return n; }', '"x"', "cannot implicitly convert type 'string' to 'int'"),
    ('@{ if (true) { return "a"; } }', "}", "not all code paths return a value"),
    ("@{ var x = 1; }", "}", "not all code paths return a value"),
    ("@{ return; }", "return", "must return a value"),
    ("@{ while (true) { } return 1; }", "while", "'while' is not supported"),
    ("@{ foreach (var h in context.Request.Headers) { } return 1; }", "foreach", "not supported"),
    ("@{ 1 + 1; return 1; }", "1 + 1", "only assignments and method calls"),
    ("@{ if (true) var x = 1; return 1; }", "x = 1", "declaration is not allowed here"),
    ('@{ context.Api.Name = "x"; return 1; }', "Name =", "only local variables"),
    ('@($"{}")', "}", "invalid interpolation hole"),
    ("@(1.5m)", "m)", "decimal"),
    ("@(99999999999999999999)", "9999", "too large"),
    ("@()", "@()", "empty expression"),
]


@pytest.mark.parametrize(("text", "at", "fragment"), COMPILE_ERRORS, ids=[c[0][:50] for c in COMPILE_ERRORS])
def test_compile_errors_have_offsets(text: str, at: str, fragment: str) -> None:
    error = compile_error(text)
    assert fragment in error.message
    assert text[error.offset :].startswith(at), (error.offset, text[error.offset :])


def test_offset_maps_to_line_and_column() -> None:
    text = "@{\n    var body = context.Request.Body.As<JObject>(true);\n    return body.Nope;\n}"
    error = compile_error(text)
    assert error.position(text) == (3, 17)
    assert "'JObject' does not contain a definition for 'Nope'" in error.message


SANDBOX_ESCAPES = [
    "@(context.__class__)",
    "@(context.Request.__dict__)",
    "@(context.GetType())",
    '@("x".GetType().Assembly)',
    "@(context.Request.Body.GetType())",
    '@(System.IO.File.ReadAllText("/etc/passwd"))',
    '@(System.Diagnostics.Process.Start("sh"))',
    '@(System.Reflection.Assembly.Load("x"))',
    '@(Type.GetType("System.IO.File"))',
    "@(Activator.CreateInstance(null))",
    "@(typeof(string).Assembly)",
    '@(new System.Net.WebClient().DownloadString("http://x"))',
    '@(eval("1"))',
    '@(__import__("os"))',
    "@(context.services)",
    "@(context.Request.request)",
    "@(context.Api.Name.__len__())",
    "@(AppDomain.CurrentDomain)",
    '@(Environment.GetEnvironmentVariable("SECRET"))',
    '@(context.Variables.GetType().GetMethod("x"))',
    "@(default(string))",
    "@(nameof(context))",
]


@pytest.mark.parametrize("text", SANDBOX_ESCAPES)
def test_sandbox_escapes_are_rejected_at_compile_time(text: str) -> None:
    compile_error(text)


def test_limits() -> None:
    too_long = "@(" + '"' + "x" * MAX_EXPRESSION_LENGTH + '"' + ")"
    assert "longer than" in compile_error(too_long).message
    nested = "@(" + "(" * 200 + "1" + ")" * 200 + ")"
    assert "nested too deeply" in compile_error(nested).message
    chain = "@(" + " + ".join(["1"] * 300) + ")"
    assert "nested too deeply" in compile_error(chain).message
    negations = "@(" + "!" * 300 + "true)"
    assert "nested too deeply" in compile_error(negations).message
    statements = "@{ " + "if (true) { " * 100 + "return 1;" + " }" * 100 + " }"
    assert "nested too deeply" in compile_error(statements).message


def runtime_error(text: str, **ctx_fields: Any) -> ExpressionRuntimeError:
    compiled = compile_expression(text)
    with pytest.raises(ExpressionRuntimeError) as info:
        compiled.evaluate(make_ctx(**ctx_fields))
    return info.value


RUNTIME_ERRORS: list[tuple[str, dict[str, Any], str]] = [
    ("@(context.Product.Name)", {"product": None}, "Object reference not set"),
    ("@(context.Response.StatusCode)", {}, "Object reference not set"),
    ("@(context.LastError.Message)", {}, "Object reference not set"),
    ('@((string)context.Variables["n"])', {"variables": {"n": 5}}, "Unable to cast object of type 'System.Int32'"),
    ('@((int)context.Variables["n"])', {"variables": {"n": "5"}}, "to type 'System.Int32'"),
    ('@(context.Variables.GetValueOrDefault<int>("n", 0))', {"variables": {"n": "x"}}, "Unable to cast"),
    ('@(context.Variables["missing"])', {}, "'missing' was not present"),
    ('@(context.Request.Headers["x-missing"])', {}, "'x-missing' was not present"),
    ('@(context.Request.Body.As<JObject>(true)["model"])', {"body": b"{not json"}, "Unexpected character"),
    ("@(context.Request.Body.As<JArray>(true))", {}, "not an array"),
    ('@((int)context.Request.Body.As<JObject>(true)["messages"])', {}, "Can not convert Array to Int32"),
    ('@((int)context.Request.Body.As<JObject>(true)["user"])', {}, "Can not convert Null to Int32"),
    ('@(context.Request.Body.As<JObject>(true)["model"]["x"])', {}, "Cannot access child value"),
    ('@(context.Request.Body.As<JObject>(true)["messages"][5])', {}, "Index was out of range"),
    ("@(context.Request.Body.As<JObject>(true))", {"body": b""}, "Object reference not set"),
    ('@(1 / context.Variables.GetValueOrDefault<int>("zero", 0))', {}, "divide by zero"),
    ('@(int.Parse("abc"))', {}, "not in a correct format"),
    ('@(int.Parse("99999999999"))', {}, "too large or too small"),
    ('@("abc".Substring(5))', {}, "startIndex"),
    ('@("abc"[3])', {}, "outside the bounds"),
    ('@("abc".Replace("", "x"))', {}, "empty string"),
    ('@("a".Split(\',\').First(s => s == "b"))', {}, "no matching element"),
    ('@(string.Format("{1}", "a"))', {}, "Index (zero based)"),
    ('@(DateTime.UtcNow.ToString("Q"))', {}, "not in a correct format"),
    ("@(DateTime.MaxValue.AddDays(1))", {}, "un-representable DateTime"),
    ("@(((int?)null).Value)", {}, "must have a value"),
    ('@(Convert.FromBase64String("***"))', {}, "Base-64"),
]


@pytest.mark.parametrize(("text", "ctx_fields", "fragment"), RUNTIME_ERRORS, ids=[r[0][:50] for r in RUNTIME_ERRORS])
def test_runtime_errors(text: str, ctx_fields: dict[str, Any], fragment: str) -> None:
    assert fragment in runtime_error(text, **ctx_fields).message


def test_step_budget_stops_large_lambda_work() -> None:
    body = orjson.dumps({"items": list(range(20_000))})
    error = runtime_error('@(context.Request.Body.As<JObject>(true)["items"].Count(i => (int)i >= 0))', body=body)
    assert "evaluation budget" in error.message
    small = orjson.dumps({"items": list(range(100))})
    compiled = compile_expression('@(context.Request.Body.As<JObject>(true)["items"].Count(i => (int)i >= 0))')
    assert compiled.evaluate(make_ctx(body=small)) == 100


def test_string_size_cap() -> None:
    error = runtime_error('@("x".PadLeft(100000000))')
    assert "totalWidth" in error.message
    text = '@{ var s = "' + "x" * 1000 + '"; ' + "s = s + s; " * 16 + 'return s.Replace("x", "xxxxxxxxxx"); }'
    assert "longer than" in runtime_error(text).message


def test_runtime_error_maps_to_gateway_error() -> None:
    error = runtime_error("@(context.Product.Name)", product=None)
    mapped = error.as_gateway_error("set-header")
    assert isinstance(mapped, GatewayError)
    assert mapped.reason == REASON_EVALUATION_FAILURE == "ExpressionValueEvaluationFailure"
    assert mapped.source == "set-header" and mapped.status == 500


def test_huge_inputs_fail_cleanly() -> None:
    assert "too large" in compile_error("@(" + "9" * 5000 + ")").message
    assert "too large" in compile_error("@(0x" + "F" * 5000 + ")").message
    assert "too large or too small" in runtime_error('@(int.Parse("' + "9" * 5000 + '"))').message
    assert "correct format" in runtime_error('@(string.Format("{0,5000000}", 1))').message
    big = '@{ var s = "ab".PadLeft(30000000, \'a\'); return s.Replace("a", "aa"); }'
    assert "longer than" in runtime_error(big).message
