"""Helpers for the tests of the language-model import wizard's policy blocks (`token_limit`, `token_metrics`)."""

from typing import TypeVar

from gateway.policy import Policy, Scope, parse_document

URL = "/api/apis/import-language-model/"
BASE = {"display_name": "Gemini", "url": "https://example.com/v1", "path": "gemini", "type": "openai"}

P = TypeVar("P", bound=Policy)


def imported_policy_xml(api_client, **fields) -> str:
    """Import ``BASE`` with ``fields`` added (201 expected); the API policy the wizard wrote."""
    response = api_client.post(URL, {**BASE, **fields}, format="json")
    assert response.status_code == 201, response.content
    return response.json()["policy"]["value"]


def only_step(policy_xml: str, policy_class: type[P]) -> P:
    """The one statement of ``policy_class`` in an API-scope policy document."""
    document = parse_document(policy_xml, Scope.API)
    steps = [s for steps in document.sections.values() for s in steps if isinstance(s, policy_class)]
    assert len(steps) == 1
    return steps[0]
