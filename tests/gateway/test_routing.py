"""Routing: longest API path segment-wise, then exact > parameterised > wildcard operation templates."""

from __future__ import annotations

import pytest

from gateway.routing import parse_template
from gateway.snapshot import SnapshotError, load_snapshot

from .helpers import TOKEN, api, base_snapshot, op


def config_with(*apis):
    data = base_snapshot()
    data["apis"] = list(apis)
    data["products"] = []
    data["subscriptions"] = []
    return load_snapshot(data, gateway_token=TOKEN)


@pytest.fixture
def router():
    return config_with(
        api("root-ish", "llm", operations=[op("w", "GET", "/*"), op("models", "GET", "/models")]),
        api(
            "chat",
            "llm/chat",
            operations=[
                op("exact", "GET", "/deployments/special/chat"),
                op("param", "GET", "/deployments/{deployment-id}/chat"),
                op("two-params", "GET", "/deployments/{a}/{b}"),
                op("mixed", "GET", "/files/{name}.json"),
                op("wild-deep", "GET", "/deployments/*"),
                op("wild", "GET", "/*"),
                op("post", "POST", "/chat/completions"),
                op("slash", "GET", "/"),
            ],
        ),
        api("other", "llmx", operations=[op("w", "GET", "/*")]),
    ).router


@pytest.mark.parametrize(
    ("method", "path", "api_name", "op_name", "params", "forward"),
    [
        ("GET", "/llm/chat/deployments/special/chat", "chat", "exact", {}, "/deployments/special/chat"),
        (
            "GET",
            "/llm/chat/deployments/gpt-4o/chat",
            "chat",
            "param",
            {"deployment-id": "gpt-4o"},
            "/deployments/gpt-4o/chat",
        ),
        (
            "GET",
            "/llm/chat/deployments/a%20b/chat",
            "chat",
            "param",
            {"deployment-id": "a b"},
            "/deployments/a%20b/chat",
        ),
        ("GET", "/llm/chat/deployments/x/y", "chat", "two-params", {"a": "x", "b": "y"}, "/deployments/x/y"),
        ("GET", "/llm/chat/files/report.json", "chat", "mixed", {"name": "report"}, "/files/report.json"),
        ("GET", "/llm/chat/deployments/x/y/z", "chat", "wild-deep", {}, "/deployments/x/y/z"),
        ("GET", "/llm/chat/deployments", "chat", "wild-deep", {}, "/deployments"),
        ("GET", "/llm/chat/anything/else", "chat", "wild", {}, "/anything/else"),
        ("GET", "/llm/chat/", "chat", "slash", {}, "/"),
        ("GET", "/llm/chat", "chat", "slash", {}, ""),
        ("POST", "/llm/chat/chat/completions", "chat", "post", {}, "/chat/completions"),
        ("GET", "/llm/models", "root-ish", "models", {}, "/models"),
        ("GET", "/llm/chatty/x", "root-ish", "w", {}, "/chatty/x"),  # segment-wise, not prefix-wise
        ("GET", "/llm", "root-ish", "w", {}, ""),
        ("GET", "/llmx/a", "other", "w", {}, "/a"),
    ],
)
def test_matches(router, method, path, api_name, op_name, params, forward):
    match = router.match(method, path)
    assert match is not None
    assert (match.api.name, match.operation.name, dict(match.params), match.forward_path) == (
        api_name,
        op_name,
        params,
        forward,
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/llm/chat/deployments/x/chat"),  # wrong method on a known path: same 404
        ("DELETE", "/llm/chat/chat/completions"),
        ("GET", "/nope/x"),
        ("GET", "/"),
        ("GET", "llm/chat"),
        ("POST", "/llm/x"),
    ],
)
def test_no_match(router, method, path):
    assert router.match(method, path) is None


def test_longest_api_path_wins_without_fallback():
    router = config_with(
        api("short", "a", operations=[op("w", "GET", "/*")]),
        api("long", "a/b", operations=[op("only-post", "POST", "/x")]),
    ).router
    assert router.match("GET", "/a/b/x") is None
    assert router.match("POST", "/a/b/x").api.name == "long"
    assert router.match("GET", "/a/c").api.name == "short"


def test_exact_operations_match_as_the_tree_does():
    # Their matches are made when the router is built: an exact operation whose path a longer API takes is not one.
    router = config_with(
        api("short", "a", operations=[op("deep", "POST", "/b/x"), op("slash", "GET", "/"), op("m", "GET", "/m")]),
        api("long", "a/b", operations=[op("w", "GET", "/*")]),
    ).router
    assert router.match("POST", "/a/b/x") is None
    assert router.match("GET", "/a/b/x").operation.name == "w"
    for path, forward in (("/a", ""), ("/a/", "/")):
        match = router.match("GET", path)
        assert (match.operation.name, match.forward_path, dict(match.params)) == ("slash", forward, {})
    assert router.match("GET", "/a/m") is router.match("GET", "/a/m")  # made once
    assert router.match("POST", "/a/m") is None
    assert router.match("GET", "/a/m/") is None


def test_duplicate_api_paths_and_templates_are_snapshot_errors():
    with pytest.raises(SnapshotError, match="share the path"):
        config_with(api("one", "a"), api("two", "a/"))
    with pytest.raises(SnapshotError, match="two GET operations"):
        config_with(api("one", "a", operations=[op("x", "GET", "/m"), op("y", "GET", "/m")]))
    with pytest.raises(SnapshotError, match="only allowed as the last segment"):
        config_with(api("one", "a", operations=[op("x", "GET", "/*/m")]))


def test_parse_template_ignores_query_part():
    segments, wildcard = parse_template("/deployments/{id}/chat?api-version={v}")
    assert not wildcard and len(segments) == 3
