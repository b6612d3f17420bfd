"""Create pages in a real browser, driven from the keyboard: the errors the REST serializer gives sit next to their
field (and are announced), a subscription created from its API's page, a secret named value that is never shown
except through the audited Reveal. Each page is checked with axe-core and kept as a screenshot."""

from gateway_admin.models import RevealRecord
from named_values.models import NamedValue
from subscriptions.models import Product, Subscription
from tests.management.factories import APIFactory

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
    APIFactory(name="chat")
    page.goto(f"{live_server.url}/ui/apis/chat/")
    page.get_by_role("link", name="New subscription").click()
    scope = page.get_by_label("Scope:")
    assert scope.input_value() == "/apis/chat"
    page.get_by_label("Name:", exact=True).fill("team-a")
    scope.fill("/apis/nope")
    page.get_by_role("button", name="Create").click()
    page.locator("#id_scope_error").get_by_text("API 'nope' does not exist.").wait_for()
    shot(page, "subscription-create-errors")
    page.get_by_label("Scope:").fill("/apis/chat")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Reveal its keys to copy them.").wait_for()
    subscription = Subscription.objects.get(name="team-a")
    assert subscription.api.name == "chat"
    assert subscription.primary_key not in page.content()


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
