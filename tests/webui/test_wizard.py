"""The import wizard through Django's test client (formtools steps, service errors mapped back to their step and
field), and the Test connection's address rules."""

import json

import pytest
from django.urls import reverse

from apis.models import API
from named_values.models import NamedValue
from tests.management.factories import APIFactory, BackendFactory, BlocklistFactory
from webui import probe

pytestmark = pytest.mark.django_db

URL = reverse("webui:import")
CONFIGURE = {
    "import_wizard_view-current_step": "configure",
    "configure-display_name": "Gemini",
    "configure-url": "https://example.com/v1beta/openai",
    "configure-path": "gemini",
    "configure-type": "openai",
    "configure-access_key_header": "Authorization",
    "configure-access_key_value": "Bearer sk-1",
}


def step(client, name: str, data: dict | None = None):
    return client.post(URL, {"import_wizard_view-current_step": name, **(data or {})})


def walk_to_create(client, configure: dict):
    response = client.post(URL, configure)
    assert response.status_code == 200 and response.context["wizard"]["steps"].current == "tokens", _errors(response)
    for name in ("tokens", "caching", "safety"):
        step(client, name)
    return step(client, "review")


def _errors(response):
    return response.context and response.context["form"].errors


def test_an_empty_products_list_says_so(operator_client):
    """A newcomer has no product yet: the field says it is optional and empty rather than showing a blank box."""
    from tests.management.factories import ProductFactory

    page = operator_client.get(URL).content.decode()
    products = page[page.index('id="id_configure-products"') :].split("</div>")[0]
    assert "None yet." in products and "Optional" in page
    ProductFactory(name="starter")
    page = operator_client.get(URL).content.decode()
    products = page[page.index('id="id_configure-products"') :].split("</div>", 2)
    assert "starter" in products[0] + products[1] and "None yet." not in products[0] + products[1]


def test_the_wizard_creates_through_the_import_service(operator_client):
    assert operator_client.get(URL).status_code == 200
    response = walk_to_create(operator_client, CONFIGURE)
    assert response.status_code == 302
    api = API.objects.get(name="gemini")
    assert api.operations.count() == 1
    assert 'backend-id="gemini-backend"' in api.policies.get().value
    assert NamedValue.objects.get(name="gemini-key").value == "Bearer sk-1"


def test_the_access_key_is_not_kept_in_the_session_in_plaintext(operator_client):
    response = operator_client.post(URL, CONFIGURE)
    assert response.context["wizard"]["steps"].current == "tokens"
    stored = json.dumps(dict(operator_client.session.items()))
    assert "configure-display_name" in stored  # the wizard's step data is there
    assert "sk-1" not in stored
    for name in ("tokens", "caching", "safety"):
        step(operator_client, name)
    assert step(operator_client, "review").status_code == 302
    assert NamedValue.objects.get(name="gemini-key").value == "Bearer sk-1"


def test_a_step_shows_the_rest_serializers_errors_on_its_fields(operator_client):
    response = operator_client.post(
        URL, {**CONFIGURE, "configure-url": "ftp://example.com", "configure-access_key_header": "bad header"}
    )
    errors = response.context["form"].errors
    assert response.context["wizard"]["steps"].current == "configure"
    assert set(errors) >= {"url", "access_key_header"}, errors


def test_a_conflict_found_by_the_service_goes_back_to_its_field(operator_client):
    response = operator_client.post(URL, CONFIGURE)
    assert response.context["wizard"]["steps"].current == "tokens"
    APIFactory(name="other", path="gemini")  # taken meanwhile
    for name in ("tokens", "caching", "safety"):
        step(operator_client, name)
    response = step(operator_client, "review")
    assert response.status_code == 200
    assert response.context["wizard"]["steps"].current == "configure"
    assert "already exists" in " ".join(response.context["form"].errors["path"])
    assert not API.objects.filter(name="gemini").exists()


def test_token_step_errors(operator_client):
    operator_client.post(URL, CONFIGURE)
    response = step(operator_client, "tokens", {"tokens-limit_tokens": "on", "tokens-counter_key": "subscription"})
    assert response.context["wizard"]["steps"].current == "tokens"
    assert "tokens_per_minute" in response.context["form"].errors


def test_test_connection_lists_the_mock_models(operator_client, mock_llm):
    response = operator_client.post(URL, {**CONFIGURE, "configure-url": mock_llm.base_url, "test_connection": "1"})
    result = response.context["probe"]
    assert result.ok, result.message
    assert result.models
    assert response.context["wizard"]["steps"].current == "configure"


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/latest/meta-data", "http://[fe80::1]/", "http://0.0.0.0/", "file:///etc/passwd"],
)
def test_probe_refuses_metadata_link_local_and_other_schemes(url):
    result = probe.probe_url(url, "passthrough")
    assert not result.ok
    assert "link-local" in result.message or "cannot be tested" in result.message or "Only http" in result.message


def test_probe_refuses_loopback_unless_allowed(settings, mock_llm):
    settings.SLUICE = {**settings.SLUICE, "PROBE_ALLOW_LOOPBACK": False}
    refused = probe.probe_url(mock_llm.base_url, "openai")
    assert not refused.ok and "loopback" in refused.message
    settings.SLUICE = {**settings.SLUICE, "PROBE_ALLOW_LOOPBACK": True}
    assert probe.probe_url(mock_llm.base_url, "openai").ok


