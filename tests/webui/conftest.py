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


@pytest.fixture
def gateway_for(process_factory, tmp_path, settings):  # noqa: F811
    """Start a real gateway (``python -m gateway``) serving the current database's snapshot, and point the test
    console at it. ``management_url``: where it polls and reports (default: nowhere; it serves the snapshot)."""
    from gateway_admin.snapshot import build_snapshot
    from tests.gateway.gateway_proc import start_gateway

    def start(management_url: str | None = None):
        gateway = start_gateway(process_factory, tmp_path, build_snapshot(), management_url)
        settings.SLUICE = {**settings.SLUICE, "GATEWAY_URL": f"http://127.0.0.1:{gateway.port}"}
        return gateway

    return start


def import_mock_api(mock, name: str = "chat", path: str = "chat/v1"):
    """An OpenAI-compatible API on the real mock model, through the import service, and the all-access `master`
    subscription (a data migration creates it; a transactional test before this one may have flushed it)."""
    from apis.services import import_language_model
    from subscriptions.models import Subscription
    from subscriptions.services import create_subscription, parse_scope

    if not Subscription.objects.filter(name="master").exists():
        create_subscription(name="master", scope=parse_scope("/apis"), display_name="Built-in all-access subscription")
    return import_language_model(
        {"display_name": "Chat", "name": name, "url": mock.base_url, "path": path, "type": "openai",
         "subscription_required": True}
    )  # fmt: skip


def page_queries(client, url: str) -> int:
    """The number of database queries of one GET (which must answer 200)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        assert client.get(url).status_code == 200
    return len(captured)
