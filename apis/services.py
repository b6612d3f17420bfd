"""The Language Model API import wizard (apim-spec §1): one transaction creating the API, its operations, a
backend, optionally a secret named value holding the access key, product links and the API policy."""

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils.text import slugify
from rest_framework.exceptions import ValidationError

from backends.models import Backend, BackendType
from gateway_admin.exceptions import Conflict
from gateway_admin.safety import ConfigRejected, field_errors, validated_write
from named_values.models import NamedValue
from named_values.services import create_named_value
from policies.choices import PolicyScopeChoices
from policies.models import Policy
from policies.services import set_policy
from subscriptions.models import Product
from subscriptions.services import check_open_products

from .models import API, Operation
from .wizard import ImportContext, build_api_policy, operation_specs

__all__ = ("MAX_IMPORT_NAME_LENGTH", "ImportResult", "derive_api_name", "import_context", "import_language_model")

BACKEND_SUFFIX = "-backend"
KEY_SUFFIX = "-key"
# The backend name `<name>-backend` must fit the 80 characters of a resource name.
# A pool's members are `<name>-backend-<n>` (n up to 30): a name that long is refused for `backends` imports.
MAX_IMPORT_NAME_LENGTH = 80 - len(BACKEND_SUFFIX)
# The circuit breaker of each backend of a pool the wizard creates: the Azure OpenAI rule of APIM's labs (one 429
# trips the deployment for a minute, or for as long as its Retry-After says).
DEFAULT_POOL_BREAKER = {
    "rules": [
        {
            "name": "trip-on-429",
            "failureCondition": {"count": 1, "interval": "PT1M", "statusCodeRanges": [{"min": 429, "max": 429}]},
            "tripDuration": "PT1M",
            "acceptRetryAfter": True,
        }
    ]
}


@dataclass
class ImportResult:
    api: API
    operations: list[Operation]
    backend: Backend
    named_value: NamedValue | None
    policy: Policy
    products: list[Product] = field(default_factory=list)
    members: list[Backend] = field(default_factory=list)  # the pool's backends when the import gave `backends`


def derive_api_name(display_name: str) -> str:
    name = slugify(display_name)[:MAX_IMPORT_NAME_LENGTH].strip("-_")
    if not name:
        raise ValidationError({"name": ["Cannot derive a name from display_name; give one."]})
    return name


def import_context(data: Mapping[str, Any]) -> ImportContext:
    """The names of what an import of `data` creates (the web UI's review step shows them before it does)."""
    name = data.get("name") or derive_api_name(data["display_name"])
    return ImportContext(
        api_name=name,
        api_type=data["type"],
        backend_name=f"{name}{BACKEND_SUFFIX}",
        named_value_name=f"{name}{KEY_SUFFIX}" if data.get("access_key") else None,
        pool_size=len(data.get("backends") or ()),
    )


def import_language_model(data: Mapping[str, Any]) -> ImportResult:
    """Create everything the wizard produces, or nothing (see `_import`). A result the gateways could not load is
    refused with a ValidationError naming the wizard's field (`url`, `access_key`, ...)."""
    try:
        with validated_write():
            return _import(data)
    except ConfigRejected as exc:
        raise ValidationError(_wizard_errors(exc, data)) from None


def _wizard_errors(exc: ConfigRejected, data: Mapping[str, Any]) -> dict[str, list[str]]:
    name = data.get("name") or derive_api_name(data["display_name"])
    fields = {
        ("backend", f"{name}{BACKEND_SUFFIX}", "url"): "url",
        ("backend", f"{name}{BACKEND_SUFFIX}", "credentials_header"): "access_key",
        ("named_value", f"{name}{KEY_SUFFIX}", None): "access_key",
        ("api", name, "service_url"): "url",
        ("api", name, "path"): "path",
    }
    errors: dict[str, list[str]] = {}
    for problem in exc.problems:
        item_errors = field_errors(ConfigRejected([problem]), kind=problem.kind, name=problem.name)
        for item_field, messages in item_errors.items():
            key = fields.get((problem.kind, problem.name, None if item_field == "detail" else item_field), "detail")
            errors.setdefault(key, []).extend(messages)
    return errors