def test_probe_reports_the_exact_error(mock_llm):
    result = probe.probe_url(f"{mock_llm.root_url}/nowhere", "openai")
    assert not result.ok
    assert "answered 404" in result.message


def test_passthrough_probe_says_a_4xx_at_the_base_url_is_fine(mock_llm):
    """A passthrough API's base URL often has no page: the probe's 404 must not read as a failure."""
    result = probe.probe_url(f"{mock_llm.root_url}/nowhere", "passthrough")
    assert result.ok and "answered 404" in result.message and "reachable" in result.message


CACHING = {
    "caching-enable": "on",
    "caching-embeddings_backend": "local",
    "caching-score_threshold": "0.2",
    "caching-duration": "600",
    "caching-vary_by_subscription": "on",
    "caching-max_message_count": "4",
}


def test_caching_and_safety_steps_build_the_rest_blocks(operator_client):
    BlocklistFactory(name="profanity", items=[{"kind": "term", "value": "darn"}])
    BackendFactory(name="moderation", url="https://safety.example.com")  # Azure AI Content Safety
    operator_client.post(URL, CONFIGURE)
    step(operator_client, "tokens")
    response = step(operator_client, "caching", CACHING)
    assert response.context["wizard"]["steps"].current == "safety", _errors(response)
    safety = {"safety-enable": "on", "safety-backend": "moderation", "safety-shield_prompt": "on",
              "safety-category_Hate": "2", "safety-category_Violence": "4", "safety-blocklists": ["profanity"],
              "safety-enforce_on_completions": "on"}  # fmt: skip
    response = step(operator_client, "safety", safety)
    assert response.context["wizard"]["steps"].current == "review", _errors(response)
    policy = response.context["preview"]["policy"]
    assert 'score-threshold="0.2"' in policy and 'max-message-count="4"' in policy
    assert 'embeddings-backend-id="local-embeddings"' in policy and '<llm-semantic-cache-store duration="600"' in policy
    assert 'backend-id="moderation"' in policy and 'shield-prompt="true"' in policy
    assert '<category name="Hate" threshold="2"' in policy and "<id>profanity</id>" in policy
    response = step(operator_client, "review")
    assert response.status_code == 302, (response.context["wizard"]["steps"].current, _errors(response))
    value = API.objects.get(name="gemini").policies.get().value
    assert "llm-semantic-cache-lookup" in value and "llm-content-safety" in value


def test_caching_and_safety_step_errors_in_place(operator_client):
    operator_client.post(URL, CONFIGURE)
    step(operator_client, "tokens")
    response = step(operator_client, "caching", {**CACHING, "caching-score_threshold": "2", "caching-duration": "0"})
    errors = response.context["form"].errors
    assert response.context["wizard"]["steps"].current == "caching"
    assert set(errors) == {"score_threshold", "duration"}, errors
    step(operator_client, "caching", CACHING)
    bad = {"safety-enable": "on", "safety-backend": "builtin", "safety-category_Hate": "3"}
    response = step(operator_client, "safety", bad)
    assert response.context["wizard"]["steps"].current == "safety", response.context["form"].errors
    assert "no harm categories" in " ".join(response.context["form"].errors["category_Hate"])
    response = step(operator_client, "safety", {"safety-enable": "on", "safety-backend": "builtin"})
    assert "at least one blocklist" in " ".join(response.context["form"].errors["blocklists"])
    response = step(
        operator_client, "safety", {"safety-enable": "on", "safety-backend": "x", "safety-category_Sexual": "9"}
    )
    assert set(response.context["form"].errors) == {"backend", "category_Sexual"}


def test_disabled_steps_add_no_policy(operator_client):
    response = walk_to_create(operator_client, CONFIGURE)
    assert response.status_code == 302
    value = API.objects.get(name="gemini").policies.get().value
    assert "semantic-cache" not in value and "content-safety" not in value


def test_a_policy_refused_by_the_write_time_check_goes_back_to_its_step(operator_client):
    """Shield prompt on an OpenAI moderation endpoint passes the block's serializer, but the gateways could not
    load the policy: the wizard goes back to the content-safety step and says why."""
    BackendFactory(name="moderation", url="https://moderation.example.com/v1")
    operator_client.post(URL, CONFIGURE)
    step(operator_client, "tokens")
    step(operator_client, "caching")
    safety = {"safety-enable": "on", "safety-backend": "moderation", "safety-shield_prompt": "on"}
    assert step(operator_client, "safety", safety).context["wizard"]["steps"].current == "review"
    response = step(operator_client, "review")
    assert response.status_code == 200
    assert response.context["wizard"]["steps"].current == "safety", response.context["form"].errors
    assert "shield-prompt needs an engine with prompt shields" in " ".join(response.context["form"].non_field_errors())
    assert not API.objects.filter(name="gemini").exists()
    # the other steps are kept: unticking shield prompt is enough to create the API
    safety.pop("safety-shield_prompt")
    assert step(operator_client, "safety", safety).context["wizard"]["steps"].current == "review"
    assert step(operator_client, "review").status_code == 302
    assert 'backend-id="moderation"' in API.objects.get(name="gemini").policies.get().value
