"""gateway.http.headers helpers and gateway.ids."""

from __future__ import annotations

import os
import re

from gateway import ids
from gateway.http.headers import (
    CLIENT_OWNED,
    HOP_BY_HOP,
    SERVER_OWNED,
    connection_options,
    find_header,
    has_token,
    strip_hop_by_hop,
)

ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def test_header_sets():
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    } == HOP_BY_HOP
    assert HOP_BY_HOP | {b"content-length"} == SERVER_OWNED
    assert SERVER_OWNED | {b"host", b"expect"} == CLIENT_OWNED


def test_token_helpers():
    assert has_token(b"Keep-Alive", b"keep-alive")
    assert has_token(b"foo, Close ", b"close")
    assert not has_token(b"closed", b"close")
    assert connection_options(b"keep-alive, X-Private,  x-other ,close,") == {b"x-private", b"x-other"}
    assert find_header([(b"a", b"1"), (b"b", b"2"), (b"a", b"3")], b"a") == b"1"
    assert find_header([], b"a") is None


def test_strip_hop_by_hop_drops_listed_names_and_lowercases():
    headers = [
        (b"Connection", b"x-private"),
        (b"X-Private", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Content-Length", b"3"),
        (b"X-Kept", b"2"),
    ]
    assert strip_hop_by_hop(headers) == [(b"x-kept", b"2")]


def test_request_ids_are_unique_and_guid_shaped():
    made = [ids.next_request_id() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(ID_RE.match(i) for i in made)
    prefix = made[0][:24]
    assert all(i.startswith(prefix) for i in made)
    assert int(made[1][24:], 16) == int(made[0][24:], 16) + 1


def test_forked_child_draws_a_new_prefix():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id and leave at once
        os.write(write, ids.next_request_id().encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert ID_RE.match(child_id)
    assert child_id[:24] != ids.next_request_id()[:24]
