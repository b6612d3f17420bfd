"""Behind a TLS-terminating proxy (#7 item 6): settings come from the environment, the admin login works over the
proxy, and forwarding headers are believed only from the trusted proxies."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from gateway_admin.middleware import TrustedProxyMiddleware

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "sluice.example.com"
PRINT_SETTINGS = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
    "ssl_header": getattr(settings, "SECURE_PROXY_SSL_HEADER", None),
    "trusted_origins": settings.CSRF_TRUSTED_ORIGINS,
    "trusted_proxies": settings.SLUICE.get("TRUSTED_PROXIES"),
}))
"""


def settings_from_environment(**variables) -> dict:
    """The settings a fresh process derives from these environment variables (as a deployment starts)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SLUICE_", "DJANGO_"))}
    env |= {"DJANGO_SETTINGS_MODULE": "gateway_admin.settings.test", **variables}
    result = subprocess.run(
        [sys.executable, "-c", PRINT_SETTINGS], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def proxied():
    return settings_from_environment(
        SLUICE_BEHIND_TLS_PROXY="true",
        DJANGO_CSRF_TRUSTED_ORIGINS=f"https://{PUBLIC}",
        SLUICE_TRUSTED_PROXIES="10.0.0.0/8,fd00::/8",
    )


def test_defaults_believe_no_proxy_header_and_trust_loopback_only():
    values = settings_from_environment()
    assert values == {"ssl_header": None, "trusted_origins": [], "trusted_proxies": ["127.0.0.1/32", "::1/128"]}


def test_settings_come_from_the_environment(proxied):
    assert proxied == {
        "ssl_header": ["HTTP_X_FORWARDED_PROTO", "https"],
        "trusted_origins": [f"https://{PUBLIC}"],
        "trusted_proxies": ["10.0.0.0/8", "fd00::/8"],
    }


def login(proxy_address: str, user, host: str = PUBLIC) -> int:
    """The admin login as a browser behind the proxy does it: GET the form, POST it with the https Origin.

    `host` is the Host header the management plane sees: the public name when the proxy passes it on, the
    internal address when it does not (then only CSRF_TRUSTED_ORIGINS can vouch for the Origin)."""
    client = Client(enforce_csrf_checks=True, REMOTE_ADDR=proxy_address)
    headers = {"HTTP_HOST": host, "HTTP_X_FORWARDED_PROTO": "https"}
    form = client.get("/admin/login/", **headers)
    assert form.status_code == 200
    token = form.context["csrf_token"]
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": user.username, "password": "proxy-password", "csrfmiddlewaretoken": str(token)},
        HTTP_ORIGIN=f"https://{PUBLIC}",
        HTTP_REFERER=f"https://{PUBLIC}/admin/login/",
        **headers,
    )
    return response.status_code


@pytest.fixture
def staff(django_user_model, settings, proxied):
    settings.SECURE_PROXY_SSL_HEADER = tuple(proxied["ssl_header"])
    settings.CSRF_TRUSTED_ORIGINS = proxied["trusted_origins"]
    settings.SLUICE = {**settings.SLUICE, "TRUSTED_PROXIES": proxied["trusted_proxies"]}
    settings.ALLOWED_HOSTS = [PUBLIC, "10.1.2.3"]
    return django_user_model.objects.create_user("ops", password="proxy-password", is_staff=True)


def test_admin_login_through_the_trusted_proxy(staff, settings):
    settings.CSRF_TRUSTED_ORIGINS = []
    assert login("10.9.8.7", staff) == 302  # logged in, redirected to /admin/


def test_admin_login_through_a_proxy_that_rewrites_the_host(staff, settings):
    assert login("10.9.8.7", staff, host="10.1.2.3:8000") == 302
    settings.CSRF_TRUSTED_ORIGINS = []
    assert login("10.9.8.7", staff, host="10.1.2.3:8000") == 403


def test_forwarded_proto_from_an_untrusted_peer_is_ignored(staff, settings):
    settings.CSRF_TRUSTED_ORIGINS = []
    # Straight to the management plane, claiming HTTPS: the header is dropped, so the https Origin does not match
    # the (plain HTTP) request and CSRF refuses the login.
    assert login("192.0.2.50", staff) == 403


def test_middleware_drops_every_forwarding_header_from_untrusted_peers(settings, rf):
    settings.SLUICE = {**settings.SLUICE, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    seen = {}
    middleware = TrustedProxyMiddleware(lambda request: seen.update(request.META))
    headers = {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_X_FORWARDED_HOST": "evil", "HTTP_FORWARDED": "proto=https"}
    middleware(rf.get("/", REMOTE_ADDR="192.0.2.1", **headers))
    assert not any(key in seen for key in headers)
    for peer in ("10.0.0.1", "::ffff:10.0.0.1"):
        seen.clear()
        middleware(rf.get("/", REMOTE_ADDR=peer, **headers))
        assert all(seen[key] == value for key, value in headers.items())


def test_a_bad_trusted_proxy_entry_fails_at_start_up(settings):
    settings.SLUICE = {**settings.SLUICE, "TRUSTED_PROXIES": ["10.0.0.0/8", "not-an-address"]}
    with pytest.raises(ImproperlyConfigured, match="not-an-address"):
        TrustedProxyMiddleware(lambda request: None)
