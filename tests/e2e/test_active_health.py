"""End-to-end: active health checks. `wrangler dev --test-scheduled` runs the Worker's scheduled
handler (`GET /__scheduled`), which probes each server's /healthz and writes the results to the
local KV namespace (wrangler's simulator, persisted in a directory the runs share). A fresh
isolate (a restart of wrangler dev on the same store) reads the results after its first request
and sends a server that failed its check no traffic; once a check passes, it gets traffic again."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from conftest import send
from origin import Origin
from wrangler_dev import WranglerDev

KV = '[[kv_namespaces]]\nbinding = "GATEWAY_HEALTH"\nid = "portcullis-e2e-health"\n'
# The planner's slack (DUE_SLACK_MS in src/upstream/checks.rs) lets a server be probed again
# this long before its interval has passed.
INTERVAL_S = 60
SLACK_S = 5


def config(a: Origin, b: Origin) -> str:
    return json.dumps({
        "origins": {"p": {"servers": [{"url": a.url}, {"url": b.url}],
                          "health": {"path": "/healthz", "interval_s": INTERVAL_S, "timeout_ms": 1000},
                          "timeout_ms": 2000}},
        "routes": [{"name": "p", "path": "/p/{*rest}", "origin": "p"}],
    })


def run_scheduled(wd: WranglerDev) -> dict:
    """Runs the scheduled handler once; its log line."""
    before = len(wd.log_lines())
    reply = send(wd.base_url, "GET", "/__scheduled?cron=*+*+*+*+*")
    assert reply.status == 200, reply.body
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in wd.log_lines()[before:]:
            if '"health_checks"' in line:
                return json.loads(line[line.index("{"):])["health_checks"]
        time.sleep(0.1)
    raise AssertionError("no health_checks log line:\n" + wd.output()[-3000:])


def traffic(wd: WranglerDev, origins: list[Origin], n: int) -> list[int]:
    """Sends one request (which starts the isolate's background read of the results), waits for
    the read, then n more; the requests each origin received, /healthz left out."""
    assert send(wd.base_url, "GET", "/p/warm").status == 200
    time.sleep(2)
    before = [len(o.received) for o in origins]
    for _ in range(n):
        reply = send(wd.base_url, "GET", "/p/x")
        assert reply.status == 200, reply.body
    return [sum(1 for r in o.received[b:] if r.path != "/healthz") for o, b in zip(origins, before)]


@pytest.fixture
def origins():
    pair = [Origin(n).start() for n in ("a", "b")]
    yield pair
    for o in pair:
        o.stop()


def test_a_server_failing_its_check_gets_no_traffic_until_a_check_passes(origins):
    a, b = origins
    b.healthz_status = 503
    store = Path(tempfile.mkdtemp(prefix="portcullis-health-"))
    try:
        check_and_read(origins, store)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def check_and_read(origins: list[Origin], store: Path) -> None:
    a, b = origins
    cfg = config(a, b)

    with WranglerDev(cfg, extra_toml=KV, test_scheduled=True, persist_to=store) as wd:
        checked_at = time.monotonic()
        run = run_scheduled(wd)
    assert run["probed"] == 2 and run["unhealthy"] == 1, run
    failed = [r for r in run["results"] if not r["healthy"]]
    assert failed[0]["server"] == b.url and failed[0]["status"] == 503, run
    assert "503" in failed[0]["reason"], run
    assert sum(1 for r in b.received if r.path == "/healthz") == 1

    # A fresh isolate on the same store: after its first read, nothing for b.
    with WranglerDev(cfg, extra_toml=KV, test_scheduled=True, persist_to=store) as wd:
        got = traffic(wd, origins, 20)
        assert got == [20, 0], got

        # Not due yet: a run within the interval probes nothing.
        assert run_scheduled(wd)["probed"] == 0

        # b passes its next check: it takes traffic again once the isolate has read that.
        b.healthz_status = 200
        time.sleep(max(0.0, checked_at + INTERVAL_S - SLACK_S + 1 - time.monotonic()))
        run = run_scheduled(wd)
        assert run["probed"] == 2 and run["unhealthy"] == 0, run
        got = traffic(wd, origins, 20)
        assert got[1] >= 5 and sum(got) == 20, got
