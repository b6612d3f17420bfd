"""Forwarding headers are believed only when the request comes from a trusted reverse proxy."""

import ipaddress
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

__all__ = ("TrustedProxyMiddleware", "trusted_networks")

# META keys a client could use to pass for the proxy: X-Forwarded-Proto (SECURE_PROXY_SSL_HEADER), -Host
# (USE_X_FORWARDED_HOST), -Port, -For, and the standard Forwarded header.
FORWARDING_PREFIXES = ("HTTP_X_FORWARDED_", "HTTP_FORWARDED")
# The default of SLUICE_TRUSTED_PROXIES (gateway_admin.settings.base), for a SLUICE setting that lacks the key.
DEFAULT_TRUSTED_PROXIES = ("127.0.0.1/32", "::1/128")
ERR_BAD_PROXY = "SLUICE_TRUSTED_PROXIES: {!r} is not an IP address or network ({})."


@cache
def trusted_networks(entries: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as error:
            raise ImproperlyConfigured(ERR_BAD_PROXY.format(entry, error)) from None
    return tuple(networks)


def configured_networks():
    return trusted_networks(tuple(settings.SLUICE.get("TRUSTED_PROXIES", DEFAULT_TRUSTED_PROXIES)))


class TrustedProxyMiddleware:
    """Drop the forwarding headers of any request whose peer is not in `SLUICE["TRUSTED_PROXIES"]`.

    Django believes `X-Forwarded-Proto` as soon as SECURE_PROXY_SSL_HEADER is set, whoever sent it. Behind a TLS
    proxy that is the proxy, but a client reaching the management plane directly could claim HTTPS (and so pass
    CSRF's origin check for an https Origin, or get secure-only cookies over plain HTTP). This runs first, so no
    later middleware or view sees a forwarding header that a trusted proxy did not write.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        configured_networks()  # a bad entry fails at start-up

    def __call__(self, request):
        if not self.is_trusted(request.META.get("REMOTE_ADDR", "")):
            for key in [key for key in request.META if key.startswith(FORWARDING_PREFIXES)]:
                del request.META[key]
        return self.get_response(request)

    @staticmethod
    def is_trusted(peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in configured_networks())