@transaction.atomic
def _import(data: Mapping[str, Any]) -> ImportResult:
    """Create everything the wizard produces, or nothing.

    `data` is the validated wizard input (see `ImportLanguageModelSerializer`): `display_name`, `url`, `path`,
    `type` ("openai" | "passthrough"), and optionally `name` (default: slug of display_name), `description`,
    `products` (Product objects or names), `access_key` ({"header_name", "value"}), `subscription_required`
    (default true), `operations` (extra OpenAI operations such as "POST /embeddings") and the optional blocks of
    the policy contributors. Duplicate names or paths raise `Conflict` (409), unknown products `ValidationError`.
    """
    context = import_context(data)
    name, access_key = context.api_name, data.get("access_key")
    _check_conflicts(context, data["path"])
    products = _resolve_products(data.get("products") or ())
    check_open_products(products)

    named_value = None
    members: list[Backend] = []
    if data.get("backends"):
        backend, members = _create_pool(context, data)
    else:
        credentials = {}
        if access_key:
            named_value = create_named_value(
                name=context.named_value_name, value=access_key["value"], secret=True, tags=["llm", name]
            )
            credentials = {access_key["header_name"]: f"{{{{{named_value.name}}}}}"}
        backend = Backend(
            name=context.backend_name,
            url=data["url"],
            description=f"Backend of the {data['display_name']} API.",
            credentials_header=credentials,
        )
        backend.full_clean()
        backend.save()
    api = API(
        name=name,
        display_name=data["display_name"],
        description=data.get("description") or "",
        path=data["path"],
        service_url=data["url"] if members == [] else members[0].url,
        api_type=data["type"],
        subscription_required=data.get("subscription_required", True),
    )
    api.full_clean()
    api.save()
    operations = [
        Operation.objects.create(
            api=api, name=spec.name, display_name=spec.display_name, method=spec.method, url_template=spec.url_template
        )
        for spec in operation_specs(data["type"], data.get("operations") or ())
    ]
    for product in products:
        product.apis.add(api)
    policy, _ = set_policy(PolicyScopeChoices.API, api, build_api_policy(data, context, prepare=True))
    return ImportResult(api, operations, backend, named_value, policy, products, members)


def member_names(context: ImportContext, index: int) -> tuple[str, str]:
    """The backend and named value names of the pool member ``index`` (1-based)."""
    return f"{context.backend_name}-{index}", f"{context.api_name}{KEY_SUFFIX}-{index}"


def _create_pool(context: ImportContext, data: Mapping[str, Any]) -> tuple[Backend, list[Backend]]:
    """One backend per entry of ``data["backends"]`` (each with its key and the 429 circuit breaker), and the pool."""
    members = []
    for index, entry in enumerate(data["backends"], 1):
        backend_name, key_name = member_names(context, index)
        credentials = {}
        if entry.get("access_key"):
            key = entry["access_key"]
            create_named_value(name=key_name, value=key["value"], secret=True, tags=["llm", context.api_name])
            credentials = {key["header_name"]: f"{{{{{key_name}}}}}"}
        member = Backend(
            name=backend_name,
            url=entry["url"],
            description=f"Deployment {index} of the {data['display_name']} API.",
            credentials_header=credentials,
            circuit_breaker=copy.deepcopy(DEFAULT_POOL_BREAKER),
        )
        member.full_clean()
        member.save()
        members.append(member)
    services = [
        {"backend": member.name, "priority": entry["priority"], "weight": entry["weight"]}
        for member, entry in zip(members, data["backends"], strict=True)
    ]
    pool = Backend(
        name=context.backend_name,
        type=BackendType.POOL,
        url="",
        description=f"Load-balanced pool of the {data['display_name']} API.",
        pool={"services": services},
    )
    pool.full_clean()
    pool.save()
    return pool, members


def _check_conflicts(context: ImportContext, path: str) -> None:
    errors = {}
    if API.objects.filter(name=context.api_name).exists():
        errors.setdefault("name", []).append(f"An API named '{context.api_name}' already exists.")
    backend_names = [context.backend_name] + [member_names(context, i)[0] for i in range(1, context.pool_size + 1)]
    for backend_name in Backend.objects.filter(name__in=backend_names).values_list("name", flat=True):
        errors.setdefault("name", []).append(f"A backend named '{backend_name}' already exists.")
    if context.pool_size and len(backend_names[-1]) > 80:
        errors.setdefault("name", []).append(f"'{backend_names[-1]}' would be longer than 80 characters.")
    if context.named_value_name and NamedValue.objects.filter(name=context.named_value_name).exists():
        errors.setdefault("name", []).append(f"A named value named '{context.named_value_name}' already exists.")
    if API.objects.filter(path=path).exists():
        errors["path"] = [f"An API with path '{path}' already exists."]
    if errors:
        raise Conflict(errors)


def _resolve_products(products) -> list[Product]:
    names = [p.name if isinstance(p, Product) else p for p in products]
    found = {p.name: p for p in Product.objects.filter(name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise ValidationError({"products": [f"Product '{n}' does not exist." for n in missing]})
    return [found[n] for n in dict.fromkeys(names)]
