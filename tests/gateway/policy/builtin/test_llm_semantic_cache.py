"""``llm-semantic-cache-lookup`` / ``-store``: what is refused when a document loads. Their behaviour runs through a
real gateway process in tests/gateway/test_semantic_cache.py; the stores in tests/gateway/semcache/."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyError, parse_document

LOOKUP = (
    '<llm-semantic-cache-lookup score-threshold="0.05" embeddings-backend-id="emb" '
    'embeddings-backend-auth="system-assigned" {extra}>{children}</llm-semantic-cache-lookup>'
)


def lookup_doc(extra: str = "", children: str = "", name: str = "llm-semantic-cache-lookup") -> str:
    statement = LOOKUP.format(extra=extra, children=children).replace("llm-semantic-cache-lookup", name)
    return f"<policies><inbound>{statement}</inbound></policies>"


def store_doc(attrs: str) -> str:
    return f"<policies><outbound><llm-semantic-cache-store {attrs}/></outbound></policies>"


def test_every_attribute_of_the_apim_statement_loads_under_both_names() -> None:
    children = "<vary-by>@(context.Subscription.Id)</vary-by><vary-by>@(context.Api.Name)</vary-by>"
    extra = 'ignore-system-messages="true" max-message-count="10"'
    for name in ("llm-semantic-cache-lookup", "azure-openai-semantic-cache-lookup"):
        document = parse_document(lookup_doc(extra, children, name), "api")
        step = document.sections["inbound"][0]
        assert step.name == name and step.threshold == 0.05 and step.max_messages == 10 and len(step.vary_by) == 2
    parse_document(store_doc('duration="60" cache-response="true"'), "api")
    parse_document(store_doc('duration="@(60.ToString())"'), "api")
    parse_document(store_doc('duration="60"').replace("llm-", "azure-openai-"), "api")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (lookup_doc().replace('score-threshold="0.05"', 'score-threshold="1.5"'), "'score-threshold' must be a number"),
        (lookup_doc().replace('score-threshold="0.05"', 'score-threshold="x"'), "'score-threshold' must be a number"),
        (lookup_doc().replace('score-threshold="0.05" ', ""), "missing required attribute 'score-threshold'"),
        (
            lookup_doc().replace('embeddings-backend-id="emb" ', ""),
            "missing required attribute 'embeddings-backend-id'",
        ),
        (lookup_doc().replace("system-assigned", "user-assigned"), "'embeddings-backend-auth' must be one of"),
        (lookup_doc('max-message-count="0"'), "'max-message-count' must be a positive integer"),
        (lookup_doc('ignore-system-messages="yes"'), "'ignore-system-messages' must be true, false"),
        (lookup_doc(children="<vary-by a='1'>x</vary-by>"), "<vary-by> takes no attributes"),
        (lookup_doc(children="<other/>"), "<other> is not allowed inside"),
        (store_doc('duration="0"'), "'duration' must be a whole number of seconds"),
        (store_doc('duration="ten"'), "'duration' must be a whole number of seconds"),
        (store_doc(""), "missing required attribute 'duration'"),
        (store_doc('duration="60" cache-response="maybe"'), "'cache-response' must be true, false"),
        (lookup_doc().replace("<inbound>", "<outbound>").replace("</inbound>", "</outbound>"), "not allowed in the"),
        (store_doc('duration="60"').replace("outbound", "inbound"), "not allowed in the inbound section"),
    ],
)
def test_bad_statements_are_refused_at_load_time(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_document(text, "api")
    assert fragment in info.value.message


def test_an_unknown_embeddings_backend_is_refused_when_the_snapshot_loads() -> None:
    from gateway.policy.base import bind_steps

    class Env:
        def backend(self, backend_id: str):
            raise PolicyError(f"set-backend-service: unknown backend '{backend_id}'")

        def target_for_url(self, url: str):
            raise AssertionError

    steps = parse_document(lookup_doc(), "api").sections["inbound"]
    with pytest.raises(PolicyError, match="unknown embeddings backend 'emb'"):
        bind_steps(steps, Env())
