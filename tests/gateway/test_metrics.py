"""gateway.metrics: names, bounded label sets with an overflow series, token families, the text exposition."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.metrics import (
    CONTENT_TYPE,
    DURATION_BUCKETS,
    MAX_LABEL_VALUE,
    OVERFLOW_VALUE,
    Metrics,
    _InProcessCells,
    label_name,
    metric_prefix,
)

from .exposition import families, value


def scrape(metrics: Metrics) -> dict[str, list]:
    """family name -> samples, parsed by prometheus_client's own text parser."""
    return families(metrics.exposition().decode())


@pytest.mark.parametrize(
    ("namespace", "prefix"),
    [
        ("API Management", "api_management"),
        ("MyLLM", "myllm"),
        ("my-llm.metrics", "my_llm_metrics"),
        ("  spaced  out ", "spaced_out"),
        ("__x__y", "x_y"),
        ("2024 budget", "_2024_budget"),
        ("ns:sub", "ns_sub"),
        ("Ünïcode ok", "n_code_ok"),
    ],
)
def test_metric_prefix(namespace, prefix):
    assert metric_prefix(namespace) == prefix


@pytest.mark.parametrize("namespace", ["", "   ", "---", "::"])
def test_metric_prefix_refuses_names_without_letters(namespace):
    with pytest.raises(ValueError, match="no letter or digit"):
        metric_prefix(namespace)


@pytest.mark.parametrize(
    ("dimension", "label"),
    [("API ID", "api_id"), ("Client IP", "client_ip"), ("Subscription ID", "subscription_id"), ("1st", "_1st")],
)
def test_label_name(dimension, label):
    assert label_name(dimension) == label


def test_own_registry_and_content_type():
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    assert metrics.registry is registry
    assert CONTENT_TYPE == b"text/plain; version=0.0.4; charset=utf-8"
    other = Metrics()  # two apps in one process do not collide
    assert other.registry is not registry


