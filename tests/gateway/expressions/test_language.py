"""C# semantics of the subset: literals, operators, conversions, strings, formatting, statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.expressions import compile_expression

from .fakes import make_ctx


def run(text: str, **ctx_fields: Any) -> Any:
    return compile_expression(text).evaluate(make_ctx(**ctx_fields))


def text_of(text: str, **ctx_fields: Any) -> str:
    return compile_expression(text).to_str(make_ctx(**ctx_fields))


CASES: list[tuple[str, Any]] = [
    # literals
    ('@("tab\\there \\"q\\" \\u00e9")', 'tab\there "q" é'),
    ('@(@"C:\\path ""quoted""")', 'C:\\path "quoted"'),
    ("@('x'.ToString() + 'y')", "xy"),
    ("@(0x1F + 1_000)", 1031),
    ("@(3000000000)", 3000000000),
    ("@(-2147483648 - 1)", 2147483647),
    ("@(2.5e3)", 2500.0),
    ('@(context.Request.Body.As<JObject>(true)["missing"]?.ToString() ?? "none")', "none"),
    ('@(context.Request.Headers.GetValueOrDefault("x-none")?.Length)', None),
    ("@(context.Subscription?.Name.Length)", 6),
    ('@(context.Variables.GetValueOrDefault("s", defaultValue: "d"))', "d"),
    ('@(System.Text.Encoding.UTF8.GetString(Convert.FromBase64String("aGk=")))', "hi"),
    ('@(System.Net.WebUtility.UrlEncode("a b~c/é") + Uri.EscapeDataString(" ~"))', "a+b%7Ec%2F%C3%A9%20~"),
    ('@((string)null ?? "d")', "d"),
    # interpolation
    ('@($"{{literal}} {1 + 2} {"nested"} {(true ? "a" : "b")}")', "{literal} 3 nested a"),
    ('@($"[{42,5}] [{42,-5}] [{3.14159:F2}] [{7:D3}]")', "[   42] [42   ] [3.14] [007]"),
    ('@($@"{context.Api.Name}\\x ""q""")', 'azure-openai\\x "q"'),
    # arithmetic (int/long/double, C# truncation and wrap-around)
    ("@(7 / 2)", 3),
    ("@(-7 / 2)", -3),
    ("@(-7 % 3)", -1),
    ("@(7.0 / 2)", 3.5),
    ("@(1 / 0.0)", float("inf")),
    ("@(2147483647 + 1)", -2147483648),
    ("@(2147483647L + 1)", 2147483648),
    ("@(10 - 2 * 3)", 4),
    ("@(-(3 + 4))", -7),
    ("@('a' + 1)", 98),
    # strings and concatenation
    ('@("n=" + 1 + 2)', "n=12"),
    ('@(1 + 2 + "=n")', "3=n"),
    ('@(null + "x")', "x"),
    ('@("v:" + true)', "v:True"),
    ('@("v:" + 1.50)', "v:1.5"),
    ('@("a" == "a" && "a" != "A")', True),
    ('@("Hello".Equals("hello", StringComparison.OrdinalIgnoreCase))', True),
    ("@(\" x \".Trim().PadLeft(3, '.'))", "..x"),
    ("@(\"a,b,,c\".Split(',').Length)", 4),
    ('@("a, b ,c".Split(",", StringSplitOptions.TrimEntries)[1])', "b"),
    ('@(string.Join("|", "a,b,c".Split(\',\')))', "a|b|c"),
    ('@(string.Join("-", 1, 2, 3))', "1-2-3"),
    ('@(string.Format("{0}:{1,4}:{2:N0}", "a", 7, 1234567))', "a:   7:1,234,567"),
    ('@("Hello World".Substring(6, 3).ToUpperInvariant())', "WOR"),
    ('@("Hello".IndexOf("l") + "Hello".LastIndexOf(\'l\'))', 5),
    ('@("Hello".StartsWith("he", StringComparison.OrdinalIgnoreCase))', True),
    ('@("abc"[1])', "b"),
    ('@(string.IsNullOrWhiteSpace("  "))', True),
    ("@(String.Empty.Length)", 0),
    # comparisons, logic, conditional, coalescing
    ("@(3 >= 3 && !(2 > 3) || false)", True),
    ("@(1 == 1.0)", True),
    ("@(true ^ true)", False),
    ("@(5 > 3 ? 1 : 2.5)", 1.0),
    ("@(false ? 1 : (int?)null)", None),
    # casts and conversions
    ("@((int)3.99)", 3),
    ("@((int)-3.99)", -3),
    ("@((long)int.MaxValue + 1)", 2147483648),
    ("@((double)7 / 2)", 3.5),
    ('@(int.Parse(" 42 ") + Convert.ToInt32("8"))', 50),
    ("@(Convert.ToInt32(2.5) + Convert.ToInt32(3.5))", 6),
    ('@(bool.Parse("TRUE"))', True),
    ('@(Convert.ToString(null) == "")', True),
    # Math
    ("@(Math.Max(3, 7) + Math.Min(2L, 9L))", 9),
    ("@(Math.Ceiling(2.1) + Math.Floor(2.9) + Math.Round(2.5))", 7.0),
    ("@(Math.Abs(-4))", 4),
    # DateTime / TimeSpan
    ("@(DateTime.UtcNow.Year * 100 + DateTime.UtcNow.Month)", 202611),
    ("@(DateTime.UtcNow.DayOfWeek.ToString())", "Wednesday"),
    ("@((DateTime.UtcNow.AddMinutes(90) - DateTime.UtcNow).TotalMinutes)", 90.0),
    ("@(TimeSpan.FromSeconds(3725).ToString())", "01:02:05"),
    ("@(TimeSpan.FromHours(25.5).ToString())", "1.01:30:00"),
    ("@(DateTime.UtcNow > DateTime.UtcNow.AddDays(-1))", True),
    ('@(DateTime.Parse("2024-01-02T03:04:05Z").ToString("s"))', "2024-01-02T03:04:05"),
    # JSON
    ('@(JObject.Parse("{\\"a\\": {\\"b\\": [1, 2]}}")["a"]["b"][1].Value<int>())', 2),
    ('@(JObject.Parse("{\\"a\\": 1}").ToString(Formatting.None))', '{"a":1}'),
    ('@(JToken.Parse("\\"s\\"").ToString(Formatting.None))', '"s"'),
    ('@(JObject.Parse("{\\"a\\": null}")["a"] == null)', False),
    ('@(JObject.Parse("{\\"a\\": null}")["b"] == null)', True),
    ('@(JObject.Parse("{\\"a\\": null}")["a"].Type.ToString())', "Null"),
    ('@((string)JObject.Parse("{\\"a\\": null}")["a"] ?? "was null")', "was null"),
    ('@(JObject.Parse("{\\"a\\": 1}").ContainsKey("a"))', True),
    ('@(JObject.Parse("{\\"n\\": \\"12\\"}").Value<int>("n"))', 12),
    ('@(JObject.Parse("{}").Value<int>("missing"))', 0),
    ('@(JObject.Parse("{\\"x\\": 1.0}")["x"].ToString())', "1"),
    # LINQ
    ('@("a,b,c".Split(\',\').Where(s => s != "b").Count())', 2),
    ('@(string.Join("+", "a,b".Split(\',\').Select(s => s.ToUpper())))', "A+B"),
    ('@("a,b".Split(\',\').FirstOrDefault(s => s == "z") ?? "none")', "none"),
    ('@(JArray.Parse("[1,2,3]").Select(t => (int)t * 2).Last())', 6),
    ('@(JArray.Parse("[1,2,3]").All(t => (int)t > 0))', True),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_semantics(text: str, expected: Any) -> None:
    value = run(text)
    assert value == expected
    if expected is not None:
        assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@(true)", "True"),
        ("@(1.0)", "1"),
        ("@(0.1 + 0.2)", "0.30000000000000004"),
        ("@(1e15)", "1E+15"),
        ("@(123456789012345.0)", "123456789012345"),
        ("@(0.0001)", "0.0001"),
        ("@(0.00001)", "1E-05"),
        ("@(-2.5e-7)", "-2.5E-07"),
        ("@(1 / 0.0)", "∞"),
        ("@(0 / 0.0)", "NaN"),
        ('@(1234.5.ToString("N2"))', "1,234.50"),
        ('@(0.256.ToString("P1"))', "25.6 %"),
        ('@(255.ToString("X4"))', "00FF"),
        ('@(3.14159.ToString("0.00"))', "3.14"),
        ('@(3.1.ToString("0.##"))', "3.1"),
        ('@(1234567.ToString("#,##0"))', "1,234,567"),
        ('@(12345.678.ToString("E2"))', "1.23E+004"),
        ("@(DateTime.UtcNow)", "11/25/2026 18:30:05"),
        ('@(DateTime.UtcNow.ToString("u"))', "2026-11-25 18:30:05Z"),
        ('@(DateTime.UtcNow.ToString("r"))', "Wed, 25 Nov 2026 18:30:05 GMT"),
        ('@(DateTime.UtcNow.ToString("dddd, MMMM d yyyy h:mm tt"))', "Wednesday, November 25 2026 6:30 PM"),
        ("@(DateTime.UtcNow.ToString(\"HH':'mm':'ss.fff\"))", "18:30:05.123"),
        ("@(\"a,b\".Split(','))", "System.String[]"),
        ("@(TimeSpan.FromMilliseconds(1500).Negate())", "-00:00:01.5000000"),
        ('@(Guid.Parse("3F2A9C1E-5B7D-4E21-9A0B-00000000002A").ToString("N"))', "3f2a9c1e5b7d4e219a0b00000000002a"),
        (
            '@(JObject.Parse("{\\"a\\":[1,{\\"b\\":true}],\\"e\\":{}}"))',
            '{\n  "a": [\n    1,\n    {\n      "b": true\n    }\n  ],\n  "e": {}\n}',
        ),
    ],
)
def test_dotnet_string_conversion(text: str, expected: str) -> None:
    assert text_of(text) == expected


