"""Policy and expression fuzzing (issue #7, batteries): generated documents and expressions into the validator.

Every document goes through ``validate_document`` (the management plane's write-time check and the gateway's load
path) and every expression through ``compile_expression``. The only acceptable outcomes are success or the
validator's own error: a PolicyError carrying a line and a column (1-based, inside the text), or an ExpressionError
whose offset lies inside the source. Anything else (another exception type, a position missing or out of range) is
a defect.

Generated shapes: documents built from the registered policies (known and unknown attributes, values that are
literals, numbers, named-value references, expressions or garbage, random children, wrong sections and scopes),
the same documents in ``rawxml``, structural mutations of valid documents (cut, duplicated or swapped characters,
stray ``<``/``&``/quotes), and expressions from a small C# grammar plus random text.

``SLUICE_FUZZ_EXAMPLES`` sets the number of examples per test (600 by default; the three whole-document tests take
half as many), about 3,300 cases and 30-40 s on a shared 2-core machine.
The regression examples of the defects this battery found are pinned with ``@example``.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.expressions import ExpressionError, compile_expression
from gateway.policy import PolicyError, get_policy_class, policy_names, validate_document
from gateway.policy.catalog import KNOWN

EXAMPLES = int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "600"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CI") == "true",  # reproducible in CI; exploratory on a laptop
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# whole documents cost about ten times an expression to generate: they get half the examples
DOCUMENTS = settings(FUZZ, max_examples=max(1, EXAMPLES // 2))
TRIED: Counter[str] = Counter()  # cases per test, printed at the end of the module (pytest -s)

SECTIONS = ("inbound", "backend", "outbound", "on-error")
SCOPES = ("global", "product", "api", "operation")
REGISTERED = tuple(name for name in policy_names())
CHILD_TAGS = ("value", "dimension", "when", "otherwise", "set-status", "set-header", "set-body", "base")

#
# Expressions
#

_IDENT = st.sampled_from(["context", "x", "body", "Request", "Headers", "Value", "Length", "Id", "Name", "it"])
_MEMBER_CHAINS = st.sampled_from(
    [
        "context.Subscription.Id",
        "context.Subscription.Key",
        "context.Request.Method",
        "context.Request.Url.Path",
        "context.Request.IpAddress",
        'context.Request.Headers.GetValueOrDefault("x-a","")',
        'context.Request.Url.Query.GetValueOrDefault("q")',
        "context.Request.Body.As<JObject>(preserveContent: true)",
        'context.Request.Body.As<JObject>()["messages"]',
        "context.Response.StatusCode",
        "context.Response.Body.As<string>()",
        'context.Variables.GetValueOrDefault<int>("n", 0)',
        'context.Variables["v"]',
        "context.Product.Name",
        "context.Api.Name",
        "context.Operation.Id",
        "context.Deployment.Region",
        "context.LastError.Message",
        "DateTime.UtcNow",
        'DateTime.UtcNow.ToString("o")',
        "Guid.NewGuid()",
        "Math.Max(1, 2)",
        'int.Parse("7")',
        'string.Join(",", new[] {"a"})',
    ]
)
# numbers as people and other scripts write them: "²" and Arabic-Indic digits pass str.isdigit(); int() and float()
# take "1_000" and fullwidth digits
_NUMERIC = st.text(alphabet=st.sampled_from("0123456789²³¹\u0661\u0662\uff19_.-+eExX \u00a0"), min_size=1, max_size=6)
_LITERALS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=12).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.text(max_size=6).map(lambda s: '@"' + s.replace('"', '""') + '"'),
    _NUMERIC,
    st.sampled_from(["true", "false", "null", "'a'", "'\\n'", "1L", "2.5m", "0x1F", "1e400", '"\\u00e9"', '$"{1}"']),
)
_OPERATORS = st.sampled_from(
    ["+", "-", "*", "/", "%", "==", "!=", "<", ">", "<=", ">=", "&&", "||", "??", "&", "|", "^", "<<", ">>"]
)
_WORDS = ["=>", "new", "return", "var", "if", "else", "as", "is", "typeof", "default", "(string)", "(int)", "?.", "??="]
_TOKENS = st.sampled_from([*"()[]{}<>.,;:?!~=+-*/%&|^@$\"'\\ \n\t", *_WORDS])


def _expression_tree(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, _OPERATORS, children).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        children.map(lambda e: f"({e})"),
        children.map(lambda e: f"!{e}"),
        children.map(lambda e: f"-{e}"),
        st.tuples(children, children, children).map(lambda t: f"{t[0]} ? {t[1]} : {t[2]}"),
        st.tuples(children, _IDENT).map(lambda t: f"{t[0]}.{t[1]}"),
        st.tuples(children, _IDENT, st.lists(children, max_size=3)).map(lambda t: f"{t[0]}.{t[1]}({', '.join(t[2])})"),
        st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
        children.map(lambda e: f"(string){e}"),
        children.map(lambda e: f"{e}.ToString()"),
        children.map(lambda e: f"{e}?.Length"),
        st.tuples(_IDENT, children).map(lambda t: f"new[] {{1, 2}}.Where({t[0]} => {t[1]}).Count()"),
    )


_EXPR_BODY = st.recursive(st.one_of(_LITERALS, _MEMBER_CHAINS, _MEMBER_CHAINS, _IDENT), _expression_tree, max_leaves=8)


def _statement_block(body: str) -> str:
    return "@{ var v = " + body + "; return v; }"


_EXPRESSION = st.one_of(
    _EXPR_BODY.map(lambda body: f"@({body})"),
    _EXPR_BODY.map(_statement_block),
    st.lists(_TOKENS | _IDENT | _LITERALS, max_size=20).map(lambda parts: "@(" + " ".join(parts) + ")"),
    st.lists(_TOKENS | _IDENT | _LITERALS, max_size=20).map(lambda parts: "@{" + " ".join(parts) + "}"),
    st.text(max_size=30).map(lambda s: "@(" + s),
    st.text(max_size=30).map(lambda s: "@{" + s),
)

#
# Documents
#

_GARBAGE = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=24)
_SPECIAL_VALUES = [
    "", " ", "true", "false", "0", "1", "-1", "60", "300", "1000", "Daily", "Monthly", "allow", "deny", "override",
    "skip", "append", "delete", "x-header", "bad header", "a:b", "200", "999", "http://127.0.0.1:9/x", "not a url",
    "2024-01-01T00:00:00Z", "{{named}}", "{{missing-value}}", "99999999999999999999999", "1.5", "PT10S",
]  # fmt: skip
# attribute values: a cheaper expression strategy than _EXPRESSION (documents hold many values)
_SMALL_EXPRESSION = st.recursive(st.one_of(_LITERALS, _MEMBER_CHAINS), _expression_tree, max_leaves=3).map(
    lambda body: f"@({body})"
)
_VALUE = st.one_of(
    st.sampled_from(_SPECIAL_VALUES),
    _NUMERIC,
    st.integers(min_value=-(2**64), max_value=2**64).map(str),
    _SMALL_EXPRESSION,
    _GARBAGE,
)


def _escape_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace('"', "&quot;")


def _escape_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;")


@st.composite
def _element(draw: st.DrawFn, depth: int = 0) -> str:
    if depth == 0:
        tag = draw(st.sampled_from(REGISTERED) | st.sampled_from(sorted(KNOWN)) | st.just("not-a-policy"))
    else:
        tag = draw(st.sampled_from(CHILD_TAGS) | st.sampled_from(REGISTERED))
    known: list[str] = []
    try:
        known = sorted(get_policy_class(tag).attributes)
    except LookupError:
        known = ["name", "value", "condition", "code", "reason", "exists-action"]
    names = draw(st.lists(st.sampled_from([*known, "unknown-attr", "x:y"]) if known else st.just("a"), max_size=4,
                          unique=True))  # fmt: skip
    attrs = "".join(f' {name}="{_escape_attr(draw(_VALUE))}"' for name in names)
    children = []
    if depth < 2:
        children = draw(st.lists(_element(depth + 1), max_size=2))
    text = _escape_text(draw(st.one_of(st.just(""), _VALUE))) if draw(st.booleans()) else ""
    if not children and not text and draw(st.booleans()):
        return f"<{tag}{attrs} />"
    return f"<{tag}{attrs}>{text}{''.join(children)}</{tag}>"


@st.composite
def _document(draw: st.DrawFn) -> str:
    sections = draw(st.lists(st.sampled_from([*SECTIONS, "outbound", "unknown-section"]), max_size=4))
    parts = []
    for section in sections:
        body = "".join(draw(st.lists(_element(), max_size=3)))
        base = "<base />" if draw(st.booleans()) else ""
        parts.append(f"<{section}>{base}{body}</{section}>")
    root = draw(st.sampled_from(["policies", "policies", "policies", "policy", "Policies"]))
    newline = draw(st.sampled_from(["", "\n", "\r\n", "\n  "]))
    return f"<{root}>{newline}{newline.join(parts)}{newline}</{root}>"


_INSERTS = [
    "<", ">", "&", '"', "'", "</", "/>", "<!--", "]]>", "@(", "<!DOCTYPE x>", "<?xml version='1.0'?>", "\x01",
    "\ufffe", "&lt;", "&#0;", "&#x110000;", "{{", "}}",
]  # fmt: skip


def _mutate(text: str, data: st.DataObject) -> str:
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        if not text:
            break
        at = data.draw(st.integers(min_value=0, max_value=len(text) - 1))
        action = data.draw(st.sampled_from(["cut", "insert", "duplicate", "swap", "truncate"]))
        if action == "cut":
            text = text[:at] + text[at + 1 :]
        elif action == "insert":
            text = text[:at] + data.draw(st.sampled_from(_INSERTS)) + text[at:]
        elif action == "duplicate":
            text = text[:at] + text[at:] + text[at:]
        elif action == "swap" and at + 1 < len(text):
            text = text[:at] + text[at + 1] + text[at] + text[at + 2 :]
        else:
            text = text[:at]
    return text


#
# Oracles
#


def _position_ok(text: str, line: int | None, column: int | None) -> bool:
    if line is None or column is None or line < 1 or column < 1:
        return False
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    # the position may be one past the last character (an unexpected end of the document)
    return line <= len(lines) + 1 and (line > len(lines) or column <= len(lines[line - 1]) + 2)


def check_document(text: str, scope: str, fmt: str = "xml") -> str:
    """Validate; return "ok" or "rejected". Anything but a positioned PolicyError fails the test."""
    try:
        validate_document(text, scope, fmt, named_values={"named": "value", "secret": "s<&>'\""})
    except PolicyError as exc:
        assert _position_ok(text, exc.line, exc.column), f"rejection without a usable position: {exc!r}\n{text!r}"
        return "rejected"
    return "ok"


def check_expression(source: str) -> str:
    try:
        compile_expression(source)
    except ExpressionError as exc:
        assert isinstance(exc.offset, int) and 0 <= exc.offset <= len(source), f"{exc!r} for {source!r}"
        line, column = exc.position(source)
        assert line >= 1 and column >= 1
        return "rejected"
    return "ok"


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print("\n[policy fuzz] cases per test:", dict(TRIED), "total:", sum(TRIED.values()))


#
# The battery
#


@DOCUMENTS
@given(text=_document(), scope=st.sampled_from(SCOPES))
def test_generated_documents_are_accepted_or_rejected_with_a_position(text, scope):
    TRIED["documents " + check_document(text, scope)] += 1


@DOCUMENTS
@given(text=_document(), scope=st.sampled_from(SCOPES), data=st.data())
def test_mutated_documents_are_accepted_or_rejected_with_a_position(text, scope, data):
    TRIED["mutated " + check_document(_mutate(text, data), scope)] += 1


@DOCUMENTS
@given(text=_document(), scope=st.sampled_from(SCOPES))
def test_rawxml_documents_are_accepted_or_rejected_with_a_position(text, scope):
    raw = text.replace("&lt;", "<").replace("&amp;", "&")  # rawxml: attribute values as written
    TRIED["rawxml " + check_document(raw, scope, "rawxml")] += 1


@FUZZ
@given(source=_EXPRESSION)
@example(source="@(²)")  # regression: ValueError from int() (str.isdigit() accepts "²")
@example(source="@(1.²)")  # regression: ValueError from float()
@example(source="@(1_²)")  # regression: ValueError from int()
@example(source="@(\u0661\u0662)")  # regression: compiled as 12
def test_expressions_compile_or_fail_with_an_offset(source):
    TRIED["expressions " + check_expression(source)] += 1


@FUZZ
@given(source=_EXPRESSION, attr=st.sampled_from(["counter-key", "increment-condition", "calls"]))
def test_expressions_inside_policies_are_rejected_at_their_line_and_column(source, attr):
    value = _escape_attr(source)
    text = (
        "<policies>\n  <inbound>\n    <base />\n"
        f'    <rate-limit-by-key calls="5" renewal-period="60" counter-key="k" {attr}="{value}" />\n'
        "  </inbound>\n</policies>"
    )
    if attr in ("counter-key", "calls"):
        text = text.replace(f'{attr}="{"5" if attr == "calls" else "k"}" ', "", 1)
    TRIED["embedded " + check_document(text, "api")] += 1


# one valid statement per registered policy: the attribute-value test replaces one attribute at a time
TEMPLATES = {
    "llm-token-limit": ("inbound", '<llm-token-limit counter-key="k" tokens-per-minute="100" token-quota="1000" '
                        'token-quota-period="Daily" estimate-prompt-tokens="true" retry-after-header-name="r" '
                        'remaining-tokens-variable-name="v" sluice-default-completion-reservation="5" '
                        'sluice-on-store-error="deny" />'),
    "rate-limit-by-key": ("inbound", '<rate-limit-by-key calls="5" renewal-period="60" counter-key="k" '
                          'increment-condition="@(true)" increment-count="1" retry-after-header-name="r" '
                          'remaining-calls-header-name="h" total-calls-header-name="t" />'),
    "quota-by-key": ("inbound", '<quota-by-key calls="5" bandwidth="10" renewal-period="3600" counter-key="k" '
                     'first-period-start="2024-01-01T00:00:00Z" retry-after-variable-name="v" />'),
    "set-header": ("inbound", '<set-header name="x-a" exists-action="override"><value>v</value></set-header>'),
    "set-query-parameter": ("inbound", '<set-query-parameter name="q" exists-action="append"><value>v</value>'
                            "</set-query-parameter>"),
    "set-variable": ("inbound", '<set-variable name="v" value="1" />'),
    "set-backend-service": ("inbound", '<set-backend-service base-url="http://127.0.0.1:9/x" />'),
    "forward-request": ("backend", '<forward-request timeout="30" buffer-response="false" />'),
    "return-response": ("inbound", '<return-response response-variable-name="r"><set-status code="200" '
                        'reason="OK" /></return-response>'),
    "set-status": ("outbound", '<set-status code="200" reason="OK" />'),
    "llm-emit-token-metric": ("inbound", '<llm-emit-token-metric namespace="n"><dimension name="API ID" />'
                              '<dimension name="d" value="v" /></llm-emit-token-metric>'),
    "choose": ("inbound", '<choose><when condition="@(true)"><set-variable name="a" value="b" /></when>'
               "<otherwise /></choose>"),
}  # fmt: skip
_ATTR_IN_TAG = st.sampled_from(sorted(TEMPLATES))


@FUZZ
@given(name=_ATTR_IN_TAG, data=st.data())
def test_each_attribute_of_valid_statements_takes_any_value(name, data):
    section, statement = TEMPLATES[name]
    import re

    attrs = re.findall(r'([a-z-]+)="[^"]*"', statement)
    attr = data.draw(st.sampled_from(attrs))
    value = _escape_attr(data.draw(_VALUE))
    changed = re.sub(rf'(?<![a-z-]){attr}="[^"]*"', lambda _: f'{attr}="{value}"', statement, count=1)
    text = f"<policies>\n<{section}>\n<base />\n{changed}\n</{section}>\n</policies>"
    TRIED["attribute " + check_document(text, "operation")] += 1


def test_the_templates_are_valid():
    for section, statement in TEMPLATES.values():
        assert check_document(f"<policies><{section}>{statement}</{section}></policies>", "operation") == "ok"


#
# Regressions found by this battery (each failed before its fix)
#


def test_regression_an_empty_document_is_rejected_at_line_1_column_1():
    for text in ("", "   ", "\n\n"):
        with pytest.raises(PolicyError) as caught:
            validate_document(text, "api")
        assert (caught.value.line, caught.value.column) == (1, 1)


@pytest.mark.parametrize("number", ["²", "1²", "\u0661\u0662", "\uff19", "1_000", " ³ "])
@pytest.mark.parametrize(
    "statement",
    [
        '<rate-limit-by-key calls="{}" renewal-period="60" counter-key="k" />',
        '<quota-by-key calls="{}" renewal-period="3600" counter-key="k" />',
        '<llm-token-limit counter-key="k" tokens-per-minute="{}" estimate-prompt-tokens="false" />',
        '<set-status code="{}" />',
    ],
)
def test_regression_counts_and_codes_take_ascii_digits_only(statement, number):
    """ "²" passed str.isdigit() and int() raised a bare ValueError (a 500 at write time); Arabic-Indic "12" and a
    fullwidth "9" were read as numbers, which APIM (.NET int.Parse) refuses."""
    text = f"<policies>\n<inbound>\n{statement.format(number)}\n</inbound>\n</policies>"
    with pytest.raises(PolicyError) as caught:
        validate_document(text, "api")
    assert caught.value.line == 3 and caught.value.column is not None


@pytest.mark.parametrize("timeout", ["1_000", "\uff19", "1e3", "inf", "nan", "0x10"])
def test_regression_forward_request_timeout_is_a_plain_decimal(timeout):
    """float() accepted "1_000" and "\uff19" (Python syntax, not APIM's)."""
    text = f'<policies><backend><forward-request timeout="{timeout}" /></backend></policies>'
    with pytest.raises(PolicyError) as caught:
        validate_document(text, "api")
    assert caught.value.line == 1 and caught.value.column is not None


@pytest.mark.parametrize("timeout", ["30", "0.5", ".5", "240"])
def test_plain_decimal_timeouts_are_accepted(timeout):
    validate_document(f'<policies><backend><forward-request timeout="{timeout}" /></backend></policies>', "api")
