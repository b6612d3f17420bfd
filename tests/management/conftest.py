"""Fixtures for the management plane (Django + DRF) tests."""

import pytest
from rest_framework.test import APIClient


def _client(user=None, **headers) -> APIClient:
    client = APIClient(**headers)
    client.default_format = "json"
    if user is not None:
        client.force_authenticate(user)
    return client


@pytest.fixture
def api_client(admin_user) -> APIClient:
    """An authenticated administrator sending JSON."""
    return _client(admin_user)


@pytest.fixture
def anon_client(db) -> APIClient:
    return _client()


@pytest.fixture
def staff_less_client(django_user_model) -> APIClient:
    user = django_user_model.objects.create_user("viewer", password="viewer-password")
    return _client(user)


@pytest.fixture
def gateway_client(db, settings) -> APIClient:
    return _client(HTTP_AUTHORIZATION=f"Gateway {settings.SLUICE['GATEWAY_TOKEN']}")
