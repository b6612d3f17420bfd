"""Regression (#7 item 7): the targets of a ``base-url`` expression are cached per statement, bounded, and the
snapshot loader's own cache of literal URLs does not grow with traffic."""

from __future__ import annotations

from gateway.policy import walk
from gateway.policy.builtin.set_backend_service import _MAX_URL_TARGETS, SetBackendService

from ..helpers import gateway, upstream

POLICY = (
    '<policies><inbound><base/><set-backend-service base-url=\'@("http://127.0.0.1:9/t/" + '
    'context.Request.Headers.GetValueOrDefault("x-target", "none"))\'/></inbound></policies>'
)


def statement(gw) -> SetBackendService:
    pipeline = next(iter(gw.app.snapshot.pipelines[gw.app.snapshot.apis["aoai"].operations[0]].values()))
    return next(step for step in walk(pipeline.inbound) if isinstance(step, SetBackendService))


async def test_base_url_targets_stay_bounded_under_distinct_urls():
    gw = gateway(upstream(), api_policy=POLICY)
    policy = statement(gw)
    loader_size = len(policy.env.url_targets)
    for i in range(3 * _MAX_URL_TARGETS):
        response = await gw.chat(headers=[(b"x-target", str(i).encode())])
        assert response.status == 200
        assert gw.last_call.target.startswith(f"/t/{i}/")
    assert len(policy.env.url_targets) == loader_size  # the per-snapshot loader cache did not grow
    info = policy.url_target.cache_info()
    assert info.currsize == _MAX_URL_TARGETS and info.misses == 3 * _MAX_URL_TARGETS


async def test_repeated_base_url_is_a_cache_hit_and_errors_are_not_cached():
    gw = gateway(upstream(), api_policy=POLICY)
    policy = statement(gw)
    for _ in range(5):
        assert (await gw.chat(headers=[(b"x-target", b"same")])).status == 200
    info = policy.url_target.cache_info()
    assert (info.hits, info.misses, info.currsize) == (4, 1, 1)
    bad = await gw.chat(headers=[(b"x-target", b"a b")])  # a space: not a valid URL path
    assert bad.status == 500
    assert policy.url_target.cache_info().currsize == 1
