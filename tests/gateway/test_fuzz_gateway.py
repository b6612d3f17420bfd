"""Gateway fuzz battery (issue #7): Hypothesis-generated request lines, headers, paths and bodies, sent as raw bytes
over loopback to a real gateway process (``python -m gateway``) in front of the mock model server and a lenient
backend (tests/gateway/gateway_proc.py).

What must hold for every request:

* an answer (the connection is never dropped without one) within the socket timeout;
* no 5xx other than 502/503/504 carrying APIM's JSON body ``{"statusCode": N, "message": "…"}``. The HTTP layer's
  own protocol refusals, 501 for CONNECT/Upgrade and 505 for an HTTP version other than 1.x (JSON bodies with their
  fixed messages), are answers about the protocol, not failures, and are accepted;
* a path with a dot or empty segment (in any encoding) is refused with 400 before routing, and no other path is;
* a body the token policies cannot read is refused with 400 naming it; a 200 from a token-limited operation carries
  the tokens the backend reported;

and after each test the process is alive, answers its health check, and its log holds no traceback or ERROR line.

``SLUICE_FUZZ_EXAMPLES`` sets the examples per test (default 2000). The counts of each run (cases tried, statuses
seen) are printed at the end of the module (``pytest -s``) and written to ``$SLUICE_FUZZ_REPORT`` when set.
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

from tests.fixtures_procs import mock_llm  # noqa: F401  (fixture)

from .gateway_proc import KEY, RunningGateway, safety_gateway, sidecar  # noqa: F401  (fixtures)
from .rawhttp import RawResponse, exchange

EXAMPLES = int(os.environ.get("SLUICE_FUZZ_EXAMPLES", "2000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
SOCKET_TIMEOUT = 15.0
KEY_LINE = b"Ocp-Apim-Subscription-Key: " + KEY.encode()
PROTOCOL_REFUSALS = {
    501: "Protocol upgrade and CONNECT are not supported.",
    505: "HTTP version not supported.",
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
    check_status(response, data)
    return response


def check_status(response: RawResponse, sent: bytes) -> None:
    status = response.status
    if status < 500:
        return
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    where = f"{status} {response.body[:300]!r} for {sent[:300]!r}"
    if status in PROTOCOL_REFUSALS:
        assert body == {"statusCode": status, "message": PROTOCOL_REFUSALS[status]}, where
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


@st.composite
def request_lines(draw: st.DrawFn) -> bytes:
    method = draw(
        st.one_of(
            st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "PRI"]),
            st.sampled_from(["get", "G ET", "", "GET\x00", "M-SEARCH", "PROPFIND", "POST\t"]),
            st.text(string.ascii_letters + "-_!~", min_size=1, max_size=12),
        )
    )
    target = draw(
        st.one_of(
            st.builds(lambda p, q: (p + q).encode("utf-8", "surrogateescape"), api_paths, queries),
            st.sampled_from([b"*", b"http://h/llm/chat/completions", b"http://h:99999/x", b"//x", b"", b"?", b"#"]),
            st.binary(max_size=40),
        )
    )
    version = draw(
        st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/1.1 ", "http/1.1", "HTTP/1.10", ""])
    )
    body = draw(st.sampled_from([b"", b"{}", b'{"model": "m", "messages": []}']))
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
# Content-Length never exceeds the body sent (the gateway would rightly wait for the rest).
SAFE_LENGTHS = {"99999999999999999999999"}


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    body = draw(st.sampled_from([b"", b'{"model": "gpt-4o-mini", "messages": []}', b"5\r\nhello\r\n0\r\n\r\n", b"x"]))
    names = st.one_of(
        st.sampled_from(HEADER_NAMES),
        st.text(string.ascii_letters + string.digits + "-_.!#$%&'*+^`|~", min_size=1, max_size=12).map(
            lambda s: "x-f-" + s
        ),
        st.sampled_from(["", " Host", "Host ", "Content-Length\t", "Na me", "é", "X\x00"]),
    )
    values = st.one_of(st.sampled_from(HEADER_VALUES), st.text(max_size=30))
    headers = draw(st.lists(st.tuples(names, values), max_size=8))
    lines = [draw(st.sampled_from([b"POST /llm/chat/completions HTTP/1.1", b"GET /free/v1/models HTTP/1.1"]))]
    if draw(st.booleans()):
        lines.append(b"Host: gateway")
    lines.append(KEY_LINE)
    framing = False
    for name, value in headers:
        lower = name.strip().lower()
        if lower == "content-length":
            if value.strip().isdigit() and int(value.strip()) > len(body) and value not in SAFE_LENGTHS:
                value = str(len(body))
            framing = True
        if lower == "transfer-encoding":
            framing = True
        if lower == "connection":
            continue  # every request closes its connection: see below
        lines.append(name.encode("utf-8", "surrogateescape") + b": " + value.encode("utf-8", "surrogateescape"))
    if draw(st.booleans()):
        lines.append(b" folded continuation")  # obsolete line folding
    lines.append(b"Connection: close")
    if not framing:
        lines.append(b"Content-Length: %d" % len(body))
    if any(b"chunked" in line.lower() and line.lower().startswith(b"transfer-encoding") for line in lines):
        body = b"5\r\nhello\r\n0\r\n\r\n" if draw(st.booleans()) else b"zz\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool"]) | json_values},
        optional={"content": st.text(max_size=40) | json_values, "name": json_values, "tool_calls": json_values},
    ),
    max_size=5,
)
HUGE = [
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "word " * 300_000}]},
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}] * 30_000},
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}] * 5000}]},
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
        "input": json_values,
        "prompt": json_values,
    },
)


def _dumps(value: object) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["chat", "chat", "chat", "json", "mutated", "huge", "deep", "raw"]))
    if kind == "chat":
        return _dumps(draw(chat_bodies))
    if kind == "json":
        return _dumps(draw(json_values))
    if kind == "huge":
        return _dumps(draw(st.sampled_from(HUGE)))
    if kind == "deep":
        depth = draw(st.integers(100, 3000))
        inner = b"[" * depth + b"]" * depth
        return b'{"model": "m", "messages": [{"role": "user", "content": ' + inner + b"}]}"
    if kind == "raw":
        return draw(st.binary(max_size=60))
    raw = _dumps(draw(chat_bodies))
    mutation = draw(st.sampled_from(["bom", "truncate", "surrogate", "nan", "byte", "utf16"]))
    if mutation == "bom":
        return b"\xef\xbb\xbf" + raw
    if mutation == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if mutation == "surrogate":
        return raw.replace(b"{", b'{"z": "\\ud800",', 1)
    if mutation == "nan":
        return raw.replace(b"{", b'{"temperature": NaN,', 1)
    if mutation == "utf16":
        return raw.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    at = draw(st.integers(0, max(0, len(raw) - 1)))
    return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]


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
def test_fuzz_request_lines(gateway: RunningGateway, data: bytes) -> None:
    send(gateway, "request lines", data, head=data.startswith(b"HEAD "))


@FUZZ
@given(data=header_blocks())
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
@given(target=st.sampled_from(BODY_TARGETS), body=bodies(), content_type=st.sampled_from(["application/json", ""]))
@example(target="/llm/chat/completions", body=b'{"model": "m", "max_tokens": NaN}', content_type="application/json")
def test_fuzz_bodies(gateway: RunningGateway, target: str, body: bytes, content_type: str) -> None:
    lines = [f"POST {target} HTTP/1.1".encode(), b"Host: gateway", b"Connection: close", KEY_LINE]
    if content_type:
        lines.append(b"Content-Type: " + content_type.encode())
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
