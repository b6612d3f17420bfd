"""Command line: ``python -m embeddings --host 127.0.0.1 --port 18100 [--max-batch 256]``."""

import argparse
import asyncio
import logging
import os
import sys
import time

import uvloop
from aiohttp import web
from threadpoolctl import threadpool_limits

from .app import MAX_BATCH, ServerConfig, create_app
from .model import MODEL_NAME, MiniLM, ModelNotInstalled

__all__ = ("main", "parse_args")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m embeddings", description=f"OpenAI-compatible /v1/embeddings with {MODEL_NAME}, in numpy."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18100)
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH, help=f"inputs per request (default {MAX_BATCH})")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS threads for the forward pass (default 1: leaves the other cores to the gateway; see "
        "docs/semantic-cache.md for the measured difference)",
    )
    args = parser.parse_args(argv)
    if args.max_batch < 1 or args.threads < 1:
        parser.error("--max-batch and --threads must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here downloads; say so to any library that might
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    threadpool_limits(limits=args.threads, user_api="blas")  # process-wide, before the first matrix product
    started = time.perf_counter()
    try:
        model = MiniLM.load()
    except ModelNotInstalled as exc:
        print(f"embeddings: {exc}", file=sys.stderr, flush=True)
        return 2
    model.encode(["warm up"])  # the first forward pass pays for page faults and BLAS start-up
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    print(
        f"embeddings ({MODEL_NAME}, {model.dimensions} dims, {args.threads} BLAS thread(s), "
        f"loaded in {time.perf_counter() - started:.1f}s) "
        f"listening on http://{args.host}:{args.port}/v1/embeddings",
        flush=True,
    )
    web.run_app(
        create_app(model, ServerConfig(max_batch=args.max_batch)),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        shutdown_timeout=1.0,
        loop=loop,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
