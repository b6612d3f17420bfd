"""Issue #10's page-speed check, the part a test can hold: with 1,000 APIs and 10,000 subscriptions (and their
operations, backends, named values, products and usage rows, `tests/webui/scale.py`) every page answers 200 with
the same number of queries as with a couple of objects of each kind, so no page does a query per row. The timings
are taken by `bench/webui_pages.py`, not asserted here (docs/web-ui.md)."""

import pytest

from apis.models import API
from subscriptions.models import Subscription

from .conftest import page_queries
from .scale import PAGES, page_urls, seed

pytestmark = pytest.mark.django_db


def test_every_page_costs_the_same_queries_with_1000_apis_and_10000_subscriptions(operator_client):
    seed(apis=2, subscriptions=3, products=1, operations_per_api=1, prefix="a-")  # each kind, scope, secret or not
    small = {label: page_queries(operator_client, url) for label, url in page_urls()}
    seed(apis=1000, subscriptions=10_000, prefix="b-")
    assert API.objects.count() == 1002 and Subscription.objects.filter(name__startswith="b-").count() == 10_000
    large = {label: page_queries(operator_client, url) for label, url in page_urls()}
    assert len(large) == len(PAGES)
    assert large == small
