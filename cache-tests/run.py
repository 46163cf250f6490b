"""Runs the HTTP working group's cache test suite (npm http-cache-tests) with the gateway's
edge cache in front of the suite's own origin server, everything on 127.0.0.1.

    client (cli.mjs) -> Portcullis Worker in workerd (gateway.json) -> server/server.mjs

Called by scripts/cache-tests, which installs the package and builds the Worker first. Writes
the suite's raw results (its own JSON format, as in its results/ directory) to --out.
Standard library only; the Worker runs under tests/e2e/workerd.py's harness.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from workerd import Workerd  # noqa: E402

PKG = HERE / "node_modules" / "http-cache-tests"


def stop(proc: subprocess.Popen) -> None:
    """Stop one process we started, and its process group (it was started in a new session)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def start_origin(node: str, tmp: Path) -> tuple[subprocess.Popen, str]:
    """The suite's server on 127.0.0.1, port chosen by the kernel, read from its first line."""
    env = dict(os.environ, npm_config_protocol="http", npm_config_port="0",
               npm_config_pidfile=str(tmp / "server.pid"))
    log_path = tmp / "origin.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [node, "--import", (HERE / "listen-local.mjs").as_uri(), "server/server.mjs"],
            cwd=PKG, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.search(r"Listening on http://127\.0\.0\.1:(\d+)/", log_path.read_text("utf-8", "replace"))
        if m:
            return proc, f"http://127.0.0.1:{int(m.group(1))}"
        time.sleep(0.05)
    stop(proc)
    raise SystemExit("cache-tests: the suite's server did not start:\n" + log_path.read_text("utf-8", "replace")[-2000:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--node", required=True, help="Node 22 binary")
    ap.add_argument("--out", required=True, help="raw results JSON to write")
    ap.add_argument("--timeout", type=float, default=240, help="seconds for the whole suite run")
    ap.add_argument("--id", default="", help="run one test id, printing its requests and responses")
    args = ap.parse_args()
    # scripts/cache-tests stops this process with SIGTERM: unwind, so that the finally blocks and
    # context managers below stop the suite's server, workerd and the client.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    config = (HERE / "gateway.json").read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="portcullis-cache-tests-") as tmpname:
        tmp = Path(tmpname)
        origin, origin_url = start_origin(args.node, tmp)
        try:
            with Workerd(config.replace("ORIGIN_URL", origin_url)) as wd:
                print(f"cache-tests: origin {origin_url}, gateway {wd.base_url}", file=sys.stderr)
                # cli.mjs reads npm_config_id, else npm_package_config_id (package.json config, "" there)
                env = dict(os.environ, npm_config_base=wd.base_url, npm_config_id=args.id,
                           npm_package_config_id="")
                started = time.monotonic()
                try:
                    cli = subprocess.run(
                        [args.node, "--no-warnings", "cli.mjs"], cwd=PKG, env=env,
                        stdin=subprocess.DEVNULL, capture_output=True, timeout=args.timeout,
                        start_new_session=True,
                    )
                except subprocess.TimeoutExpired:
                    print(f"cache-tests: the suite did not finish within {args.timeout:.0f}s", file=sys.stderr)
                    return 1
                took = time.monotonic() - started
                sys.stderr.write(cli.stderr.decode("utf-8", "replace"))
                if args.id:
                    sys.stdout.write(cli.stdout.decode("utf-8", "replace"))
                    time.sleep(0.2)
                    print("=== The gateway's log", *wd.log_lines(), *wd.stderr_lines(), sep="\n")
                    return cli.returncode
                try:
                    results = json.loads(cli.stdout)
                except ValueError:
                    print("cache-tests: the suite's output is not JSON:\n"
                          + cli.stdout.decode("utf-8", "replace")[-4000:], file=sys.stderr)
                    return 1
                errors = [line for line in wd.stderr_lines() if "Uncaught" in line or "error" in line.lower()]
                if errors:
                    print(f"cache-tests: workerd stderr has {len(errors)} error lines, first: {errors[0]}",
                          file=sys.stderr)
        finally:
            stop(origin)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"cache-tests: {len(results)} results in {took:.0f}s -> {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