def test_statements_scopes_and_assignment() -> None:
    text = """@{
        // pick a model by the caller's header
        string model;
        var header = context.Request.Headers.GetValueOrDefault("x-model", "");
        if (header == "") {
            model = "gpt-4o-mini";
        } else if (header.StartsWith("gpt")) {
            model = header;
        } else {
            return "rejected:" + header;
        }
        int budget = 100;
        budget += model.Length;
        /* both branches assigned model */
        return model + "@" + budget;
    }"""
    compiled = compile_expression(text)
    assert compiled.result_type == "string"
    assert compiled.evaluate(make_ctx()) == "gpt-4o-mini@111"
    assert compiled.evaluate(make_ctx(headers=[(b"x-model", b"gpt-4.1")])) == "gpt-4.1@107"
    assert compiled.evaluate(make_ctx(headers=[(b"x-model", b"llama")])) == "rejected:llama"


def test_block_result_type_unifies_returns() -> None:
    widened = compile_expression("@{ if (true) { return 1; } return 2.5; }")
    assert widened.result_type == "double"
    assert widened.evaluate(make_ctx()) == 1.0 and type(widened.evaluate(make_ctx())) is float
    assert compile_expression("@{ if (true) { return null; } return 2; }").result_type == "object"
    assert compile_expression('@{ if (true) { return "a"; } return null; }').result_type == "string"
    assert compile_expression('@{ if (true) { return "a"; } return 1; }').result_type == "object"


def test_sibling_blocks_may_reuse_names() -> None:
    text = "@{ if (true) { var x = 1; } else { var x = 2; } { var y = 3; } return 0; }"
    assert run(text) == 0


def test_clock_is_injected() -> None:
    from .fakes import FakeServices

    later = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    services = FakeServices(now_value=later, monotonic=102.0)
    ctx = make_ctx(services=services)
    assert compile_expression('@(DateTime.UtcNow.ToString("o"))').evaluate(ctx) == "2030-01-02T03:04:05.0000000Z"
    assert compile_expression("@(context.Elapsed)").evaluate(ctx) == timedelta(seconds=2)
    assert compile_expression("@(DateTime.Now == DateTime.UtcNow)").evaluate(ctx) is True


def test_trace_appends_only_when_tracing() -> None:
    compiled = compile_expression(
        '@{ context.Trace("model=" + context.Request.MatchedParameters["deployment-id"]); return context.Tracing; }'
    )
    trace: list[dict[str, Any]] = []
    assert compiled.evaluate(make_ctx(trace=trace)) is True
    assert trace == [{"section": None, "source": "context.Trace", "message": "model=gpt-4o"}]
    assert compiled.evaluate(make_ctx()) is False