def test_requests_and_duration_histogram():
    metrics = Metrics()
    metrics.record_request("chat", "chat-completions", 200, 0.004)
    metrics.record_request("chat", "chat-completions", 200, 0.2)
    metrics.record_request("chat", "chat-completions", 429, 0.001)
    families = scrape(metrics)
    requests = families["sluice_requests"]
    assert value(requests, "sluice_requests_total", api="chat", operation="chat-completions", code="200") == 2
    assert value(requests, "sluice_requests_total", api="chat", operation="chat-completions", code="429") == 1
    duration = families["sluice_request_duration_seconds"]
    labels = {"api": "chat", "operation": "chat-completions"}
    assert value(duration, "sluice_request_duration_seconds_count", **labels) == 3
    assert value(duration, "sluice_request_duration_seconds_sum", **labels) == pytest.approx(0.205)
    buckets = {s.labels["le"]: s.value for s in duration if s.name.endswith("_bucket")}
    assert list(buckets) == [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
    assert buckets["0.001"] == 1 and buckets["0.005"] == 2 and buckets["0.25"] == 3 and buckets["+Inf"] == 3
    assert not any(name.endswith("_created") for name in families)


def test_upstream_errors():
    metrics = Metrics()
    metrics.record_upstream_error("chat", "llm-backend", "Timeout")
    samples = scrape(metrics)["sluice_upstream_errors"]
    assert value(samples, "sluice_upstream_errors_total", api="chat", backend="llm-backend", reason="Timeout") == 1


def test_cardinality_cap_sends_new_label_sets_to_the_overflow_series():
    metrics = Metrics(max_label_sets=3)
    for i in range(5):
        metrics.record_request(f"api-{i}", "op", 200, 0.01)
    metrics.record_request("api-4", "op", 200, 0.01)  # a refused label set again: overflow, not counted twice
    metrics.record_request("api-0", "op", 200, 0.01)  # an admitted one keeps its series
    assert metrics.requests.label_sets == 3
    families = scrape(metrics)
    requests = families["sluice_requests"]
    own = {s.labels["api"]: s.value for s in requests if s.labels["api"] != OVERFLOW_VALUE}
    assert own == {"api-0": 2, "api-1": 1, "api-2": 1}
    assert (
        value(requests, "sluice_requests_total", api=OVERFLOW_VALUE, operation=OVERFLOW_VALUE, code=OVERFLOW_VALUE) == 3
    )
    dropped = families["sluice_metric_label_sets_dropped"]
    assert value(dropped, "sluice_metric_label_sets_dropped_total", metric="sluice_requests") == 2
    assert value(dropped, "sluice_metric_label_sets_dropped_total", metric="sluice_request_duration_seconds") == 2
    overflow = {"api": OVERFLOW_VALUE, "operation": OVERFLOW_VALUE}
    assert value(families["sluice_request_duration_seconds"], "sluice_request_duration_seconds_count", **overflow) == 3


def test_refused_label_sets_are_remembered_only_up_to_a_bound():
    metrics = Metrics(max_label_sets=2)
    for i in range(20):
        metrics.record_upstream_error(f"api-{i}", "b", "Timeout")
    # 2 own + at most 2 remembered refusals: the cache cannot grow without bound
    assert len(metrics.upstream_errors._children) == 4
    dropped = scrape(metrics)["sluice_metric_label_sets_dropped"]
    assert value(dropped, "sluice_metric_label_sets_dropped_total", metric="sluice_upstream_errors") == 18


def test_children_are_cached():
    metrics = Metrics()
    family = metrics.requests
    assert family.child(("a", "b", "200")) is family.child(("a", "b", "200"))


def test_long_label_values_are_cut():
    metrics = Metrics()
    metrics.record_upstream_error("x" * 1000, "b", "Timeout")
    samples = scrape(metrics)["sluice_upstream_errors"]
    assert samples[0].labels["api"] == "x" * MAX_LABEL_VALUE


def test_token_families_with_the_same_name_and_other_dimensions_are_one_metric():
    metrics = Metrics()
    by_api = metrics.token_family("api_management", ("api_id",))
    assert metrics.token_family("api_management", ("api_id",)) is by_api
    by_api.record(("chat",), 10, 5, 15)
    by_api.record(("chat",), 1, 2, 3)
    metrics.token_family("api_management", ("api_id", "client_ip")).record(("chat", "10.0.0.1"), 7, 0, 7)
    metrics.token_family("team_a", ("subscription_id",)).record(("master",), 1, 1, 2)
    families = scrape(metrics)
    prompt = families["api_management_prompt_tokens"]
    assert value(prompt, "api_management_prompt_tokens_total", api_id="chat") == 11
    assert value(prompt, "api_management_prompt_tokens_total", api_id="chat", client_ip="10.0.0.1") == 7
    assert (
        value(families["api_management_completion_tokens"], "api_management_completion_tokens_total", api_id="chat")
        == 7
    )
    assert value(families["api_management_total_tokens"], "api_management_total_tokens_total", api_id="chat") == 18
    assert value(families["team_a_total_tokens"], "team_a_total_tokens_total", subscription_id="master") == 2


def test_token_family_cap_is_shared_by_its_three_counters():
    metrics = Metrics(max_label_sets=1)
    family = metrics.token_family("ns", ("api_id",))
    family.record(("a",), 1, 1, 2)
    family.record(("b",), 1, 1, 2)
    family.record(("c",), 1, 1, 2)
    families = scrape(metrics)
    for kind, expected in (("prompt", 2), ("completion", 2), ("total", 4)):
        samples = families[f"ns_{kind}_tokens"]
        assert value(samples, f"ns_{kind}_tokens_total", api_id="a") == expected / 2
        assert value(samples, f"ns_{kind}_tokens_total", api_id=OVERFLOW_VALUE) == expected
    dropped = families["sluice_metric_label_sets_dropped"]
    assert value(dropped, "sluice_metric_label_sets_dropped_total", metric="ns_tokens") == 2


def test_exposition_escapes_label_values():
    metrics = Metrics()
    metrics.token_family("ns", ("client",)).record(('a "quoted"\\ value\nwith newline',), 1, 0, 1)
    samples = scrape(metrics)["ns_prompt_tokens"]
    assert samples[0].labels == {"client": 'a "quoted"\\ value\nwith newline'}


async def test_exposition_async_matches():
    metrics = Metrics()
    metrics.record_request("a", "b", 200, 0.1)
    assert await metrics.exposition_async() == metrics.exposition()


def test_max_label_sets_must_be_positive():
    with pytest.raises(ValueError):
        Metrics(max_label_sets=0)


def test_record_request_exposes_what_prometheus_client_would():
    """record_request adds to the children's values itself (no inc()/observe() calls): same exposition as the
    library's own calls, bucket edges included (a value on a bound counts in that bucket)."""
    durations = [0.0, DURATION_BUCKETS[0], DURATION_BUCKETS[3], DURATION_BUCKETS[3] * 1.01, DURATION_BUCKETS[-1], 1e6]
    fast, reference = Metrics(), Metrics()
    for seconds in durations:
        fast.record_request("api", "op", 200, seconds)
        reference.requests.child(("api", "op", "200")).inc()
        reference.duration.child(("api", "op")).observe(seconds)
    fast.record_request("api", "op", 429, 0.002)
    reference.requests.child(("api", "op", "429")).inc()
    reference.duration.child(("api", "op")).observe(0.002)
    assert fast.exposition() == reference.exposition()


def test_token_counts_are_never_negative():
    family = Metrics().token_family("ns", ("api_id",))
    with pytest.raises(ValueError, match="negative"):
        family.record(("chat",), -1, 0, 0)


def test_in_process_metrics_add_to_the_values_without_their_locks():
    metrics = Metrics()
    metrics.record_request("api", "op", 200, 0.003)
    metrics.record_request("api", "op", 200, 0.003)
    (cells,) = metrics._request_cells.values()
    assert type(cells) is _InProcessCells
    assert cells.count.get() == 2.0
    assert cells.sum.get() == pytest.approx(0.006)


def test_in_process_token_counts_add_to_the_values_without_their_locks():
    metrics = Metrics(max_label_sets=1)
    family = metrics.token_family("ns", ("api_id",))
    family.record(("a",), 3, 4, 7)
    family.record(("a",), 0, 2, 2)
    family.record(("b",), 1, 0, 1)  # over the cap: the overflow series
    assert family._plain
    prompt, completion, total = family._children[("a",)]
    assert (prompt.get(), completion.get(), total.get()) == (3.0, 6.0, 9.0)
    assert [v.get() for v in family._children[("b",)]] == [1.0, 0.0, 1.0]
