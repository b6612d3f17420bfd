"""REST permissions (#7 item 4): model permissions, explicit reveal and policy permissions, the default groups.

The walk enumerates every endpoint from the URL resolver, so an endpoint added later is covered without editing
this file: anonymous users are refused everywhere, Readers may read everything and write or reveal nothing,
Operators may do everything, and the gateway's own endpoints take no user at all.
"""

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, Permission
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from apis.models import API, Operation
from backends.models import Backend
from content_safety.models import Blocklist
from gateway_admin.api.authentication import IsGateway
from gateway_admin.groups import OPERATORS, READERS, SLUICE_APPS
from named_values.models import NamedValue
from policies.choices import PolicyScopeChoices
from policies.services import set_policy
from subscriptions.models import Product, Subscription
from tests.clients import rest_client

from .factories import (
    APIFactory,
    BackendFactory,
    BlocklistFactory,
    NamedValueFactory,
    OperationFactory,
    ProductFactory,
    SubscriptionFactory,
)

pytestmark = pytest.mark.django_db

SAFE = ("GET", "HEAD", "OPTIONS")
DOCUMENT = "<policies><inbound><base /></inbound><backend><base /></backend><outbound><base /></outbound></policies>"
# The object each URL keyword names, by the model of the view.
OBJECT_NAMES = {API: "chat", Operation: "completions", Backend: "llm", NamedValue: "token", Product: "team"}
OBJECT_NAMES[Subscription] = "alice"
OBJECT_NAMES[Blocklist] = "words"


def _patterns(patterns, namespace=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _patterns(entry.url_patterns, entry.namespace or namespace)
        elif isinstance(entry, URLPattern) and namespace == "api":
            yield entry


def _methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)
    if actions is not None:
        methods = set(actions)
    else:
        methods = {m for m in callback.cls.http_method_names if hasattr(callback.cls, m) and m != "head"}
    methods.add("options")
    return sorted(method.upper() for method in methods)


def endpoints():
    """(pattern, method) for every endpoint under /api/, straight from the resolver."""
    return [(p, method) for p in _patterns(get_resolver().url_patterns) for method in _methods(p.callback)]


def url_of(pattern) -> str:
    queryset = getattr(pattern.callback.cls, "queryset", None)
    model = queryset.model if queryset is not None else None
    kwargs = {}
    for keyword in pattern.pattern.regex.groupindex:
        kwargs[keyword] = OBJECT_NAMES[API] if keyword == "api_name" else OBJECT_NAMES[model]
    return reverse(f"api:{pattern.name}", kwargs=kwargs)


ENDPOINTS = endpoints()


@pytest.fixture
def configuration():
    """One object of each kind, named as OBJECT_NAMES says, each owner with a policy document."""
    api = APIFactory(name="chat")
    operation = OperationFactory(api=api, name="completions")
    product = ProductFactory(name="team", apis=[api])
    BackendFactory(name="llm")
    BlocklistFactory(name="words")
    NamedValueFactory(name="token", value="very-secret-value", secret=True)
    SubscriptionFactory(name="alice", api=api)
    for scope, owner in (
        (PolicyScopeChoices.GLOBAL, None),
        (PolicyScopeChoices.PRODUCT, product),
        (PolicyScopeChoices.API, api),
        (PolicyScopeChoices.OPERATION, operation),
    ):
        set_policy(scope, owner, value=DOCUMENT)


def member_of(django_user_model, group_name):
    # Staff, so that before #7 the Readers' writes and reveals succeeded: is_staff alone used to grant everything.
    user = django_user_model.objects.create_user(group_name.lower(), password="pw-not-used", is_staff=True)
    user.groups.add(Group.objects.get(name=group_name))
    return rest_client(user)


def request(client, method, url):
    return getattr(client, method.lower())(url)


def is_gateway_only(pattern) -> bool:
    return IsGateway in getattr(pattern.callback.cls, "permission_classes", ())


def test_the_walk_sees_the_endpoints_we_know_of():
    urls = {(url_of(p), method) for p, method in ENDPOINTS}
    for known in (
        ("/api/subscriptions/alice/list-secrets/", "POST"),
        ("/api/named-values/token/list-value/", "POST"),
        ("/api/apis/chat/operations/completions/policy/", "PUT"),
        ("/api/policies/global/", "PUT"),
        ("/api/apis/import-language-model/", "POST"),
        ("/api/usage/", "GET"),
        ("/api/gateway/snapshot/", "GET"),
    ):
        assert known in urls
    assert len(ENDPOINTS) > 60


