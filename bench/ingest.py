"""CPU time per usage record of the management plane's ingestion endpoint (`POST /api/gateway/usage/`), in one
process: Django's test client, a throwaway SQLite database (or `DATABASE_URL`), batches as a gateway sends them.

    python bench/ingest.py [--batch 1000] [--rounds 20] [--ids gateway|random] [--profile FILE] [--root OTHER_CHECKOUT]
                           [--spare N]

It measures the view, the serializer and `usage.services.ingest_records` with the database work of SQLite (which
runs in this process, as it does in the embedded default); it does not measure gunicorn or the network.

Each POST has a fixed cost (Django's and DRF's request handling, the authentication, the transaction and its commit,
whose WAL fsync the kernel does) on top of its records': `--batch 1` measures it, per POST. A gateway's `HttpSink`
sends far fewer than 1,000 records in many POSTs (see docs/benchmarks.md, "Ninth session (branch `ingest9`)").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def record(now_ms: int, request_id: str) -> dict:
    return {
        "request_id": request_id,
        "ts_ms": now_ms,
        "api": "bench",
        "operation": "chat",
        "subscription": "bench",
        "product": None,
        "backend": "mock",
        "model": "gpt-4o-mini",
        "prompt_tokens": 10,
        "completion_tokens": 32,
        "status": 200,
        "latency_ms": 1.5,
        "cache_hit": False,
        "gateway_id": "bench-gateway",
        "block_reason": None,
        "failed_attempts": None,
    }


def random_id() -> str:
    return str(uuid.uuid4())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1000, help="records per POST")
    parser.add_argument("--rounds", type=int, default=20, help="POSTs measured (after 2 unmeasured)")
    parser.add_argument(
        "--ids",
        choices=("gateway", "random"),
        default="random",
        help="request ids as a gateway makes them (a per-process prefix and a counter: the dedupe table's index grows "
        "at its end) or random GUIDs (each insert lands on another page of it)",
    )
    parser.add_argument("--profile", help="write a cProfile dump of the measured POSTs here")
    parser.add_argument("--root", default=str(ROOT), help="the checkout whose management plane to measure")
    parser.add_argument(
        "--spare",
        type=int,
        default=0,
        help="batches made but not posted: under callgrind, `--rounds 2 --spare 8` and `--rounds 10` differ by 8 POSTs "
        "only, not by the making of their bodies",
    )
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)  # the working directory's packages come first, as for `python -m` there
    from cryptography.fernet import Fernet

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_admin.settings.local")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='sluice-ingest-')}/ingest.sqlite3")
    os.environ.setdefault("DJANGO_SECRET_KEY", uuid.uuid4().hex * 2)
    os.environ.setdefault("SLUICE_SECRET_KEYS", Fernet.generate_key().decode())
    os.environ["REDIS_URL"] = ""
    os.environ["SLUICE_GATEWAY_TOKEN"] = token = uuid.uuid4().hex
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    call_command("migrate", interactive=False, verbosity=0)
    client = Client()
    now_ms = int(time.time() * 1000)
    new_id = random_id
    if args.ids == "gateway":
        from gateway.ids import next_request_id as new_id
    batches = [[record(now_ms, new_id()) for _ in range(args.batch)] for _ in range(args.rounds + 2 + args.spare)]
    bodies = [json.dumps({"records": batch}) for batch in batches]

    def post(body: str) -> None:
        response = client.post(
            "/api/gateway/usage/", body, content_type="application/json", HTTP_AUTHORIZATION=f"Gateway {token}"
        )
        if response.status_code != 202:
            raise SystemExit(f"HTTP {response.status_code}: {response.content[:300]!r}")

    for body in bodies[:2]:
        post(body)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.process_time()
    for body in bodies[2 : 2 + args.rounds]:
        post(body)
    spent = time.process_time() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    per_record = spent / (args.rounds * args.batch) * 1e6
    print(
        f"{root}: batch {args.batch}: {per_record:.1f} µs CPU per record ({spent / args.rounds * 1000:.1f} ms per POST)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
