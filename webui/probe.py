"""The wizard's Test connection: `GET {url}/models` from the server, with the access key, and only to addresses an
administrator allows (docs/web-ui.md).

The management plane may sit next to cloud metadata services and other internal endpoints, so the probe refuses,
unless a setting allows them: link-local addresses (169.254.0.0/16 and fe80::/10, where cloud metadata services
answer, 169.254.169.254 among them), other known metadata addresses, unspecified addresses, and loopback.
Loopback is allowed by `SLUICE["PROBE_ALLOW_LOOPBACK"]` (`make run` and the tests turn it on for the local mock
model). Private networks (a model server on the LAN) are allowed. Redirects are not followed.
"""

import ipaddress
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from django.conf import settings

__all__ = ("ProbeRefused", "ProbeResult", "check_target", "probe_url")

TIMEOUT_SECONDS = 5
MAX_MODELS_SHOWN = 50
# Metadata services that do not live in a link-local range (AWS over IPv6, Alibaba Cloud).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in ("fd00:ec2::254", "100.100.100.200"))


class ProbeRefused(Exception):
    """The URL may not be probed (scheme or address)."""


@dataclass
class ProbeResult:
    ok: bool
    message: str
    models: list[str] = field(default_factory=list)


def _options() -> dict:
    return settings.SLUICE


def check_target(url: str) -> None:
    """Raise ProbeRefused unless `url` is http(s) and every address its host resolves to may be probed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProbeRefused("Only http:// and https:// URLs can be tested.")
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise ProbeRefused(f"Cannot resolve {parts.hostname}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        _check_address(address)


def _check_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    options = _options()
    if address.is_unspecified or address.is_multicast:
        raise ProbeRefused(f"Address {address} cannot be tested.")
    if (address.is_link_local or address in METADATA_ADDRESSES) and not options.get("PROBE_ALLOW_LINK_LOCAL"):
        raise ProbeRefused(
            f"Address {address} is link-local or a cloud metadata address; an administrator can allow it with "
            "SLUICE_PROBE_ALLOW_LINK_LOCAL=1."
        )
    if address.is_loopback and not options.get("PROBE_ALLOW_LOOPBACK"):
        raise ProbeRefused(
            f"Address {address} is loopback; an administrator can allow it with SLUICE_PROBE_ALLOW_LOOPBACK=1."
        )


def probe_url(url: str, api_type: str, header_name: str = "", header_value: str = "") -> ProbeResult:
    """OpenAI-compatible: `GET {url}/models` and the model ids it lists; passthrough: `GET {url}` and its status.
    Either way the exact error when it fails."""
    openai = api_type == "openai"
    target = url.rstrip("/") + "/models" if openai else url
    try:
        check_target(target)
    except ProbeRefused as exc:
        return ProbeResult(False, str(exc))
    headers = {header_name: header_value} if header_name and header_value else {}
    try:
        response = requests.get(target, headers=headers, timeout=TIMEOUT_SECONDS, allow_redirects=False)
    except requests.RequestException as exc:
        return ProbeResult(False, f"GET {target} failed: {exc}")
    if not openai:
        message = f"GET {target} answered {response.status_code}."
        if response.status_code < 500:
            # a 4xx is normal here: many APIs have nothing at their base URL, or want a key the probe lacks
            message += " The server is reachable (a base URL often has no page of its own, so a 4xx is fine here)."
        return ProbeResult(response.status_code < 500, message)
    if response.status_code != 200:
        return ProbeResult(False, f"GET {target} answered {response.status_code}: {response.text[:500]}")
    try:
        models = [str(item["id"]) for item in response.json()["data"]]
    except (ValueError, KeyError, TypeError):
        return ProbeResult(False, f"GET {target} answered 200, but not with a model list: {response.text[:500]}")
    return ProbeResult(True, f"GET {target} answered 200 with {len(models)} model(s).", models[:MAX_MODELS_SHOWN])
