"""The web UI in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium, never a downloaded browser)
against a live management plane, and the real mock model for Test connection. Screenshots of the key pages are
saved under var/screenshots/ (git-ignored) as test artefacts."""

import os
import shutil
from pathlib import Path

import pytest

from apis.models import API
from content_safety.models import Blocklist
from gateway_admin.models import RevealRecord
from named_values.models import NamedValue
from subscriptions.models import Subscription
from tests.management.factories import BackendFactory, NamedValueFactory, SubscriptionFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = REPO_ROOT / "var" / "screenshots"

pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists() or shutil.which("chromium") is None,
        reason=f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)",
    ),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the ORM calls of the tests are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()
    os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.fixture
def page(browser, live_server, admin_user):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/ui/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("password")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Sluice").wait_for()
    yield page
    context.close()


def shot(page, name: str) -> None:
    """Save a screenshot of a key page, and check it with axe-core: no serious or critical violation."""
    (REPO_ROOT / "var").mkdir(mode=0o700, exist_ok=True)
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    from axe_playwright_python.sync_playwright import Axe

    violations = Axe().run(page).response["violations"]
    grave = [(v["id"], v["impact"], v["help"]) for v in violations if v["impact"] in ("serious", "critical")]
    assert not grave, f"{name}: {grave}"


def test_wizard_end_to_end_with_test_connection(page, live_server, mock_llm):
    Blocklist.objects.create(name="profanity", items=[{"kind": "term", "value": "darn"}])
    page.get_by_role("link", name="Import", exact=True).click()
    page.get_by_label("Display name").fill("Mock model")
    page.get_by_label("URL:", exact=True).fill(mock_llm.base_url)
    page.get_by_label("Path").fill("mock/v1")
    page.get_by_label("Create OpenAI API").check()
    page.get_by_label("GET /models").check()
    page.get_by_label("Access key header name").fill("Authorization")
    page.get_by_label("Access key:", exact=True).fill("Bearer sk-mock-secret")

    page.get_by_role("button", name="Test connection").click()
    result = page.locator("#probe-result")
    result.wait_for()
    assert "answered 200" in result.inner_text()
    assert result.locator("code").count() >= 1  # the model ids the mock lists
    shot(page, "wizard-1-configure-test-connection")

    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name="Step 2 of 5: Manage token consumption").wait_for()
    page.get_by_label("Limit tokens").check()
    page.get_by_label("Tokens per minute").fill("5000")
    shot(page, "wizard-2-tokens")
    page.get_by_role("button", name="Next").click()

    page.get_by_role("heading", name="Step 3 of 5: Apply semantic caching").wait_for()
    page.get_by_label("Enable semantic caching").check()
    page.get_by_label("Embeddings backend").select_option("local")
    page.get_by_label("Score threshold").fill("1.5")  # out of range: the REST serializer's error in place
    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name="Step 3 of 5: Apply semantic caching").wait_for()
    assert "less than or equal to 1" in page.locator("#id_caching-score_threshold_error").inner_text()
    shot(page, "wizard-3-caching-errors")
    page.get_by_label("Score threshold").fill("0.1")
    page.get_by_label("Max message count").fill("5")
    shot(page, "wizard-3-caching")
    page.get_by_role("button", name="Next").click()

    page.get_by_role("heading", name="Step 4 of 5: AI content safety").wait_for()
    page.get_by_label("Enable content safety").check()
    page.get_by_label("Engine").select_option("builtin")
    page.get_by_label("Hate threshold").fill("2")  # the built-in engine has no categories
    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name="Step 4 of 5: AI content safety").wait_for()
    assert "no harm categories" in page.locator("#id_safety-category_Hate_error").inner_text()
    page.get_by_label("Hate threshold").fill("")
    page.get_by_label("profanity").check()
    shot(page, "wizard-4-safety")
    page.get_by_role("button", name="Next").click()

    page.get_by_role("heading", name="Step 5 of 5: Review").wait_for()
    xml = page.locator("pre.xml").inner_text()
    assert 'score-threshold="0.1"' in xml and 'max-message-count="5"' in xml
    assert "<llm-semantic-cache-store" in xml
    assert 'backend-id="builtin"' in xml and "<id>profanity</id>" in xml
    review = page.locator("main").inner_text()
    assert "mock-model-backend" in review
    assert "mock-model-key" in review
    assert "sk-mock-secret" not in review
    assert 'tokens-per-minute="5000"' in page.locator("pre.xml").inner_text()
    shot(page, "wizard-5-review")
    page.get_by_role("button", name="Create").click()

    page.get_by_text("Created API 'mock-model'").wait_for()
    shot(page, "api-detail")
    api = API.objects.get(name="mock-model")
    assert api.path == "mock/v1"
    assert sorted(api.operations.values_list("name", flat=True)) == ["chat-completions", "list-models"]
    assert NamedValue.objects.get(name="mock-model-key").secret
    policy = api.policies.get().value
    assert "llm-semantic-cache-lookup" in policy and "llm-content-safety" in policy


