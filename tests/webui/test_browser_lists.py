"""List pages in a real browser: the results follow the search box and the filters as one types (htmx, from the
django-htmx package, served locally), the URL follows, and without a page load; Apply still loads the page."""

from tests.management.factories import APIFactory

from .test_browser import browser, page, pytestmark, shot  # noqa: F401  (fixtures and the module's marks)


def test_live_search_and_filter(page, live_server):  # noqa: F811
    for n in range(30):
        APIFactory(name=f"model-{n:02}", path=f"m{n}", api_type="passthrough" if n % 3 == 0 else "openai")
    page.goto(f"{live_server.url}/ui/apis/")
    assert page.evaluate("typeof htmx") == "object"  # served from /static/vendor/htmx/, no CDN
    page.evaluate("window.samePage = true")
    count = page.locator("#count")
    assert count.inner_text() == "30 APIs"
    page.get_by_role("searchbox", name="Search").press_sequentially("model-1")
    page.wait_for_function("document.getElementById('count').textContent.trim() === '10 APIs'")
    assert page.locator("#results tbody tr").count() == 10
    assert "q=model-1" in page.url
    assert page.evaluate("document.activeElement.id") == "id_q"  # the focus stays in the box
    page.locator("#id_api_type").select_option("passthrough")  # a filter: on change
    page.wait_for_function("document.getElementById('count').textContent.trim() === '3 APIs'")
    assert "api_type=passthrough" in page.url
    assert page.evaluate("window.samePage") is True  # no page load
    shot(page, "apis-list-live-search")
    page.get_by_role("button", name="Apply").click()  # a plain submit: the whole page
    page.wait_for_function("window.samePage === undefined")
    assert page.locator("#count").inner_text() == "3 APIs"
