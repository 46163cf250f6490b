"""End-to-end: health shared by the isolates of one location. Two isolates of the built Worker
in one workerd process share its cache service, as the isolates of one Cloudflare location share
its Cache API: after isolate A ejects a dead server, isolate B sends it no live attempt once B
has read the shared word (its first request starts the read, in the background)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import log_entries, send
from origin import Origin, free_port
from workerd import Workerd

FIGURES = Path(__file__).resolve().parents[2] / "target" / "shared-health-figures.json"



@pytest.fixture
def two_live():
    origins = [Origin(n).start() for n in ("a", "b")]
    yield origins
    for o in origins:
        o.stop()


def config(live, dead_url: str) -> str:
    return json.dumps({
        "origins": {"p": {"servers": [{"url": live[0].url}, {"url": live[1].url}, {"url": dead_url}],
                          "eject": {"after_failures": 2, "for_ms": 60000}, "timeout_ms": 2000}},
        "routes": [{"name": "p", "path": "/p/{*rest}", "origin": "p"}],
    })


def dead_attempts(wd: Workerd, base: str, n: int, dead: str) -> tuple[int, int]:
    """Sends n requests to one isolate; (failed attempts on the dead server, client errors)."""
    ids, errors = [], 0
    for _ in range(n):
        reply = send(base, "GET", "/p/x")
        errors += reply.status != 200
        ids.append(reply.header("x-request-id"))
    time.sleep(0.3)
    logs = {e["request_id"]: e for e in log_entries(wd)}
    return sum(1 for i in ids for a in logs[i]["attempts"] if a["address"] == dead), errors


def test_an_ejection_in_one_isolate_spares_the_other(two_live):
    dead = f"http://127.0.0.1:{free_port()}"
    figures = {}
    # Without a peer's word: isolate B finds the dead server on its own.
    with Workerd(config(two_live, dead), instances=2) as wd:
        b = f"http://127.0.0.1:{wd.ports[1]}"
        paid, errors = dead_attempts(wd, b, 30, dead)
        assert errors == 0
        assert paid == 2, "B ejects the dead server after its own two failures"
        figures["b_failed_attempts_alone"] = paid
    # With it: A ejects it first; B, after its first request's background read, never tries it.
    with Workerd(config(two_live, dead), instances=2) as wd:
        a, b = (f"http://127.0.0.1:{p}" for p in wd.ports)
        paid_a, errors = dead_attempts(wd, a, 12, dead)
        assert (paid_a, errors) == (2, 0), "A ejects it after two failures"
        first, errors = dead_attempts(wd, b, 1, dead)  # starts B's read of the shared word
        assert errors == 0
        time.sleep(0.5)
        paid_b, errors = dead_attempts(wd, b, 30, dead)
        assert errors == 0
        assert paid_b == 0, "B skips the server A ejected"
        figures.update(a_failed_attempts=paid_a, b_failed_attempts_first_request=first,
                       b_failed_attempts_after_read=paid_b)
    FIGURES.parent.mkdir(exist_ok=True)
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")


def test_a_shared_ejection_ends_when_it_expires(two_live):
    flaky = Origin("c").start()
    try:
        cfg = json.loads(config(two_live, flaky.url))
        cfg["origins"]["p"]["eject"] = {"after_failures": 1, "for_ms": 2000}
        with Workerd(json.dumps(cfg), instances=2) as wd:
            a, b = (f"http://127.0.0.1:{p}" for p in wd.ports)
            port = flaky.port
            flaky.stop()
            dead_attempts(wd, a, 6, flaky.url)  # A ejects it for 2 s
            dead_attempts(wd, b, 1, flaky.url)  # B's first request starts its read
            time.sleep(0.3)
            assert dead_attempts(wd, b, 9, flaky.url)[0] == 0, "B skips it"
            back = Origin("c")
            back.port = port
            back.start()
            try:
                time.sleep(2.2)  # the ejection (and the shared entry) expired
                for _ in range(9):
                    assert send(b, "GET", "/p/x").status == 200
                assert back.received, "B sends it traffic again"
            finally:
                back.stop()
    finally:
        flaky.stop()


def test_chaos_through_two_isolates_costs_clients_nothing():
    """Bounded: 2,400 GETs, 4 at a time, alternating between two isolates, over three servers;
    one server is killed after the first third and another made to hang (2 s, longer than
    timeout_ms) after the second. Idempotent requests see no error; the attempts that reached
    the dead or hanging server are counted per isolate."""
    import concurrent.futures

    servers = [Origin(n).start() for n in ("x", "y", "z")]
    try:
        cfg = json.dumps({
            "origins": {"p": {"servers": [{"url": s.url} for s in servers], "timeout_ms": 300,
                              "retry": {"attempts": 3, "on": ["connect", "timeout"]},
                              "eject": {"after_failures": 2, "for_ms": 60000}}},
            "routes": [{"name": "p", "path": "/p/{*rest}", "origin": "p"}],
        })
        with Workerd(cfg, instances=2) as wd:
            bases = [f"http://127.0.0.1:{p}" for p in wd.ports]

            def one(i):
                reply = send(bases[i % 2], "GET", f"/p/item/{i}", timeout=10)
                return i % 2, reply.status, reply.header("x-request-id")

            results = []
            with concurrent.futures.ThreadPoolExecutor(max_workers=4) as workers:
                results += workers.map(one, range(0, 800))
                servers[1].stop()  # y is killed
                results += workers.map(one, range(800, 1600))
                servers[2].mode, servers[2].hang_s = "hang", 2  # z hangs
                results += workers.map(one, range(1600, 2400))
            servers[2].mode = "ok"
            errors = [r for r in results if r[1] != 200]
            assert errors == [], f"{len(errors)} client errors: {errors[:5]}"
            time.sleep(0.5)
            logs = {e["request_id"]: e for e in log_entries(wd)}
            per_isolate = {}
            for isolate in (0, 1):
                attempts = [a for r in results if r[0] == isolate for a in logs[r[2]]["attempts"]]
                per_isolate[f"isolate_{'ab'[isolate]}"] = {
                    "requests": sum(1 for r in results if r[0] == isolate),
                    "attempts_to_killed": sum(1 for a in attempts if a["address"] == servers[1].url
                                              and a["outcome"] != "response"),
                    "attempts_to_hanging": sum(1 for a in attempts if a["address"] == servers[2].url
                                               and a["outcome"] == "timeout"),
                }
            for counts in per_isolate.values():
                # Each isolate pays at most its own ejection threshold per server (it may learn
                # the other's ejection first and pay less).
                assert counts["attempts_to_killed"] <= 2 + 4, per_isolate
                assert counts["attempts_to_hanging"] <= 2 + 4, per_isolate
        figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
        figures["chaos"] = {"requests": len(results), "client_errors": len(errors), **per_isolate}
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        for s in servers:
            s.mode = "ok"
            s.stop()
