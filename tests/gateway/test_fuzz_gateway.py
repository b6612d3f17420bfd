"""Gateway fuzz battery (issue #7): Hypothesis-generated request lines, headers, paths and bodies, sent as raw bytes
over loopback to a real gateway process (``python -m gateway``) in front of the mock model server and a lenient
backend (tests/gateway/gateway_proc.py).

What must hold for every request:

* an answer (the connection is never dropped without one) within the socket timeout;
* no 5xx other than 502/503/504 carrying APIM's JSON body ``{"statusCode": N, "message": "…"}``. The HTTP layer's
  deliberate protocol refusals are accepted too, with their fixed JSON messages only: 501 for a Transfer-Encoding
  other than chunked and for CONNECT/Upgrade, 505 for an HTTP version other than 1.x (the statuses RFC 9110/9112
  name for them; they say "not implemented", not "failed");
* a path with a dot or empty segment (in any encoding) is refused with 400 before routing, and no other path is;
* a body the token policies cannot read is refused with 400 naming it; a 200 from a token-limited operation carries
  the tokens the backend reported;

and after each test the process is alive, answers its health check, and its log holds no traceback or ERROR line.

``SLUICE_FUZZ_EXAMPLES`` sets the examples per test (default 2000 in CI, where ``CI`` is set, and 400 elsewhere).
The counts of each run (cases tried, statuses seen) are printed at the end of the module (``pytest -s``) and
written to ``$SLUICE_FUZZ_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
import re
import string
from collections import Counter
from collections.abc import Iterator
from urllib.parse import unquote

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.http.server import MSG_TE_UNSUPPORTED, MSG_UPGRADE_UNSUPPORTED, MSG_VERSION_UNSUPPORTED
from tests.fixtures_procs import mock_llm  # noqa: F401  (fixture)

from .gateway_proc import KEY, RunningGateway, safety_gateway, sidecar  # noqa: F401  (fixtures)
from .helpers import TOKEN
from .rawhttp import RawResponse, exchange, exchange_all

EXAMPLES = int(os.environ.get("SLUICE_FUZZ_EXAMPLES") or (2000 if os.environ.get("CI") else 400))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
SOCKET_TIMEOUT = 15.0
KEY_LINE = b"Ocp-Apim-Subscription-Key: " + KEY.encode()
# The HTTP layer's deliberate refusals of protocol features it does not implement (RFC 9110/9112 statuses).
PROTOCOL_REFUSALS = {
    501: {MSG_TE_UNSUPPORTED, MSG_UPGRADE_UNSUPPORTED},
    505: {MSG_VERSION_UNSUPPORTED},
}
MSG_BAD_PATH = "Invalid request path: "
MSG_BAD_BODY = "Request body is not valid JSON: "

STATS: dict[str, Counter[str]] = {}


@pytest.fixture(scope="module", autouse=True)
def fuzz_report() -> Iterator[None]:
    yield
    lines = [f"{name}: {sum(c.values())} cases, statuses {dict(sorted(c.items()))}" for name, c in STATS.items()]
    print("\ngateway fuzz battery\n  " + "\n  ".join(lines))
    path = os.environ.get("SLUICE_FUZZ_REPORT")
    if path:
        with open(path, "w") as out:
            json.dump({name: dict(c) for name, c in STATS.items()}, out, indent=1)


@pytest.fixture(scope="module")
def gateway(safety_gateway: RunningGateway) -> RunningGateway:  # noqa: F811
    return safety_gateway


@pytest.fixture(autouse=True)
def still_healthy(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    gw: RunningGateway = request.getfixturevalue("gateway")
    assert gw.process.alive, f"the gateway process died:\n{gw.process.tail()}"
    health = exchange(gw.port, b"GET /__sluice/health HTTP/1.1\r\nHost: g\r\nConnection: close\r\n\r\n")
    assert health is not None and health.status == 200
    log = gw.log()
    bad = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line or " CRITICAL " in line]
    assert not bad, "the gateway logged errors:\n" + log[-4000:]


def send(gw: RunningGateway, name: str, data: bytes, *, head: bool = False) -> RawResponse:
    response = exchange(gw.port, data, timeout=SOCKET_TIMEOUT, head=head)
    STATS.setdefault(name, Counter())[str(response.status) if response is not None else "closed"] += 1
    assert response is not None, f"closed without an answer: {data[:300]!r}"
    check_status(response, data, head=head)
    return response


def check_status(response: RawResponse, sent: bytes, *, head: bool = False) -> None:
    status = response.status
    if status < 500:
        return
    if head:  # no body to inspect
        assert status in (*PROTOCOL_REFUSALS, 502, 503, 504), f"{status} for {sent[:300]!r}"
        return
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    where = f"{status} {response.body[:300]!r} for {sent[:300]!r}"
    if status in PROTOCOL_REFUSALS:
        assert isinstance(body, dict) and body.get("statusCode") == status, where
        assert body.get("message") in PROTOCOL_REFUSALS[status] and len(body) == 2, where
        return
    assert status in (502, 503, 504), where
    assert isinstance(body, dict) and set(body) == {"statusCode", "message"}, where
    assert body["statusCode"] == status and isinstance(body["message"], str), where


def message(response: RawResponse) -> str:
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return ""
    return body.get("message", "") if isinstance(body, dict) else ""


#
# Strategies
#

SEGMENT_WORDS = [
    "llm", "private", "chat", "completions", "models", "v1", "free", "metric", "expr", "lenient", "x",
    ".", "..", "...", "a.b", ".well-known", "%2e", "%2E", "%2e%2e", ".%2e", "%2e.", "%252e", "%252e%252e",
    "", "%2f", "%2F", "%5c", "%5C", "\\", "..\\", "..;", ";x", "..;x=1", "%00", "%ff", "%", "%zz", "%2", "é",
    "%C3%A9", "~", "*", "{x}", "%20", "+", "%3f", "%23", "\u2025", "%u002e", "%c0%ae",
]  # fmt: skip
segment = st.one_of(
    st.sampled_from(SEGMENT_WORDS),
    st.text(st.characters(codec="utf-8", exclude_characters="/?# \r\n"), max_size=10),
)
paths = st.lists(segment, max_size=7).map(lambda parts: "/" + "/".join(parts))
api_paths = st.tuples(
    st.sampled_from(["/llm", "/llm/private", "/free", "/metric", "/lenient", ""]), st.lists(segment, max_size=5)
).map(lambda t: t[0] + "/" + "/".join(t[1]))
queries = st.one_of(
    st.just(""),
    st.sampled_from(["?subscription-key=" + KEY, "?a=1&subscription-key=x", "?%zz", "?&&==", "?a=%00"]),
    st.text(st.characters(codec="utf-8", exclude_characters=" \r\n#"), max_size=20).map(lambda q: "?" + q),
)


def dangerous(path: str) -> bool:
    """The test's own statement of the path rule (docs/request-handling.md): a dot or an empty segment after
    splitting on '/' and '\\', at any of up to three levels of percent-decoding."""
    for _ in range(4):
        parts = re.split(r"[/\\]", path)
        if any(p.split(";")[0] in (".", "..") for p in parts) or "" in parts[1:-1]:
            return True
        decoded = unquote(path, errors="surrogateescape")
        if decoded == path:
            return False
        path = decoded
    return False


METHODS = st.one_of(
    st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PRI"]),
    st.sampled_from(["get", "G ET", "", "GET\x00", "M-SEARCH", "PROPFIND", "POST\t"]),
    st.text(string.ascii_letters + "-_!~", min_size=1, max_size=12),
)
TARGETS = st.one_of(
    st.builds(lambda p, q: (p + q).encode("utf-8", "surrogateescape"), api_paths, queries),
    st.sampled_from([b"*", b"http://h/llm/chat/completions", b"http://h:99999/x", b"//x", b"", b"?", b"#"]),
    st.binary(max_size=40),
)
VERSIONS = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 ", "http/1.1", "HTTP/1.10", ""])
LINE_BODIES = st.sampled_from([b"", b"{}", b'{"model": "m", "messages": []}'])


@st.composite
def request_lines(draw: st.DrawFn) -> bytes:
    method, target, version, body = draw(METHODS), draw(TARGETS), draw(VERSIONS), draw(LINE_BODIES)
    head = method.encode("utf-8", "surrogateescape") + b" " + target + b" " + version.encode()
    lines = [head, b"Host: gateway", b"Connection: close", KEY_LINE]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


HEADER_NAMES = [
    "Content-Length", "Transfer-Encoding", "Host", "Expect", "Connection", "Accept-Encoding", "Content-Type",
    "Ocp-Apim-Subscription-Key", "X-Forwarded-For", "X-Sluice-Trace", "Upgrade", "TE", "Keep-Alive", "Trailer",
    "Proxy-Connection", "Authorization", "Cookie", "Content-Encoding", "X-Request-Id", "Forwarded",
]  # fmt: skip
HEADER_VALUES = [
    "0", "1", "-1", "abc", " 5", "+5", "0x10", "5, 5", "1e3", "99999999999999999999999",
    "chunked", "gzip", "chunked, chunked", "identity", "Chunked", "gzip, chunked", "100-continue", "200-ok",
    "close", "keep-alive", "upgrade", "websocket", "h2c", "", " ", KEY, "wrong-key", "gzip, br", "*", "trailers",
    "application/json", "text/plain; charset=utf-16", "a" * 9000, "\x00", "é", "1.2.3.4, ::1", "\t x \t",
]  # fmt: skip
JUNK_NAMES = ["", " Host", "Host ", "Content-Length\t", "Na me", "é", "X\x00"]
NAMES = st.one_of(
    st.sampled_from(HEADER_NAMES),
    st.text(string.ascii_letters + string.digits + "-_.!#$%&'*+^`|~", min_size=1, max_size=12).map(
        lambda s: "x-f-" + s
    ),
    st.sampled_from(HEADER_NAMES * 7 + JUNK_NAMES),  # a malformed name now and then: one early 400
)
VALUES = st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=30))
HEADER_LISTS = st.lists(st.tuples(NAMES, VALUES), max_size=8)
HEADER_BODIES = st.sampled_from([b"", b'{"model": "gpt-4o-mini", "messages": []}', b"5\r\nhello\r\n0\r\n\r\n", b"x"])
HEADER_FIRST_LINES = st.sampled_from([b"POST /llm/chat/completions HTTP/1.1", b"GET /free/v1/models HTTP/1.1"])
ONE_IN_EIGHT = st.integers(0, 7).map(lambda n: n == 0)
CHUNKED_BODIES = st.sampled_from([b"5\r\nhello\r\n0\r\n\r\n", b"zz\r\n"])


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    body = draw(HEADER_BODIES)
    lines = [draw(HEADER_FIRST_LINES)]
    if not draw(ONE_IN_EIGHT):  # mostly there: a missing Host is one early 400
        lines.append(b"Host: gateway")
    lines.append(KEY_LINE)
    framing = chunked = False
    for name, value in draw(HEADER_LISTS):
        lower = name.strip().lower()
        if lower == "content-length":
            framing = True
            digits = value.strip()
            if digits.isascii() and digits.isdigit() and int(digits) > len(body) and value != HEADER_VALUES[9]:
                value = str(len(body))  # never more than is sent: the gateway would rightly wait for the rest
        elif lower == "transfer-encoding":
            framing = True
            chunked = chunked or "chunked" in value.lower()
        elif lower == "connection":
            continue  # every request closes its connection: see below
        lines.append(name.encode("utf-8", "surrogateescape") + b": " + value.encode("utf-8", "surrogateescape"))
    if draw(ONE_IN_EIGHT):
        lines.append(b" folded continuation")  # obsolete line folding
    lines.append(b"Connection: close")
    if not framing:
        lines.append(b"Content-Length: %d" % len(body))
    if chunked:
        body = draw(CHUNKED_BODIES)  # complete, or a bad chunk size: never a chunk still to come
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=5,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values},
        optional={"content": st.text(max_size=40) | json_values, "name": json_values, "tool_calls": json_values},
    ),
    max_size=5,
)
HUGE = [
    json.dumps(body).encode()
    for body in (
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word " * 100_000}]},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}] * 10_000},
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}] * 5000}]},
    )
]
chat_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o-mini", "gpt-4", "o3", "mock", ""]) | json_values},
    optional={
        "messages": messages | json_values,
        "max_tokens": st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6) | json_values,
        "max_completion_tokens": st.integers(-5, 10**12) | json_values,
        "n": st.integers(-3, 10**6) | json_values,
        "stream": st.booleans() | json_values,
        "stream_options": st.fixed_dictionaries({}, optional={"include_usage": st.booleans() | json_values})
        | json_values,
        "tools": json_values,
    },
)


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


def _deep(depth: int) -> bytes:
    return b'{"model": "m", "messages": [{"role": "user", "content": ' + b"[" * depth + b"]" * depth + b"}]}"


def _mutate(raw: bytes, mutation: str, at: int, byte: int) -> bytes:
    if mutation == "bom":
        return b"\xef\xbb\xbf" + raw
    if mutation == "truncate":
        return raw[: at % max(1, len(raw))]
    if mutation == "surrogate":
        return raw.replace(b"{", b'{"z": "\\ud800",', 1)
    if mutation == "nan":
        return raw.replace(b"{", b'{"temperature": NaN,', 1)
    if mutation == "utf16":
        return raw.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    at %= max(1, len(raw))
    return raw[:at] + bytes([byte]) + raw[at + 1 :]


MUTATIONS = ["bom", "truncate", "surrogate", "nan", "byte", "utf16"]
bodies = st.one_of(
    chat_bodies.map(_dumps),
    st.sampled_from([b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}', b"", b"{}"]),
    json_values.map(_dumps),
    st.builds(_mutate, chat_bodies.map(_dumps), st.sampled_from(MUTATIONS), st.integers(0, 10**6), st.integers(0, 255)),
    st.sampled_from(HUGE),
    st.integers(100, 3000).map(_deep),
    st.binary(max_size=60),
)


BODY_TARGETS = [
    "/llm/chat/completions",
    "/metric/chat/completions",
    "/expr/chat/completions",
    "/lenient/chat/completions",
    "/lenient-limited/chat/completions",
    "/free/v1/chat/completions",
]
BODY_READING_TARGETS = {
    "/llm/chat/completions",
    "/metric/chat/completions",
    "/expr/chat/completions",
    "/lenient-limited/chat/completions",
}


def policies_can_read(body: bytes) -> bool:
    if not body:
        return True
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


#
# The battery
#


@FUZZ
@given(data=request_lines())
@example(data=b"CONNECT llm:443 HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
@example(data=b"GET * HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
# found by this battery: an absolute-form target that is not a URL was a 500 with a traceback in the log
@example(data=b"GET http://h:99999/x HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
def test_fuzz_request_lines(gateway: RunningGateway, data: bytes) -> None:
    send(gateway, "request lines", data, head=data.startswith(b"HEAD "))


@FUZZ
@given(data=header_blocks())
# found by this battery: the mock model's own 500 for a body its Content-Encoding does not match (now its 400)
@example(
    data=b"POST /llm/chat/completions HTTP/1.1\r\nHost: gateway\r\n" + KEY_LINE + b"\r\nContent-Encoding: gzip\r\n"
    b'Connection: close\r\nContent-Length: 40\r\n\r\n{"model": "gpt-4o-mini", "messages": []}'
)
def test_fuzz_headers(gateway: RunningGateway, data: bytes) -> None:
    send(gateway, "headers", data)


@FUZZ
@given(path=api_paths | paths, query=queries, method=st.sampled_from(["GET", "POST"]))
@example(path="/llm//private/v1/models", query="", method="GET")
@example(path="/llm/%2e%2e/private/v1/models", query="", method="GET")
def test_fuzz_paths(gateway: RunningGateway, path: str, query: str, method: str) -> None:
    target = (path + query).encode("utf-8", "surrogateescape")
    data = b"%s %s HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n%s\r\n" % (method.encode(), target, KEY_LINE)
    if method == "POST":
        data += b"Content-Length: 2\r\n\r\n{}"
    else:
        data += b"\r\n"
    response = send(gateway, "paths", data)
    if dangerous(path):
        assert response.status == 400, (path, response.status, response.body)
    else:
        assert not message(response).startswith(MSG_BAD_PATH), (path, response.body)


@FUZZ
@given(
    target=st.sampled_from(BODY_TARGETS),
    body=bodies,
    content_type=st.sampled_from(["application/json", "", "multipart/form-data; boundary=x", "text/plain"]),
    trace=st.booleans(),
)
@example(
    target="/llm/chat/completions",
    body=b'{"model": "m", "max_tokens": NaN}',
    content_type="application/json",
    trace=False,
)
# found by this battery: an empty body read As<JObject> without a null check (see gateway_proc.JOBJECT)
@example(target="/expr/chat/completions", body=b"", content_type="application/json", trace=True)
def test_fuzz_bodies(gateway: RunningGateway, target: str, body: bytes, content_type: str, trace: bool) -> None:
    lines = [f"POST {target} HTTP/1.1".encode(), b"Host: gateway", b"Connection: close", KEY_LINE]
    if content_type:
        lines.append(b"Content-Type: " + content_type.encode())
    if trace:  # the pipeline trace, serialised into a response header, for every kind of body
        lines.append(b"X-Sluice-Trace: " + TOKEN.encode())
    lines.append(b"Content-Length: %d" % len(body))
    response = send(gateway, "bodies", b"\r\n".join(lines) + b"\r\n\r\n" + body)
    if target in BODY_READING_TARGETS and not policies_can_read(body):
        assert response.status == 400 and message(response).startswith(MSG_BAD_BODY), response.body
    consumed = response.header("x-consumed")
    if (
        response.status == 200
        and consumed is not None
        and "event-stream" not in (response.header("content-type") or "")
    ):
        usage = orjson.loads(response.body)["usage"]
        assert int(consumed) == int(usage["total_tokens"]), (consumed, usage)


def _pipelined(method: str, target: bytes, body: bytes, last: bool) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: gateway", KEY_LINE]
    if last:
        lines.append(b"Connection: close")
    if method == "POST":
        lines += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    else:
        body = b""
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


PIPELINED_BODIES = st.sampled_from(
    [
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": true}',
        b"",
        b"{}",
        b'{"max_tokens": NaN}',
        b'\xef\xbb\xbf{"model": "m"}',
        b"[1]",
    ]
)
pipelined_requests = st.lists(
    st.tuples(
        st.sampled_from(["GET", "POST"]),
        st.one_of(
            st.sampled_from([*BODY_TARGETS, "/free/v1/models", "/llm/models", "/nope"]).map(str.encode),
            st.builds(lambda p, q: (p + q).encode("utf-8", "surrogateescape"), api_paths, queries),
        ),
        PIPELINED_BODIES,
    ),
    min_size=2,
    max_size=4,
)


@settings(FUZZ, max_examples=max(1, EXAMPLES // 2))  # 2 to 4 requests per case
@given(requests=pipelined_requests)
def test_fuzz_pipelined(gateway: RunningGateway, requests: list[tuple[str, bytes, bytes]]) -> None:
    """Several generated requests on one keep-alive connection: one answer each, in order, until one of them ends
    the connection (a malformed request is answered, then the connection closes)."""
    data = b"".join(_pipelined(m, t, b, i == len(requests) - 1) for i, (m, t, b) in enumerate(requests))
    responses = exchange_all(gateway.port, data, timeout=SOCKET_TIMEOUT)
    counts = STATS.setdefault("pipelined", Counter())
    for response in responses:
        counts[str(response.status)] += 1
        check_status(response, data)
    assert responses, f"no answer to {data[:300]!r}"
    closing = [i for i, r in enumerate(responses) if (r.header("connection") or "").lower() == "close"]
    expected = closing[0] + 1 if closing else len(requests)
    assert len(responses) == expected, (len(requests), [r.status for r in responses], data[:500])
