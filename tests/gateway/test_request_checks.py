"""gateway.request_checks: the path rule and the JSON body rule (issue #7 items 2 and 3), without sockets."""

from __future__ import annotations

import pytest

from gateway.request_checks import parse_json_body, path_problem

REFUSED = [
    "/a/./b",
    "/a/../b",
    "/a/..",
    "/..",
    "/a/%2e%2e/b",
    "/a/%2E%2e/b",
    "/a/.%2e/b",
    "/a/%2e./b",
    "/a/%2e/b",
    "/a/%252e%252e/b",
    "/a/%25252e%25252e/b",
    "/a/..;/b",
    "/a/.;x=1/b",
    "/a%2f..%2fb",
    "/a%2F..%2Fb",
    "/a%5c..%5cb",
    "/a\\..\\b",
    "/a/..\\b",
    "//a",
    "/a//b",
    "/a/%2f/b",
    "/a/%2F%2F",
    "/a\\\\b",
]
ALLOWED = ["/", "/a", "/a/", "/a/b/c", "/a/.well-known", "/a/...", "/a/a..b", "/a/%2e%2e%2e", "/a/b%20c", "/v1/x.json"]


@pytest.mark.parametrize("path", REFUSED)
def test_dot_and_empty_segments_are_refused(path):
    assert path_problem(path).startswith("Invalid request path: ")


@pytest.mark.parametrize("path", ALLOWED)
def test_other_paths_pass(path):
    assert path_problem(path) is None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"NaN", "(line 1, column 1)"),
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        (b'{"a": "\\ud800"}', "surrogate"),
        (b'{"a": 1', "unexpected end"),
        (b"\xff", "UTF-8"),
        (b"[1]", "got an array"),
        (b"null", "got null"),
        (b"true", "got a boolean"),
        (b'"s"', "got a string"),
        (b"1.5", "got a number"),
    ],
)
def test_bodies_the_token_policies_cannot_read(body, needle):
    document, problem = parse_json_body(body, need_object=True)
    assert document is None and problem.startswith("Request body is not valid JSON: ") and needle in problem


def test_a_json_object_is_returned_parsed():
    assert parse_json_body(b'{"a": [1, 2]}', need_object=True) == ({"a": [1, 2]}, None)
    assert parse_json_body(b"[1]", need_object=False) == ([1], None)
