"""Shared fixtures. Sub-folders (management/, gateway/, e2e/) add their own conftest.py."""

import pytest
from rest_framework.test import APIClient

from tests.clients import rest_client


@pytest.fixture
def api_client(admin_user) -> APIClient:
    """An authenticated administrator sending JSON."""
    return rest_client(admin_user)


@pytest.fixture
def anon_client(db) -> APIClient:
    return rest_client()


@pytest.fixture
def gateway_client(db, settings) -> APIClient:
    """The gateway's own credentials (``Authorization: Gateway <token>``)."""
    return rest_client(HTTP_AUTHORIZATION=f"Gateway {settings.SLUICE['GATEWAY_TOKEN']}")
