"""REST clients for the management-plane tests (management/ and usage/)."""

from rest_framework.test import APIClient


def rest_client(user=None, **headers) -> APIClient:
    """A DRF test client sending JSON, authenticated as ``user`` when one is given."""
    client = APIClient(**headers)
    client.default_format = "json"
    if user is not None:
        client.force_authenticate(user)
    return client
