"""`make loadtest`: locust against SpaceMusic on the local stack, then the SLO gate.

By default starts its own web process and pipeline worker on a fresh database and topic
namespace of the running local stack (``make stack-up``), offers ``--rate`` requests a
second for ``--duration`` across POST /offers, GET /deals?limit=20 and GET /offers/{id},
prints locust's report and the gate's table, and exits non-zero when an endpoint breaches
its p95 or error-rate threshold. ``--host URL`` targets a running deployment instead
(``LOADTEST_TOKEN`` must then hold a bearer token).

The seed's plan: 1,000 RPS for 10 minutes, p95 < 5 s (``--rate 1000 --duration 10m``).
Our own target, p95 <= 50 ms at 1,000 RPS: ``--p95-ms 50``.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench.loadtest import gate  # noqa: E402
from bench.loadtest.stack import load, spacemusic_stack  # noqa: E402

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
ENDPOINTS = ("POST /offers", "GET /deals?limit=20", "GET /offers/{id}")


def run_locust(host: str, token: str, rate: float, duration: str, user_rps: float, out: Path) -> int:
    users = max(1, math.ceil(rate / user_rps))
    env = {
        **os.environ,
        "LOADTEST_TOKEN": token,
        "LOADTEST_USER_RPS": str(user_rps),
        "LOADTEST_FINAL_STATS": str(out.with_name("final_stats.csv")),
    }
    command = [
        str(REPO / ".venv" / "bin" / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--users",
        str(users),
        "--spawn-rate",
        str(users),
        "--run-time",
        duration,
        "--host",
        host,
        "--csv",
        str(out),
        "--only-summary",
        "--exit-code-on-error",
        "0",
        "--loglevel",
        "WARNING",
    ]
    print(
        f"locust: {users} users x {user_rps:g} req/s = {rate:g} req/s offered for {duration} against {host}; {load()}"
    )
    return subprocess.run(command, env=env, check=False).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="offered requests per second (default 200)")
    parser.add_argument("--duration", default="30s", help="locust run time: 30s, 10m … (default 30s)")
    parser.add_argument("--user-rps", type=float, default=10.0, help="requests per second per locust user")
    parser.add_argument("--host", default=None, help="target a running deployment instead of starting one")
    parser.add_argument("--roles", default="pipeline", help="worker roles to start beside web (comma-separated)")
    parser.add_argument("--p95-ms", type=float, default=5000.0, help="p95 limit per endpoint (seed SLO: 5000)")
    parser.add_argument("--max-error-rate", type=float, default=0.01)
    parser.add_argument("--threshold", action="append", default=[], metavar="NAME=MS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "loadtest"
        if args.host:
            code = run_locust(args.host, os.environ["LOADTEST_TOKEN"], args.rate, args.duration, args.user_rps, out)
        else:
            roles = tuple(r for r in args.roles.split(",") if r)
            with spacemusic_stack("load", roles=roles) as stack:
                code = run_locust(stack.base_url, stack.token(), args.rate, args.duration, args.user_rps, out)
        print(f"after the run: {load()}")
        if code != 0:
            print(f"locust exited with {code}")
            sys.exit(code)
        final = out.with_name("final_stats.csv")
        stats = final if final.exists() else out.with_name("loadtest_stats.csv")
        gate_args = [str(stats), "--p95-ms", str(args.p95_ms)]
        gate_args += ["--max-error-rate", str(args.max_error_rate)]
        for item in args.threshold:
            gate_args += ["--threshold", item]
        for name in ENDPOINTS:
            gate_args += ["--require", name]
        sys.exit(gate.main(gate_args))


if __name__ == "__main__":
    main()