def test_passthrough_gemini_style_api_through_the_wizard(page, live_server, mock_llm):
    """The issue's other import: a passthrough API, Gemini style (its own paths, the key in x-goog-api-key)."""
    page.goto(f"{live_server.url}/ui/import/")
    page.get_by_label("Display name").fill("Gemini")
    page.get_by_label("URL:", exact=True).fill(mock_llm.base_url)
    page.get_by_label("Path").fill("gemini/v1beta")
    page.get_by_label("Create a passthrough API").check()
    page.get_by_label("Access key header name").fill("x-goog-api-key")
    page.get_by_label("Access key:", exact=True).fill("gemini-secret-key")
    page.get_by_role("button", name="Test connection").click()
    assert "answered" in page.locator("#probe-result").inner_text()  # GET {url}: its status
    for _ in range(4):
        page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name="Step 5 of 5: Review").wait_for()
    assert "gemini-secret-key" not in page.content()
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Created API 'gemini'").wait_for()
    api = API.objects.get(name="gemini")
    assert (api.api_type, api.path) == ("passthrough", "gemini/v1beta")
    assert api.operations.exists()
    assert NamedValue.objects.get(name="gemini-key").secret


def test_field_errors_in_place(page, live_server):
    page.goto(f"{live_server.url}/ui/import/")
    page.get_by_label("Display name").fill("Bad")
    page.get_by_label("URL:", exact=True).fill("ftp://example.com")
    page.get_by_label("Path").fill("/bad path/")
    page.get_by_role("button", name="Next").click()
    page.get_by_role("heading", name="Step 1 of 5: Configure API").wait_for()
    url_errors = page.locator("#id_configure-url_error, .errorlist").all_inner_texts()
    assert url_errors, "no field error shown"
    # each error sits in the block of its own field
    url_block = page.locator("div", has=page.get_by_label("URL:", exact=True)).last
    assert url_block.locator(".errorlist").count() == 1
    path_block = page.locator("div", has=page.get_by_label("Path")).last
    assert path_block.locator(".errorlist").count() == 1
    shot(page, "wizard-field-errors")
    assert not API.objects.exists()

    page.get_by_label("URL:", exact=True).fill("http://169.254.169.254/latest")
    page.get_by_role("button", name="Test connection").click()
    assert "link-local" in page.locator("#probe-result").inner_text()


def test_reveal_a_secret_with_its_audit_entry(page, live_server):
    NamedValueFactory(name="openai-key", value="sk-revealed-in-browser", secret=True)
    page.goto(f"{live_server.url}/ui/named-values/")
    shot(page, "named-values-list")
    page.get_by_role("link", name="openai-key").click()
    assert "sk-revealed-in-browser" not in page.content()
    page.get_by_role("link", name="Reveal value").click()
    assert "sk-revealed-in-browser" not in page.content()
    page.get_by_role("button", name="Yes, reveal").click()
    page.get_by_text("sk-revealed-in-browser").wait_for()
    record = RevealRecord.objects.get()
    assert (record.username, record.kind, record.name, record.channel) == ("admin", "named_value", "openai-key", "ui")


def test_narrow_window_and_keyboard(page, live_server):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{live_server.url}/ui/apis/")
    # the page does not scroll sideways
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # a visible focus ring
    shot(page, "apis-list-narrow")


def test_subscription_keys_regenerate_and_reveal(page, live_server):
    subscription = SubscriptionFactory(name="team-a", display_name="Team A")
    old_primary = subscription.primary_key
    page.goto(f"{live_server.url}/ui/subscriptions/team-a/")
    assert old_primary not in page.content()
    shot(page, "subscription-detail")
    page.get_by_role("button", name="Regenerate primary key").click()
    page.get_by_text("Regenerated the primary key").wait_for()
    new_primary = Subscription.objects.get(name="team-a").primary_key
    assert new_primary != old_primary
    page.get_by_role("link", name="Reveal keys").click()
    page.get_by_role("button", name="Yes, reveal").click()
    page.get_by_text(new_primary).wait_for()
    assert RevealRecord.objects.get().kind == "subscription"


def test_refused_edit_shows_the_field_error(page, live_server):
    BackendFactory(name="openai-backend")
    page.goto(f"{live_server.url}/ui/backends/openai-backend/edit/")
    page.get_by_label("Credential headers (JSON object):").fill('{"api-key": "{{no-such-value}}"}')
    page.get_by_role("button", name="Save").click()
    error = page.locator(".errorlist").first
    error.wait_for()
    assert "no-such-value" in error.inner_text()
    shot(page, "backend-edit-refused")
