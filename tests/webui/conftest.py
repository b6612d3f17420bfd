"""Fixtures of the web UI tests: users in the shipped groups, logged-in Django test clients."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from gateway_admin.groups import OPERATORS, READERS
from tests.fixtures_procs import mock_llm, process_factory  # noqa: F401  (fixtures)


def _member(django_user_model, name: str, group: str):
    user = django_user_model.objects.create_user(name, password=f"{name}-password")
    user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def operator(db, django_user_model):
    return _member(django_user_model, "olivia", OPERATORS)


@pytest.fixture
def reader(db, django_user_model):
    return _member(django_user_model, "reggie", READERS)


@pytest.fixture
def operator_client(operator) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def reader_client(reader) -> Client:
    client = Client()
    client.force_login(reader)
    return client
