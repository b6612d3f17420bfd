"""A large configuration for the page-speed check of issue #10 (1,000 APIs and 10,000 subscriptions), and the pages
it is measured on. Used by `tests/webui/test_scale.py` (query counts) and `bench/webui_pages.py` (timings).

Rows are written with `bulk_create` (a few seconds, not minutes): no services and no signals run, so the
configuration revision does not move; keys and secret values are still encrypted as the services store them.
"""

import secrets
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from apis.models import API, Operation
from backends.models import Backend
from gateway.contract import hash_key
from named_values import crypto
from named_values.models import NamedValue
from subscriptions.models import Product, Subscription
from usage.models import UsageRollup

__all__ = ("PAGES", "page_urls", "seed")

BATCH = 1000


def seed(
    apis: int = 1000, subscriptions: int = 10_000, products: int = 20, operations_per_api: int = 3, prefix: str = ""
) -> None:
    """APIs with operations and a backend each, a named value per API (every other one secret), products of APIs,
    subscriptions scoped to all APIs, one API or one product in turn, and one usage row per subscription over the
    last day (one in ten an error). `prefix` starts every name, to seed twice in one database."""
    api_rows = API.objects.bulk_create(
        [
            API(name=f"{prefix}api-{n:05}", display_name=f"API {n}", path=f"llm/{prefix}api-{n:05}", api_type="openai")
            for n in range(apis)
        ],
        batch_size=BATCH,
    )
    api_rows = list(API.objects.filter(name__startswith=prefix).order_by("name"))  # with their ids on every database
    Operation.objects.bulk_create(
        [
            Operation(api=api, name=f"op-{k}", display_name=f"Operation {k}", method="POST", url_template=f"/op-{k}")
            for api in api_rows
            for k in range(operations_per_api)
        ],
        batch_size=BATCH,
    )
    Backend.objects.bulk_create(
        [Backend(name=f"{prefix}backend-{n:05}", url=f"https://backend-{n:05}.example.com/v1") for n in range(apis)],
        batch_size=BATCH,
    )
    NamedValue.objects.bulk_create(
        [
            NamedValue(name=f"{prefix}key-{n:05}", secret=True, encrypted_value=crypto.encrypt(f"sk-{n}"), tags=["llm"])
            if n % 2
            else NamedValue(name=f"{prefix}key-{n:05}", plain_value=f"value-{n}", tags=["plain"])
            for n in range(apis)
        ],
        batch_size=BATCH,
    )
    Product.objects.bulk_create(
        [
            Product(name=f"{prefix}product-{n:03}", display_name=f"Product {n}", state="published")
            for n in range(products)
        ]
    )
    product_rows = list(Product.objects.filter(name__startswith=prefix).order_by("name"))
    Through = Product.apis.through
    Through.objects.bulk_create(
        [Through(product=product_rows[n % products], api=api) for n, api in enumerate(api_rows)], batch_size=BATCH
    )
    rows = []
    for n in range(subscriptions):
        primary, secondary = secrets.token_hex(16), secrets.token_hex(16)
        rows.append(
            Subscription(
                name=f"{prefix}sub-{n:05}",
                display_name=f"Client {n}",
                api=api_rows[n % apis] if n % 3 == 1 else None,
                product=product_rows[n % products] if n % 3 == 2 else None,
                encrypted_primary_key=crypto.encrypt(primary),
                encrypted_secondary_key=crypto.encrypt(secondary),
                primary_key_hash=hash_key(primary),
                secondary_key_hash=hash_key(secondary),
            )
        )
    Subscription.objects.bulk_create(rows, batch_size=BATCH)
    now = timezone.now().replace(second=0, microsecond=0)
    UsageRollup.objects.bulk_create(
        [
            UsageRollup(
                minute=now - timedelta(minutes=n % 1440),
                api=api_rows[n % apis].name,
                operation="op-0",
                subscription=f"{prefix}sub-{n:05}",
                status=500 if n % 10 == 0 else 200,
                cache_hit=False,
                requests=1 + n % 5,
                prompt_tokens=100,
                completion_tokens=50,
                total_tokens=150,
                latency_ms_sum=120.0,
                latency_ms_max=120.0,
            )
            for n in range(subscriptions)
        ],
        batch_size=BATCH,
    )


