"""Command line: ``python -m mockllm --host 127.0.0.1 --port 18000 [options]``."""

import argparse
import asyncio
import logging
import sys

from aiohttp import web

from .app import MockConfig, create_app

__all__ = ("main", "parse_args")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mockllm", description="Mock OpenAI-compatible model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay before each answer / first SSE byte")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between SSE events")
    parser.add_argument("--tokens", type=int, default=16, help="completion tokens (and stream chunks) per answer")
    parser.add_argument("--embed-dim", type=int, default=8, help="embedding dimension when the request sets none")
    parser.add_argument("--models", default="mock,gpt-4o-mini,text-embedding-3-small", help="ids for GET /models")
    parser.add_argument("--require-key", metavar="K", help="answer 401 unless 'Authorization: Bearer K'")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.embed_dim < 1:
        parser.error("--tokens and --embed-dim must be positive")
    return args


def _event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the mock works without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = MockConfig(
        delay_ms=args.delay_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        tokens=args.tokens,
        embed_dim=args.embed_dim,
        require_key=args.require_key,
        models=tuple(m for m in args.models.split(",") if m),
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    loop = _event_loop()
    asyncio.set_event_loop(loop)
    print(
        f"mockllm listening on http://{args.host}:{args.port}/v1 (tokens={args.tokens}, delay={args.delay_ms}ms, "
        f"chunk_delay={args.chunk_delay_ms}ms)",
        flush=True,
    )
    web.run_app(
        create_app(config),
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        # a client that disconnects cancels its handler at once, so /mock/stats sees cancelled streams promptly
        handler_cancellation=True,
        shutdown_timeout=1.0,
        backlog=1024,
        loop=loop,
    )


if __name__ == "__main__":
    sys.exit(main())
