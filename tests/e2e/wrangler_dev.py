"""Run the built Portcullis Worker under `wrangler dev` (scripts/wrangler), for end-to-end tests.

The same interface as `Workerd` (workerd.py), so that a test can run under either:

    from wrangler_dev import WranglerDev

    with WranglerDev(config_json) as wd:      # config_json: str, or None for no GATEWAY_CONFIG
        body = urllib.request.urlopen(wd.base_url + "/path").read()
        assert any("something" in line for line in wd.log_lines())

`wrangler dev` is what a developer runs (scripts/dev) and, unlike a bare `workerd serve`, puts
its own proxy in front of the Worker, as Cloudflare's edge does in production: a header that
the client sent may be consumed before the Worker runs. Tests that must hold under both run
here as well as under workerd (see conftest.py, `under_each_runtime`).

What it sets up, in a fresh temporary directory (also HOME, so nothing is read from or written
to the user's wrangler state):

* a wrangler.toml whose `main` is the already-built Worker (worker/build/index.js; no
  [build] step runs), with the compatibility date of the repository's wrangler.toml;
* GATEWAY_CONFIG in [vars] (absent when config_json is None), plus any further vars given as
  `text_bindings` (as `Workerd` takes them), [[ratelimits]] bindings, and raw TOML for others;
* local state under --persist-to in that directory, or in `persist_to` (a restart that shares
  it sees the same KV namespaces and cache: a fresh isolate on the same store);
* with `test_scheduled`, `--test-scheduled`: `GET /__scheduled?cron=...` runs the Worker's
  scheduled handler;
* the HTTP socket on 127.0.0.1, port chosen by the kernel (`--port 0`), read from wrangler's
  "Ready on http://127.0.0.1:PORT" line; the inspector on a kernel-chosen port too, so that
  several instances can run at once.

wrangler prints the Worker's console output (console.log and the others) on its stdout, line by
line, between its own lines, which start with "[wrangler:"; log_lines() returns the Worker's
lines only. stop() ends wrangler's whole process group (wrangler, its Node child, esbuild and
the workerd processes it starts).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional

from workerd import CONFIG_BINDING, REPO_ROOT, LocalRuntime, default_compatibility_date

WRANGLER = REPO_ROOT / "scripts" / "wrangler"
MAIN_MODULE = REPO_ROOT / "worker" / "build" / "index.js"

READY = re.compile(r"Ready on http://127\.0\.0\.1:(\d+)")
# wrangler's own lines on stdout; everything else after the Ready line is the Worker's.
WRANGLER_LINE = re.compile(r"^\s*\[wrangler:")
# wrangler colours some of its messages whatever the terminal; the lines are read without it.
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


class WranglerDevError(RuntimeError):
    pass


@dataclass(frozen=True)
class RateLimit:
    """A [[ratelimits]] binding: `limit` requests per `period` seconds (10 or 60) per key."""

    name: str
    limit: int
    period: int
    namespace_id: str = "1001"

    def toml(self) -> str:
        return (f"[[ratelimits]]\nname = {_toml_str(self.name)}\nnamespace_id = {_toml_str(self.namespace_id)}\n"
                f"simple = {{ limit = {int(self.limit)}, period = {int(self.period)} }}\n")


def _toml_str(value: str) -> str:
    """A TOML basic string. JSON's string escapes are a subset of TOML's, except that TOML has
    no escape for '/', which json.dumps never writes."""
    return json.dumps(value)


class WranglerDev(LocalRuntime):
    """One `wrangler dev` process group running the built Worker on 127.0.0.1."""

    def __init__(
        self,
        config_json: Optional[str],
        *,
        text_bindings: Optional[Mapping[str, str]] = None,
        ratelimits: Iterable[RateLimit] = (),
        extra_toml: str = "",
        main_module: Path | str = MAIN_MODULE,
        compatibility_date: Optional[str] = None,
        startup_timeout: float = 60.0,
        test_scheduled: bool = False,
        persist_to: Optional[Path] = None,
        keep_dir: bool = bool(os.environ.get("PORTCULLIS_KEEP_WORKERD_DIR")),
    ) -> None:
        self.config_json = config_json
        self.text_bindings = dict(text_bindings or {})
        if CONFIG_BINDING in self.text_bindings:
            raise ValueError(f"pass {CONFIG_BINDING} as config_json, not in text_bindings")
        self.ratelimits = list(ratelimits)
        self.extra_toml = extra_toml
        self.main_module = Path(main_module)
        self.compatibility_date = compatibility_date or default_compatibility_date()
        self.startup_timeout = startup_timeout
        self.test_scheduled = test_scheduled
        self.persist_to = persist_to
        self.keep_dir = keep_dir

        self.dir: Optional[Path] = None
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.startup_s: Optional[float] = None  # from spawn to the first accepted connection
        self._stdout_path: Optional[Path] = None
        self._stderr_path: Optional[Path] = None
        self._final_stdout: Optional[str] = None
        self._final_stderr: Optional[str] = None
        self._finalizer: Optional[weakref.finalize] = None

    error = WranglerDevError
    name = "wrangler dev"

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> "WranglerDev":
        if self.proc is not None:
            raise WranglerDevError("already started")
        if not (REPO_ROOT / ".tools" / "node_modules" / "wrangler").is_dir():
            raise WranglerDevError("wrangler is not installed in .tools/: run scripts/setup")
        if not self.main_module.is_file():
            raise WranglerDevError(f"no Worker build at {self.main_module}: run scripts/build-worker")

        self.dir = Path(tempfile.mkdtemp(prefix="portcullis-wrangler-"))
        self._stdout_path = self.dir / "stdout.log"
        self._stderr_path = self.dir / "stderr.log"
        toml = self.dir / "wrangler.toml"
        toml.write_text(self._toml(), encoding="utf-8")
        env = dict(
            os.environ,
            HOME=str(self.dir),
            WRANGLER_SEND_METRICS="false",
            # Keep wrangler from fetching a `Request.cf` sample from the network at start-up.
            CLOUDFLARE_CF_FETCH_ENABLED="false",
            CI="true",
        )
        started = time.monotonic()
        try:
            with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [str(WRANGLER), "dev", "--config", str(toml), "--ip", "127.0.0.1", "--port", "0",
                     "--inspector-port", "0", "--persist-to", str(self.persist_to or self.dir / "state"),
                     "--show-interactive-dev-session=false"]
                    + (["--test-scheduled"] if self.test_scheduled else []),
                    cwd=self.dir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                )
            self._finalizer = weakref.finalize(self, _kill_group, self.proc)
            self.port = self._wait_for_ready(started)
            self._wait_for_port(started)
            self.startup_s = time.monotonic() - started
        except BaseException:
            self.stop()
            raise
        return self

    def _end(self, proc: subprocess.Popen) -> None:
        _kill_group(proc)

    # ----------------------------------------------------------------------------- logs

    def log_lines(self) -> list[str]:
        """The Worker's console lines so far: wrangler's stdout after its Ready line, without
        wrangler's own "[wrangler:...]" lines."""
        lines = self._lines(self._stdout_path, self._final_stdout)
        ready = next((i for i, line in enumerate(lines) if READY.search(line)), None)
        if ready is None:
            return []
        return [line for line in lines[ready + 1:] if not WRANGLER_LINE.match(line)]

    def output(self) -> str:
        """All of wrangler's output so far, stdout then stderr, for failure messages."""
        return "\n".join(self._lines(self._stdout_path, self._final_stdout)
                         + ["--- stderr ---"] + self.stderr_lines())

    # ----------------------------------------------------------------------------- internals

    def _toml(self) -> str:
        lines = [
            'name = "portcullis-e2e"',
            f"main = {_toml_str(str(self.main_module))}",
            f"compatibility_date = {_toml_str(self.compatibility_date)}",
        ]
        vars_ = dict(self.text_bindings)
        if self.config_json is not None:
            vars_[CONFIG_BINDING] = self.config_json
        if vars_:
            lines.append("[vars]")
            lines += [f"{_toml_str(k)} = {_toml_str(v)}" for k, v in sorted(vars_.items())]
        text = "\n".join(lines) + "\n"
        text += "".join(r.toml() for r in self.ratelimits)
        return text + self.extra_toml

    def _lines(self, path: Optional[Path], final: Optional[str]) -> list[str]:
        return [ANSI_COLOUR.sub("", line) for line in super()._lines(path, final)]

    def _failure(self, what: str) -> WranglerDevError:
        time.sleep(0.1)  # let a dying wrangler finish writing
        code = self.proc.poll() if self.proc is not None else None
        status = f"exited with {code}" if code is not None else "still running"
        where = (f"its directory is {self.dir}" if self.keep_dir
                 else "set PORTCULLIS_KEEP_WORKERD_DIR=1 to keep its directory")
        return WranglerDevError(f"{what} (wrangler dev {status}); {where}\n--- wrangler output (tail) ---\n"
                                + self.output()[-6000:])

    def _wait_for_ready(self, started: float) -> int:
        assert self.proc is not None
        deadline = started + self.startup_timeout
        while True:
            m = READY.search(ANSI_COLOUR.sub("", self._read(self._stdout_path)))
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise self._failure("wrangler dev exited during startup")
            if time.monotonic() >= deadline:
                raise self._failure(f"wrangler dev was not ready within {self.startup_timeout}s")
            time.sleep(0.1)

    def _wait_for_port(self, started: float) -> None:
        deadline = started + self.startup_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                if self.proc is None or self.proc.poll() is not None:
                    raise self._failure("wrangler dev exited during startup")
                if time.monotonic() >= deadline:
                    raise self._failure(f"port {self.port} did not answer within {self.startup_timeout}s")
                time.sleep(0.05)


def _kill_group(proc: subprocess.Popen) -> None:
    """End the process group that `proc` leads (started with start_new_session, so the group is
    wrangler's alone): SIGTERM to the group, then SIGKILL to what is left of it (workerd and
    esbuild may outlive wrangler's Node process) after at most 10 s.

    The leader is waited for without being reaped (WNOWAIT) until the SIGKILL is sent: while it
    is a zombie, its pid, which is the group's id, cannot be given to another process."""
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            time.sleep(0.05)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
