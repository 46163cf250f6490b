"""End-to-end: balancing, timeouts, retries, ejection and failover, through the Wasm worker in
workerd, with three (and a backup) real origin servers on 127.0.0.1 that the tests stop, hang
or make answer 503."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import statistics
import time
from pathlib import Path

import pytest

from conftest import log_entries, send
from origin import Origin, big_body, free_port
from workerd import Workerd

FIGURES = Path(__file__).resolve().parents[2] / "target" / "failover-figures.json"


@pytest.fixture
def three():
    origins = [Origin(n).start() for n in ("a", "b", "c")]
    yield origins
    for o in origins:
        o.mode = "ok"
        o.stop()


def pool(origins, **extra):
    return {"servers": [{"url": o.url} for o in origins], **extra}


def gateway_for(origins: dict, routes: list | None = None) -> Workerd:
    routes = routes or [{"name": name, "path": f"/{name}/{{*rest}}", "origin": name} for name in origins]
    return Workerd(json.dumps({"origins": origins, "routes": routes}))


def served_by(reply) -> str:
    assert reply.status == 200, (reply.status, reply.body[:200])
    return reply.json()["server"]



def test_weights_3_to_1_give_about_3_to_1(three):
    a, b, _ = three
    cfg = {"p": {"servers": [{"url": a.url, "weight": 3}, {"url": b.url, "weight": 1}]}}
    with gateway_for(cfg) as wd:
        counts = {"a": 0, "b": 0}
        for _ in range(400):
            counts[served_by(send(wd.base_url, "GET", "/p/x"))] += 1
    share = counts["a"] / 400
    assert 0.70 <= share <= 0.80, counts


def test_a_server_stopped_mid_run_costs_clients_nothing_and_is_ejected(three):
    a, b, c = three
    cfg = {"p": pool(three, timeout_ms=2000, eject={"after_failures": 2, "for_ms": 60000})}
    with gateway_for(cfg) as wd:
        results = []  # (status, seconds)

        def one(i):
            t = time.monotonic()
            r = send(wd.base_url, "GET", f"/p/item/{i}")
            return r.status, time.monotonic() - t

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool_:
            before = list(pool_.map(one, range(150)))
            b.stop()
            during = list(pool_.map(one, range(150, 450)))
        results = before + during
        errors = [s for s, _ in results if s != 200]
        assert errors == [], f"{len(errors)} client errors: {errors[:5]}"
        # b is ejected: after its ejection, no attempt goes to it
        entries = log_entries(wd)
        b_index = 1
        ejected_at = next(i for i, e in enumerate(entries)
                          if any(at.get("ejected_for_ms") and at["server"] == b_index for at in e["attempts"]))
        later = [at for e in entries[ejected_at + 8:] for at in e["attempts"]]
        assert later and all(at["server"] != b_index for at in later)
        failed_attempts = sum(1 for e in entries for at in e["attempts"] if at["outcome"] != "response")
        assert failed_attempts <= 8, failed_attempts  # a few requests found b down, then it was skipped

        def pct(xs, p):
            xs = sorted(xs)
            return xs[min(len(xs) - 1, int(p * len(xs)))] * 1000
        figures = {
            "requests": len(results),
            "client_errors": len(errors),
            "failed_attempts": failed_attempts,
            "p50_ms_before_stop": round(pct([t for _, t in before], 0.5), 2),
            "p99_ms_before_stop": round(pct([t for _, t in before], 0.99), 2),
            "p50_ms_after_stop": round(pct([t for _, t in during], 0.5), 2),
            "p99_ms_after_stop": round(pct([t for _, t in during], 0.99), 2),
            "max_ms_after_stop": round(max(t for _, t in during) * 1000, 2),
        }
        FIGURES.parent.mkdir(exist_ok=True)
        FIGURES.write_text(json.dumps(figures, indent=2))
        print("failover figures:", figures)


def test_a_hanging_server_costs_one_timeout_then_is_skipped(three):
    a, b, c = three
    b.mode = "hang"
    b.hang_s = 5
    cfg = {"p": pool(three, timeout_ms=400, eject={"after_failures": 1, "for_ms": 60000})}
    with gateway_for(cfg) as wd:
        times = []
        for i in range(30):
            t = time.monotonic()
            assert served_by(send(wd.base_url, "GET", f"/p/{i}")) in ("a", "c")
            times.append(time.monotonic() - t)
    assert max(times) < 0.4 + 1.0, times          # timeout_ms plus one fast attempt
    assert sorted(times)[len(times) // 2] < 0.2, times  # most requests never meet the hang
    assert sum(1 for t in times if t >= 0.4) == 1, times  # ejected after one timeout


def test_503_is_retried_for_gets_and_only_with_non_idempotent_for_posts(three):
    a, b, c = three
    b.mode = "503"
    origins = {
        "get": pool(three, retry={"on": ["connect", 503]}, eject={"after_failures": 0}),
        "post": pool(three, retry={"on": ["connect", 503]}, eject={"after_failures": 0}),
        "postok": pool(three, retry={"on": [503], "non_idempotent": True}, eject={"after_failures": 0}),
    }
    with gateway_for(origins) as wd:
        for i in range(30):
            assert served_by(send(wd.base_url, "GET", f"/get/{i}")) in ("a", "c")
        post_statuses = [send(wd.base_url, "POST", f"/post/{i}", body=b"x").status for i in range(30)]
        # POST is not retried: the ones that met b see b's 503 (the origin's last word)
        assert post_statuses.count(503) == 10 and post_statuses.count(200) == 20, post_statuses
        body = big_body(100 * 1024)
        for i in range(6):
            r = send(wd.base_url, "POST", f"/postok/{i}", [("content-type", "application/octet-stream")], body)
            assert r.status == 200, r.body
            echo = r.json()
            assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()
            assert echo["body_len"] == len(body)
        # the bodies b got before the retry were the same bytes too
        assert any(rec.method == "POST" and rec.body == body for rec in b.received)


def test_all_down_gives_502_within_the_deadline_and_a_backup_takes_over(three):
    a, b, backup = three
    cfg = {"p": {"servers": [{"url": a.url}, {"url": b.url}, {"url": backup.url, "backup": True}],
                 "timeout_ms": 1000, "deadline_ms": 2000, "eject": {"after_failures": 1, "for_ms": 1500}},
           "dead": {"servers": [{"url": f"http://127.0.0.1:{free_port()}"}, {"url": f"http://127.0.0.1:{free_port()}"}],
                    "timeout_ms": 1000, "deadline_ms": 2000}}
    with gateway_for(cfg) as wd:
        t = time.monotonic()
        r = send(wd.base_url, "GET", "/dead/x")
        assert time.monotonic() - t < 2.5
        assert r.status == 502 and r.json()["error"] == "origin_unavailable"
        assert "127.0.0.1" not in r.body.decode()

        # normal: the backup gets nothing
        since = backup.count()
        for i in range(20):
            assert served_by(send(wd.base_url, "GET", f"/p/{i}")) in ("a", "b")
        assert backup.count(since) == 0
        # primaries down: the backup takes over, no client error
        a.stop()
        b.stop()
        for i in range(20):
            assert served_by(send(wd.base_url, "GET", f"/p/{i}")) == backup.name
        # primaries back: after the ejection time, the backup stops getting traffic
        a.start()
        b.start()
        time.sleep(1.6)
        for i in range(5):
            send(wd.base_url, "GET", f"/p/warm/{i}")
        since = backup.count()
        for i in range(20):
            assert served_by(send(wd.base_url, "GET", f"/p/{i}")) in ("a", "b")
        assert backup.count(since) == 0


def test_hash_on_a_header_keeps_a_key_on_one_server(three):
    cfg = {"p": pool(three, balance="hash", hash_on="header:x-tenant")}
    with gateway_for(cfg) as wd:
        seen = {served_by(send(wd.base_url, "GET", f"/p/{i}", [("x-tenant", "acme")])) for i in range(100)}
        assert len(seen) == 1, seen
        spread = {served_by(send(wd.base_url, "GET", "/p/x", [("x-tenant", f"t{i}")])) for i in range(60)}
        assert spread == {"a", "b", "c"}, spread


def test_hash_on_a_verified_claim_keeps_a_user_on_one_server(three):
    from test_cache import SECRET, hs256
    cfg = {
        "auth": {"main": {"algorithms": ["HS256"], "hmac_secret_env": "JWT_SECRET"}},
        "origins": {"p": pool(three, balance="hash", hash_on="claim:sub")},
        "routes": [{"name": "p", "path": "/p/{*rest}", "origin": "p", "auth": "main"}],
    }
    with Workerd(json.dumps(cfg), text_bindings={"JWT_SECRET": SECRET}) as wd:
        def server_for(user):
            return served_by(send(wd.base_url, "GET", "/p/x", [("authorization", f"Bearer {hs256({'sub': user})}")]))
        assert len({server_for("alice") for _ in range(30)}) == 1
        assert {server_for(f"user{i}") for i in range(60)} == {"a", "b", "c"}
