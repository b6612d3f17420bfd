"""runsluice waits for the gateway to serve the current configuration before it calls the demo API, so a fresh start
leaves no 401s in the usage (they showed as "Recent errors" on the home page of a brand-new install)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gateway_admin.management.commands.runsluice import DEMO_PATH, Command
from gateway_admin.management.processes import served_revision
from gateway_admin.models import ConfigRevision


class FakeGateway(ThreadingHTTPServer):
    """Serves revision ``current - 1`` for the first ``stale`` health checks, then ``current``; records, for each demo
    call, the revision the gateway was serving at that moment."""

    def __init__(self, current: int, stale: int) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.current, self.stale = current, stale
        self.health_calls = 0
        self.demo_calls: list[int] = []
        self.lock = threading.Lock()

    def serving(self) -> int:
        return self.current - 1 if self.health_calls <= self.stale else self.current

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: FakeGateway

    def do_GET(self) -> None:
        with self.server.lock:
            if self.path == "/__sluice/health":
                self.server.health_calls += 1
                body, status = json.dumps({"status": "ok", "revision": self.server.serving()}).encode(), 200
            elif self.path == f"/{DEMO_PATH}/models":
                self.server.demo_calls.append(self.server.serving())
                known = self.server.serving() >= self.server.current
                body, status = (b'{"data": []}', 200) if known else (b'{"statusCode": 401}', 401)
            else:
                body, status = b"{}", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_gateway(db):
    ConfigRevision.bump()
    server = FakeGateway(ConfigRevision.current(), stale=3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_demo_is_called_only_once_the_gateway_serves_the_current_revision(fake_gateway):
    Command().wait_demo(fake_gateway.url, "a-key")
    assert fake_gateway.health_calls > fake_gateway.stale
    assert fake_gateway.demo_calls == [fake_gateway.current]  # one call, and no 401 before it


def test_served_revision_reads_the_health_document(fake_gateway):
    assert served_revision(fake_gateway.url) == fake_gateway.current - 1
    assert served_revision("http://127.0.0.1:9") is None  # nothing listens on the discard port
