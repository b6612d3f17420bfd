"""Authentication of gateways pulling the configuration snapshot."""

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from rest_framework import authentication, exceptions, permissions, status

__all__ = ("GATEWAY_AUTH", "GatewayTokenAuthentication", "IsGateway")

GATEWAY_AUTH = "gateway"
ERR_NOT_CONFIGURED = "SLUICE_GATEWAY_TOKEN is not configured on the management plane."
ERR_BAD_TOKEN = "Invalid or missing gateway token."  # noqa: S105  (a message, not a secret)


class GatewayNotConfigured(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = ERR_NOT_CONFIGURED
    default_code = "gateway_token_not_configured"


class GatewayTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Gateway <token>`, compared in constant time with settings.SLUICE["GATEWAY_TOKEN"].

    On success `request.auth` is `GATEWAY_AUTH` and the user is anonymous: a gateway is not a Django user.
    """

    keyword = "Gateway"

    def authenticate(self, request):
        expected = settings.SLUICE.get("GATEWAY_TOKEN") or ""
        if not expected:
            raise GatewayNotConfigured()
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, token = header.partition(" ")
        if keyword != self.keyword or not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise exceptions.AuthenticationFailed(ERR_BAD_TOKEN)
        return AnonymousUser(), GATEWAY_AUTH

    def authenticate_header(self, request):
        return self.keyword


class IsGateway(permissions.BasePermission):
    def has_permission(self, request, view):
        return request.auth == GATEWAY_AUTH
