"""Run the shared gwbench harness (`compare`: direct, nginx, Sluice and optionally LiteLLM) against one Sluice
configuration, set up as `bench/run.py` sets it up.

    python bench/gwbench_sluice.py --gwbench /tmp/gwbench --policies none --out bench/results/gwbench-none \\
        [--litellm] [--redis-url redis://127.0.0.1:6379/15] [-- extra gwbench compare arguments]

The harness's mock and nginx get free ports (not its defaults). This script seeds a throwaway management plane
with one API pointing at that mock, starts the management plane and one gateway pinned like the harness's servers
(the last CPU of this process's affinity), and runs `gwbench compare` with the gateway as an external target.
With `--litellm`, the harness also launches LiteLLM (`gateways/litellm.sh`, its venv from `setup.sh litellm`)
on a free port. Everything started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # bench/run.py, next to this file
    DEFAULT_REDIS_URL,
    KEY_HEADER,
    Bench,
    RedisRun,
    cpu_layout,
    free_port,
    log,
    parse_args,
)

REDACTED = "<redacted>"


def scrub_key(out: Path, key: str) -> None:
    """Replace the run's subscription key with ``REDACTED`` in the harness's OUT.json and OUT.md, which quote the
    command line (``-H Ocp-Apim-Subscription-Key: …``): the key is a throwaway one, but no key is kept in a file."""
    for path in (out.with_name(out.name + ".json"), out.with_name(out.name + ".md")):
        if path.exists():
            text = path.read_text(encoding="utf-8")
            if key in text:
                path.write_text(text.replace(key, REDACTED), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gwbench", required=True, help="the harness's folder (a copy of ../shared/gwbench)")
    parser.add_argument("--policies", choices=("none", "governance"), default="none")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="for --policies governance")
    parser.add_argument("--litellm", action="store_true", help="also launch LiteLLM as a gateway under test")
    parser.add_argument("--litellm-venv", help="LiteLLM's venv (default: the harness's own default)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=int, default=6)
    parser.add_argument("--conc", default="1,16")
    parser.add_argument("--out", required=True, help="OUT.json and OUT.md (gwbench's --out)")
    args, extra = parser.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    gwbench = Path(args.gwbench).resolve()
    bench = Bench(parse_args(["--policies", args.policies, "--redis-url", args.redis_url]))
    try:
        variant = bench.variants[0]
        if variant.uses_redis:
            bench.redis = RedisRun(args.redis_url, bench.run_id, [variant.subscription])
            bench.redis.check()
        bench.client_cpus, bench.server_cpus = cpu_layout(False)
        mock_port, nginx_port = free_port(), free_port()
        env = bench.django_env()
        keys = bench.seed(env, f"http://127.0.0.1:{mock_port}/v1")
        child_env = {**os.environ, **env}
        from gateway_admin.management.commands.runsluice import gunicorn_argv

        admin_port = free_port()
        admin_url = f"http://127.0.0.1:{admin_port}"
        bench.start("management", gunicorn_argv(f"127.0.0.1:{admin_port}", 1), f"{admin_url}/admin/login/", child_env)
        root = f"http://127.0.0.1:{free_port()}"
        gateway_env = bench.gateway_env(child_env, variant.policies, variant, admin_url, root, free_port())
        # The gateway answers once the mock is up; the harness starts the mock, so readiness is its health URL.
        bench.start(
            f"gateway-{variant.policies}", [sys.executable, "-m", "gateway"], f"{root}/__sluice/health", gateway_env
        )
        name = "sluice" if variant.policies == "none" else "sluice-gov"
        command = [
            str(gwbench / "run.sh"),
            "compare",
            "--gateway",
            f"{name}={root}/{variant.path}",
            "-H",
            f"{KEY_HEADER}: {keys[variant.policies]}",
            "--mock-port",
            str(mock_port),
            "--nginx-port",
            str(nginx_port),
            "--rounds",
            str(args.rounds),
            "--duration",
            str(args.duration),
            "--conc",
            args.conc,
            "--out",
            str(Path(args.out).resolve()),
        ]
        run_env = dict(child_env)
        if args.litellm:
            port = free_port()
            command += [
                "--gateway",
                f"litellm=http://127.0.0.1:{port}",
                "--launch",
                f"litellm=gateways/litellm.sh {port} 1",
            ]
            if args.litellm_venv:
                run_env["LITELLM_VENV"] = args.litellm_venv
        command += extra
        key = keys[variant.policies]
        log("running " + " ".join(command).replace(key, REDACTED))
        returncode = subprocess.run(command, cwd=gwbench, env=run_env, check=False).returncode  # noqa: S603 - our argv
        scrub_key(Path(args.out), key)
        return returncode
    finally:
        bench.stop()


if __name__ == "__main__":
    sys.exit(main())