# (label, URL name, kwargs, query string) of every page measured; "{api}", "{product}", ... are filled in by page_urls
PAGES: tuple[tuple[str, str, dict, str], ...] = (
    ("home", "webui:index", {}, ""),
    ("APIs list", "webui:object-list", {"kind": "apis"}, ""),
    ("APIs list, search", "webui:object-list", {"kind": "apis"}, "q=api-0000"),
    ("APIs list, last page", "webui:object-list", {"kind": "apis"}, "page=100000"),
    ("operations list", "webui:object-list", {"kind": "operations"}, ""),
    ("operations list, filtered", "webui:object-list", {"kind": "operations"}, "method=POST&page=50"),
    ("backends list", "webui:object-list", {"kind": "backends"}, ""),
    ("named values list", "webui:object-list", {"kind": "named-values"}, ""),
    ("named values list, secrets", "webui:object-list", {"kind": "named-values"}, "secret=true"),
    ("products list", "webui:object-list", {"kind": "products"}, ""),
    ("subscriptions list", "webui:object-list", {"kind": "subscriptions"}, ""),
    ("subscriptions list, search", "webui:object-list", {"kind": "subscriptions"}, "q=client+1"),
    ("subscriptions list, by product", "webui:object-list", {"kind": "subscriptions"}, "product={product}"),
    ("subscriptions list, last page", "webui:object-list", {"kind": "subscriptions"}, "page=100000"),
    ("API detail", "webui:object-detail", {"kind": "apis", "name": "{api}"}, ""),
    ("API edit", "webui:object-edit", {"kind": "apis", "name": "{api}"}, ""),
    ("operation detail", "webui:object-detail", {"kind": "operations", "api": "{api}", "name": "op-0"}, ""),
    ("backend detail", "webui:object-detail", {"kind": "backends", "name": "{backend}"}, ""),
    ("named value detail", "webui:object-detail", {"kind": "named-values", "name": "{named_value}"}, ""),
    ("product detail", "webui:object-detail", {"kind": "products", "name": "{product}"}, ""),
    ("product edit", "webui:object-edit", {"kind": "products", "name": "{product}"}, ""),
    ("subscription detail", "webui:object-detail", {"kind": "subscriptions", "name": "{subscription}"}, ""),
    ("subscription edit", "webui:object-edit", {"kind": "subscriptions", "name": "{subscription}"}, ""),
    ("new product", "webui:object-create", {"kind": "products"}, ""),
    ("new subscription", "webui:object-create", {"kind": "subscriptions"}, ""),
    ("new named value", "webui:object-create", {"kind": "named-values"}, ""),
    ("new backend", "webui:object-create", {"kind": "backends"}, ""),
    ("new operation", "webui:object-create", {"kind": "operations"}, "api={api}"),
    ("import wizard", "webui:import", {}, ""),
    ("test console", "webui:console", {"name": "{api}"}, ""),
    ("policy editor (API)", "webui:policy", {"scope": "api", "name": "{api}"}, ""),
    ("usage dashboard", "webui:usage", {}, ""),
)


def page_urls() -> list[tuple[str, str]]:
    """(label, URL) of every page in PAGES, for the first objects in the database (which must hold one of each)."""
    first = {
        "api": API.objects.order_by("name").values_list("name", flat=True).first(),
        "backend": Backend.objects.order_by("name").values_list("name", flat=True).first(),
        "named_value": NamedValue.objects.filter(secret=True).order_by("name").values_list("name", flat=True).first(),
        "product": Product.objects.order_by("name").values_list("name", flat=True).first(),
        "subscription": Subscription.objects.exclude(name="master")
        .order_by("name")
        .values_list("name", flat=True)
        .first(),
    }
    urls = []
    for label, url_name, kwargs, query in PAGES:
        url = reverse(url_name, kwargs={key: value.format(**first) for key, value in kwargs.items()})
        query = query.format(**first)
        urls.append((label, f"{url}?{query}" if query else url))
    return urls
