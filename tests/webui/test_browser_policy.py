"""The policy editor in a real browser: the Ace editor (from the django-ace package), an error marked on its line,
the diff before saving, the save, and the effective policy tab."""

from policies.services import get_policy
from tests.management.factories import APIFactory, OperationFactory

from .test_browser import browser, page, pytestmark, shot  # noqa: F401  (fixtures and the module's marks)
from .test_policy_editor import LIMITED

SET_VALUE = "(text) => document.querySelector('.django-ace-widget').editor.setValue(text, 1)"


def test_policy_editor_marks_errors_shows_the_diff_and_saves(page, live_server):  # noqa: F811
    api = APIFactory(name="chat")
    OperationFactory(api=api, name="chat-completions", url_template="/chat/completions")
    page.goto(f"{live_server.url}/ui/apis/chat/")
    page.get_by_role("link", name="Policy", exact=True).click()
    page.locator(".ace_editor").wait_for()  # the code editor, with XML highlighting
    page.evaluate(SET_VALUE, LIMITED.replace("<outbound><base /></outbound>", "<outbound><oops /></outbound>"))
    page.get_by_role("button", name="Review changes").click()
    page.locator("#policy-errors").get_by_text("line 7").wait_for()
    page.locator(".ace_gutter-cell.ace_error").wait_for()  # the line is marked in the editor's gutter
    assert page.locator(".ace_gutter-cell.ace_error").inner_text().strip() == "7"
    shot(page, "policy-editor-error")

    page.evaluate(SET_VALUE, LIMITED)
    page.get_by_role("button", name="Review changes").click()
    page.locator("#policy-diff").get_by_text("x-team").wait_for()
    shot(page, "policy-editor-diff")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved the api chat policy.").wait_for()
    assert get_policy("api", api).value.replace("\r\n", "\n") == LIMITED

    page.get_by_role("tab", name="Effective policy").click()
    effective = page.locator("#effective pre")
    assert "x-team" in effective.inner_text() and "forward-request" in effective.inner_text()
    shot(page, "policy-editor-effective")


def test_keyboard_users_can_leave_the_editor(page, live_server):  # noqa: F811
    """Tab indents inside Ace; Escape leaves the text for the editor's box, and Tab then reaches the buttons."""
    APIFactory(name="chat")
    page.goto(f"{live_server.url}/ui/policy/api/chat/")
    page.locator(".ace_editor").wait_for()
    box = page.locator(".ace_scroller")
    box.focus()  # where Tab lands coming from above
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"  # visible focus
    page.keyboard.press("Enter")  # into the text
    page.keyboard.press("Control+End")
    page.keyboard.press("Tab")  # indents: the text keeps the focus
    assert page.evaluate("document.querySelector('.django-ace-widget').editor.isFocused()")
    assert page.evaluate("document.querySelector('.django-ace-widget').editor.getValue()").endswith("    ")
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.classList.contains('ace_scroller')")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Review changes"
    page.keyboard.press("Shift+Tab")  # and back to the editor's box
    assert page.evaluate("document.activeElement.classList.contains('ace_scroller')")
    shot(page, "policy-editor-keyboard")
