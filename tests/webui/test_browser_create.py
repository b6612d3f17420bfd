"""Create pages in a real browser, driven from the keyboard: the errors the REST serializer gives sit next to their
field (and are announced), a subscription created from its API's page with its scope picked from a menu, a backend,
an operation created from its API's page, a secret named value that is never shown except through the audited
Reveal. Each page is checked with axe-core and kept as a screenshot."""

from apis.models import Operation
from backends.models import Backend
from gateway_admin.models import RevealRecord
from named_values.models import NamedValue
from subscriptions.models import Product, Subscription
from tests.management.factories import APIFactory, NamedValueFactory, ProductFactory, SubscriptionFactory

from .test_browser import browser, page, pytestmark, shot  # noqa: F401  (fixtures and the module's marks)


def tab_to(page, text: str, limit: int = 40) -> None:  # noqa: F811
    """Press Tab until the focused element's text (or value) is `text`, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(document.activeElement.innerText || document.activeElement.value || '').trim()") == text:
            return
    raise AssertionError(f"{text!r} is not reachable with Tab")


def focused_id(page) -> str:  # noqa: F811
    return page.evaluate("document.activeElement.id")


def test_product_created_from_the_keyboard_with_field_errors(page, live_server):  # noqa: F811
    APIFactory(name="chat")
    page.goto(f"{live_server.url}/ui/products/")
    tab_to(page, "New product")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="New product").wait_for()
    shot(page, "product-create")

    tab_to(page, "")  # the first empty text box: the name
    assert focused_id(page) == "id_name"
    page.keyboard.type("not a name")
    page.keyboard.press("Tab")
    assert focused_id(page) == "id_display_name"
    page.keyboard.type("Starter")
    page.keyboard.press("Enter")  # submits the form

    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "not created" in alert.inner_text()
    name = page.get_by_label("Name:", exact=True)
    assert name.get_attribute("aria-invalid") == "true"
    error = page.locator("#id_name_error")
    assert "Use letters, digits" in error.inner_text()
    assert "id_name_error" in (name.get_attribute("aria-describedby") or "")  # read out with the field
    shot(page, "product-create-errors")

    name.fill("starter")
    name.focus()
    tab_to(page, "chat")  # the API checkbox: Space ticks it
    page.keyboard.press("Space")
    tab_to(page, "Create")
    page.keyboard.press("Enter")
    page.get_by_text("Created product 'starter'.").wait_for()
    product = Product.objects.get(name="starter")
    assert [api.name for api in product.apis.all()] == ["chat"] and product.subscription_required
    shot(page, "product-detail")

    page.set_viewport_size({"width": 360, "height": 740})  # a narrow window: nothing scrolls sideways
    page.goto(f"{live_server.url}/ui/products/+new/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "product-create-narrow")


def test_subscription_created_from_its_api_page(page, live_server):  # noqa: F811
    """The scope is picked from a menu (the API's own chosen when opened from its page); a scope the service refuses
    (a full product) comes back on the menu, still chosen."""
    APIFactory(name="chat", display_name="Chat")
    full = ProductFactory(name="starter", display_name="Starter", subscriptions_limit=1)
    SubscriptionFactory(name="first", product=full, api=None)
    page.goto(f"{live_server.url}/ui/apis/chat/")
    page.get_by_role("link", name="New subscription").click()
    scope = page.get_by_label("Scope:")
    assert scope.input_value() == "/apis/chat"
    options = scope.locator("option").all_inner_texts()
    assert options[:2] == ["Choose a scope", "All APIs"] and "chat (Chat)" in options and "starter (Starter)" in options
    page.get_by_label("Name:", exact=True).fill("team-a")
    scope.select_option(label="starter (Starter)")
    page.get_by_role("button", name="Create").click()
    page.locator("#id_scope_error").get_by_text("Product 'starter' allows at most 1 subscription(s).").wait_for()
    assert page.get_by_label("Scope:").input_value() == "/products/starter"
    assert page.get_by_label("Scope:").get_attribute("aria-invalid") == "true"
    shot(page, "subscription-create-errors")
    page.get_by_label("Scope:").focus()
    page.keyboard.press("Home")  # a keyboard user picks from the menu too: Home is its first option
    assert page.get_by_label("Scope:").input_value() == ""
    page.get_by_label("Scope:").select_option("/apis/chat")
    shot(page, "subscription-create-scope")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Reveal its keys to copy them.").wait_for()
    subscription = Subscription.objects.get(name="team-a")
    assert subscription.api.name == "chat"
    assert subscription.primary_key not in page.content()


def test_backend_and_operation_created_through_their_pages(page, live_server):  # noqa: F811
    NamedValueFactory(name="openai-key", value="sk-1", secret=True)
    APIFactory(name="chat", display_name="Chat")
    page.goto(f"{live_server.url}/ui/backends/")
    page.get_by_role("link", name="New backend").click()
    page.get_by_role("heading", name="New backend").wait_for()
    assert page.get_by_label("Type:").input_value() == "Single"
    page.get_by_label("Name:", exact=True).fill("openai")
    page.get_by_label("URL:", exact=True).fill("ftp://api.openai.com/v1")
    page.get_by_label("Credential headers (JSON object):").fill('{"api-key": "{{openai-key}}"}')
    page.get_by_role("button", name="Create").click()
    url = page.get_by_label("URL:", exact=True)
    assert url.get_attribute("aria-invalid") == "true"
    assert "http" in page.locator("#id_url_error").inner_text()
    assert not Backend.objects.exists()
    shot(page, "backend-create-errors")
    url.fill("https://api.openai.com/v1")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Created backend 'openai'.").wait_for()
    backend = Backend.objects.get(name="openai")
    assert (backend.type, backend.url, backend.credentials_header) == (
        "Single", "https://api.openai.com/v1", {"api-key": "{{openai-key}}"}
    )  # fmt: skip
    shot(page, "backend-created")

    page.goto(f"{live_server.url}/ui/apis/chat/")
    page.get_by_role("link", name="New operation").click()
    page.get_by_role("heading", name="New operation").wait_for()
    assert page.get_by_label("API:").input_value() == "chat"
    page.get_by_label("Name:", exact=True).fill("chat-completions")
    page.get_by_label("Display name:").fill("Chat completions")
    page.get_by_label("Method:").select_option("POST")
    page.get_by_label("URL template:").fill("/chat/completions")
    shot(page, "operation-create")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Created operation 'chat-completions'.").wait_for()
    operation = Operation.objects.get(name="chat-completions")
    assert (operation.api.name, operation.method, operation.url_template) == ("chat", "POST", "/chat/completions")
    page.goto(f"{live_server.url}/ui/apis/chat/")  # listed on its API's page
    page.get_by_role("link", name="POST /chat/completions").wait_for()

    APIFactory(name="a-long-api-name-in-the-menus", display_name="A display name wider than a phone's screen")
    page.set_viewport_size({"width": 360, "height": 740})  # a narrow window: nothing scrolls sideways
    for kind in ("backends", "operations", "subscriptions"):
        page.goto(f"{live_server.url}/ui/{kind}/+new/")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), kind
    shot(page, "subscription-create-narrow")


def test_secret_named_value_created_and_shown_only_by_reveal(page, live_server):  # noqa: F811
    page.goto(f"{live_server.url}/ui/named-values/+new/")
    assert page.get_by_label("Secret").is_checked()
    page.get_by_label("Name:", exact=True).fill("openai-key")
    value = page.get_by_label("Value:")
    assert value.get_attribute("type") == "password"
    value.fill("sk-typed-in-browser")
    shot(page, "named-value-create")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Created named value 'openai-key'.").wait_for()
    assert "sk-typed-in-browser" not in page.content()
    assert NamedValue.objects.get(name="openai-key").secret
    page.get_by_role("link", name="Reveal value").click()
    page.get_by_role("button", name="Yes, reveal").click()
    page.get_by_text("sk-typed-in-browser").wait_for()
    record = RevealRecord.objects.get()
    assert (record.kind, record.name, record.channel) == ("named_value", "openai-key", "ui")


def test_blocklist_with_a_bad_regex_shows_the_field_error(page, live_server):  # noqa: F811
    from content_safety.models import Blocklist

    page.goto(f"{live_server.url}/ui/blocklists/")
    page.get_by_role("link", name="New blocklist").click()
    page.get_by_label("Name:", exact=True).fill("profanity")
    page.get_by_label("Terms (one per line)").fill("darn\nheck")
    page.get_by_label("Regular expressions (one per line, RE2 syntax)").fill("fo+bar\n(a)\\1")  # a backreference
    page.get_by_role("button", name="Create").click()
    error = page.locator("#id_regexes_error")
    error.wait_for()
    assert "Line 2:" in error.inner_text()
    regexes = page.get_by_label("Regular expressions (one per line, RE2 syntax)")
    assert regexes.get_attribute("aria-invalid") == "true"
    assert not Blocklist.objects.exists()
    shot(page, "blocklist-create-errors")

    regexes.fill("fo+bar")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Created blocklist 'profanity'.").wait_for()
    assert Blocklist.objects.get(name="profanity").items == [
        {"kind": "term", "value": "darn"},
        {"kind": "term", "value": "heck"},
        {"kind": "regex", "value": "fo+bar"},
    ]
    shot(page, "blocklist-detail")
