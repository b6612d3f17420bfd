#!/usr/bin/env python3
"""Server time of the web UI's pages with 1,000 APIs and 10,000 subscriptions (issue #10: each under 200 ms).

Creates a throwaway test database (Django's test database: `test_<name>` on PostgreSQL when DATABASE_URL is set,
else a temporary SQLite file), seeds it with `tests/webui/scale.py` (APIs with operations, backends, named values,
products, subscriptions of every scope, a day of usage rows), logs in a member of Operators, and GETs every page of
`scale.PAGES` through Django's test client: the whole request in process (middleware, session, permissions, view,
queries, template), no network. Each page is fetched once to warm up, then `--runs` times; the median and the
slowest run are printed with the page's query count, as a Markdown table (docs/web-ui.md keeps one).

    python bench/webui_pages.py [--runs 20] [--apis 1000] [--subscriptions 10000] [--only usage]
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_admin.settings.test")

BUDGET_MS = 200.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed GETs per page (after one warm-up)")
    parser.add_argument("--apis", type=int, default=1000)
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--only", default="", help="measure only the pages whose label holds this text")
    args = parser.parse_args()

    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from gateway_admin.groups import OPERATORS
    from tests.webui.scale import page_urls, seed

    # not setup_test_environment(): it instruments template rendering for the test client (a copy of the context
    # per template rendered), which would be timed too
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        started = time.perf_counter()
        seed(apis=args.apis, subscriptions=args.subscriptions)
        print(
            f"seeded {args.apis} APIs and {args.subscriptions} subscriptions on {connection.vendor} "
            f"in {time.perf_counter() - started:.1f} s; {args.runs} runs per page",
            file=sys.stderr,
        )
        user = User.objects.create_user("bench")
        user.groups.add(Group.objects.get(name=OPERATORS))
        client = Client()
        client.force_login(user)
        print("| page | URL | median ms | slowest ms | queries | KB |")
        print("| --- | --- | ---: | ---: | ---: | ---: |")
        over = []
        for label, url in page_urls():
            if args.only not in label:
                continue
            with CaptureQueriesContext(connection) as queries:
                response = client.get(url)  # warm-up, and the query count
            query_count = len(queries)  # now: each request clears the connection's log (reset_queries)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                client.get(url)
                times.append((time.perf_counter() - start) * 1000)
            median = statistics.median(times)
            if median > BUDGET_MS:
                over.append(label)
            print(
                f"| {label} | `{url}` | {median:.1f} | {max(times):.1f} | {query_count} | "
                f"{len(response.content) / 1024:.0f} |"
            )
        print(f"over {BUDGET_MS:.0f} ms (median): {', '.join(over) or 'none'}", file=sys.stderr)
        return 1 if over else 0
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