@pytest.mark.parametrize(("pattern", "method"), ENDPOINTS, ids=[f"{m} {p.name}" for p, m in ENDPOINTS])
def test_every_endpoint_for_anonymous_reader_and_operator(configuration, django_user_model, pattern, method):
    url = url_of(pattern)
    # Users first: a refusal by a view kept out of ATOMIC_REQUESTS marks the test's own transaction for rollback.
    clients = rest_client(), member_of(django_user_model, READERS), member_of(django_user_model, OPERATORS)
    anonymous, reader, operator = (request(client, method, url) for client in clients)
    assert anonymous.status_code in (401, 403), anonymous.content
    if is_gateway_only(pattern):
        # A gateway is not a Django user: no group opens these.
        assert reader.status_code in (401, 403) and operator.status_code in (401, 403)
        return
    if method in SAFE:
        assert reader.status_code == 200, reader.content
        assert operator.status_code == 200, operator.content
    else:
        assert reader.status_code == 403, reader.content
        assert operator.status_code not in (401, 403), operator.content
        assert operator.status_code < 500, operator.content


def test_reveals_need_their_own_permission(configuration, django_user_model):
    """An operator-like user with every permission but the reveals sees no secret."""
    user = django_user_model.objects.create_user("no-reveal", password="pw-not-used", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label__in=SLUICE_APPS).exclude(codename__startswith="reveal_")
    )
    client = rest_client(user)
    assert client.post("/api/subscriptions/alice/list-secrets/").status_code == 403
    assert client.post("/api/named-values/token/list-value/").status_code == 403
    user.user_permissions.add(*Permission.objects.filter(codename__startswith="reveal_"))
    client = rest_client(django_user_model.objects.get(pk=user.pk))
    assert client.post("/api/subscriptions/alice/list-secrets/").json()["primary_key"]
    assert client.post("/api/named-values/token/list-value/").json() == {"value": "very-secret-value"}


def test_policy_documents_need_policy_permissions_not_the_owners(configuration, django_user_model):
    """Changing an API does not let one rewrite its policy document, and the other way round."""
    user = django_user_model.objects.create_user("api-editor", password="pw-not-used")
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="apis"))
    client = rest_client(user)
    assert client.patch("/api/apis/chat/", {"description": "new"}).status_code == 200
    assert client.get("/api/apis/chat/policy/").status_code == 403
    assert client.put("/api/apis/chat/policy/", {"value": DOCUMENT}).status_code == 403
    assert client.delete("/api/apis/chat/policy/").status_code == 403
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="policies"))
    client = rest_client(django_user_model.objects.get(pk=user.pk))
    assert client.put("/api/apis/chat/policy/", {"value": DOCUMENT}).status_code == 200
    assert client.delete("/api/apis/chat/policy/").status_code == 204


def test_staff_without_permissions_gets_nothing(configuration, django_user_model):
    user = django_user_model.objects.create_user("staff", password="pw-not-used", is_staff=True)
    client = rest_client(user)
    assert client.get("/api/apis/").status_code == 403
    assert client.post("/api/subscriptions/alice/list-secrets/").status_code == 403


def test_operators_hold_every_permission_of_the_sluice_apps():
    """Fails when a model or permission is added without a data migration calling grant_default_permissions."""
    assert set(SLUICE_APPS) == set(settings.LOCAL_APPS)
    every = set(Permission.objects.filter(content_type__app_label__in=settings.LOCAL_APPS))
    assert every
    assert set(Group.objects.get(name=OPERATORS).permissions.all()) == every


def test_readers_hold_view_permissions_only():
    readers = set(Group.objects.get(name=READERS).permissions.values_list("codename", flat=True))
    views = set(
        Permission.objects.filter(content_type__app_label__in=SLUICE_APPS, codename__startswith="view_").values_list(
            "codename", flat=True
        )
    )
    assert readers == views


def test_schema_and_docs_need_only_a_login(django_user_model):
    user = django_user_model.objects.create_user("nobody", password="pw-not-used")
    for url in ("/api/schema/", "/api/docs/"):
        assert rest_client().get(url).status_code in (401, 403)
        assert rest_client(user).get(url).status_code == 200
