"""Fixtures for the management plane (Django + DRF) tests; the shared REST clients are in tests/conftest.py."""

import pytest
from rest_framework.test import APIClient

from tests.clients import rest_client


@pytest.fixture
def staff_less_client(django_user_model) -> APIClient:
    user = django_user_model.objects.create_user("viewer", password="viewer-password")
    return rest_client(user)
