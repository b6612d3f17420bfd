"""A newcomer's walkthrough of the web UI against a running `make run`, in a real browser (issue #10's "Done when").

It logs in, imports a Gemini-style OpenAI-compatible API and a passthrough API through the import wizard, sends a
request to each from its test console with the trace, and reads their usage on the dashboard, saving a screenshot
of each step (viewport 1280x800) in the folder given. It uses only what the pages show: no REST call.

    make run ARGS='--port 8100 --gateway-port 8180 --mock-port 18200 --embeddings-port 0 --admin-port 0'
    .venv/bin/python scripts/walkthrough.py --ui http://127.0.0.1:8100/ui/ --password <the printed one> \\
        --model-url http://127.0.0.1:18200/v1 --out docs/screenshots

`--model-url` is the "Demo model" line `make run` prints (the mock model). The APIs are created under the names
given by --suffix (default: none), so a second run against the same database needs another suffix.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"


def shot(page: Page, out: Path, name: str) -> None:
    """The visible viewport only: a full-page PNG of a long page gets large."""
    path = out / f"{name}.png"
    page.screenshot(path=str(path))
    print(f"  {path} ({path.stat().st_size // 1024} KB)")


def log_in(page: Page, ui: str, user: str, password: str) -> None:
    page.goto(ui)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Import", exact=True).wait_for()


def import_api(page: Page, out: Path, shot_prefix: str, fields: dict[str, str], passthrough: bool, review: bool) -> str:
    """Step 1 filled in as a newcomer would, Test connection, Next to the review, Create. Returns the API's page."""
    page.get_by_role("link", name="Import", exact=True).click()
    page.get_by_label("Display name").fill(fields["display_name"])
    page.get_by_label("URL:", exact=True).fill(fields["url"])
    page.get_by_label("Path").fill(fields["path"])
    page.get_by_label("Create a passthrough API" if passthrough else "Create OpenAI API").check()
    page.get_by_label("Access key header name").fill(fields["key_header"])
    page.get_by_label("Access key:", exact=True).fill(fields["key"])
    page.get_by_role("button", name="Test connection").click()
    page.locator("#probe-result").wait_for()
    page.locator("#probe-result").scroll_into_view_if_needed()
    print(f"  Test connection: {' '.join(page.locator('#probe-result').inner_text().split())}")
    shot(page, out, f"{shot_prefix}-1-configure")
    while not page.get_by_role("heading", name="Review").count():
        page.get_by_role("button", name="Next").click()
        page.locator("h2").first.wait_for()
        errors = page.locator(".errorlist").all_inner_texts()
        if errors:
            raise SystemExit(f"the wizard refused a step: {errors}")
    if review:
        page.locator("pre.xml").scroll_into_view_if_needed()
        shot(page, out, f"{shot_prefix}-2-review")
    page.get_by_role("button", name="Create").click()
    page.get_by_text("Created API").wait_for()
    return page.url


def console(page: Page, out: Path, name: str, operation: str | None = None, answer: bool = True) -> None:
    """From the API's page: its Test console, the (given) operation, Send with the trace, the answer and the trace."""
    page.get_by_role("link", name="Test console").click()
    page.get_by_role("heading", name="Test console").wait_for()
    if operation:
        page.get_by_role("navigation", name="Operations").get_by_role("link", name=operation).first.click()
        page.locator("#send").wait_for()
    status, note = page.locator("#response-status"), page.locator("#response-note")
    deadline = time.monotonic() + 20
    while True:
        page.get_by_role("button", name="Send").click()
        page.locator("#send:enabled").wait_for(timeout=15_000)  # the answer is in
        if status.inner_text().startswith("200"):
            break
        if not note.is_visible() or time.monotonic() > deadline:
            shot(page, out, f"{name}-failed")
            raise SystemExit(
                f"the console answered: {status.inner_text()} {page.locator('#response-body').inner_text()}"
            )
        # the page says the gateway has not loaded the new API yet and to send again: as a person would, in a moment
        print(f"  {status.inner_text()}: {note.inner_text()}")
        if name.endswith("gemini"):
            shot(page, out, f"{name}-not-loaded-yet")
        page.wait_for_timeout(1000)
    page.locator("#trace-rows tr").first.wait_for()
    print(f"  {' '.join(page.locator('#response-status').inner_text().split())}, "
          f"{page.locator('#trace-rows tr').count()} trace rows")  # fmt: skip
    if answer:
        page.locator("#response").scroll_into_view_if_needed()
        shot(page, out, name)
    page.locator("#trace-panel").scroll_into_view_if_needed()
    shot(page, out, f"{name}-trace")


def usage(page: Page, out: Path, apis: list[str], wait_s: float) -> None:
    """The dashboard, reloaded until both APIs show up (the gateway delivers its usage records every few seconds)."""
    page.get_by_role("link", name="Usage").click()
    deadline = time.monotonic() + wait_s
    while True:
        page.get_by_role("heading", name="Usage").wait_for()
        text = page.locator("main").inner_text()
        if all(api in text for api in apis) or time.monotonic() > deadline:
            break
        page.wait_for_timeout(1000)  # polling a page a person would reload; no product state is waited on here
        page.reload()
    missing = [api for api in apis if api not in page.locator("main").inner_text()]
    if missing:
        raise SystemExit(f"usage of {missing} not on the dashboard after {wait_s} s")
    page.locator("#chart-tokens .main-svg").first.wait_for()
    shot(page, out, "usage")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ui", required=True, help="the Web UI URL make run prints, e.g. http://127.0.0.1:8000/ui/")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", required=True, help="the admin password make run prints")
    parser.add_argument("--model-url", required=True, help="the Demo model URL make run prints (the mock model)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the screenshots")
    parser.add_argument("--suffix", default="", help="appended to the APIs' names and paths (to run again)")
    parser.add_argument("--headed", action="store_true", help="show the browser")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ui = args.ui.rstrip("/") + "/"
    model = args.model_url.rstrip("/")
    gemini, echo = f"gemini{args.suffix}", f"echo{args.suffix}"
    started = time.monotonic()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=not args.headed)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.set_default_timeout(10_000)
        print("1. log in, home page")
        log_in(page, ui, args.user, args.password)
        shot(page, args.out, "home")
        print("2. import a Gemini-style API (OpenAI-compatible) through the wizard")
        gemini_fields = {
            "display_name": f"Gemini{args.suffix}", "url": model, "path": f"gemini{args.suffix}/v1beta/openai",
            "key_header": "Authorization", "key": "Bearer gemini-demo-key"}  # fmt: skip
        import_api(page, args.out, "wizard-gemini", gemini_fields, passthrough=False, review=True)
        shot(page, args.out, "api-gemini")
        print("3. test it in the console, with the trace")
        console(page, args.out, "console-gemini")
        print("4. import a passthrough API through the wizard")
        import_api(page, args.out, "wizard-passthrough", {
            "display_name": f"Echo{args.suffix}", "url": model, "path": f"echo{args.suffix}/v1",
            "key_header": "x-api-key", "key": "echo-demo-key"}, passthrough=True, review=False)  # fmt: skip
        print("5. test it in the console, with the trace")
        console(page, args.out, "console-passthrough", operation="POST", answer=False)
        print("6. read their usage on the dashboard")
        usage(page, args.out, [gemini, echo], wait_s=30)
        browser.close()
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
