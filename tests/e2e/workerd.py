"""Run the built Portcullis Worker under a bare `workerd serve`, for end-to-end tests.

Standard library only. Typical use:

    from workerd import Workerd

    with Workerd(config_json) as wd:          # config_json: str, or None for no binding
        body = urllib.request.urlopen(wd.base_url + "/path").read()
        assert any("something" in line for line in wd.log_lines())

What it sets up, in a fresh temporary directory:

* a copy of scripts/build-worker's output (worker/build by default): every .js/.mjs file as an
  ES module, every .wasm file as a Wasm module, the main module first (index.js, the file
  wrangler.toml's `main` names);
* the text binding GATEWAY_CONFIG, embedded from config.json (absent when config_json is None),
  plus any further text bindings given;
* a `globalOutbound` network service allowing "public", "private" and "local" addresses, so
  that the Worker can fetch origins on http://127.0.0.1:PORT;
* a `cacheApiOutbound` service (cache_service.js beside this file), an in-memory backend for
  caches.default / caches.open(): without one, workerd throws "No Cache was configured";
* one HTTP socket on 127.0.0.1, port chosen by the kernel, reported by workerd itself on
  --control-fd once it listens.

The Worker's stdout (console.log/info/debug) and stderr (console.warn/error, and workerd's own
messages such as uncaught exceptions) go to files in that directory; log_lines() and
stderr_lines() return what was written so far, also after stop().
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Iterable, Mapping, Optional

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
BUILD_DIR = REPO_ROOT / "worker" / "build"
WORKERD_BIN = REPO_ROOT / ".tools" / "node_modules" / "@cloudflare" / "workerd-linux-64" / "bin" / "workerd"
CACHE_SERVICE_JS = HERE / "cache_service.js"
WRANGLER_TOML = REPO_ROOT / "wrangler.toml"

CONFIG_BINDING = "GATEWAY_CONFIG"
MAIN_MODULE_CANDIDATES = ("index.js",)


def default_compatibility_date() -> str:
    """The compatibility date of wrangler.toml, so that workerd runs what wrangler runs."""
    text = WRANGLER_TOML.read_text(encoding="utf-8")
    m = re.search(r'^\s*compatibility_date\s*=\s*"([0-9]{4}-[0-9]{2}-[0-9]{2})"', text, re.MULTILINE)
    if not m:
        raise RuntimeError(f"no compatibility_date in {WRANGLER_TOML}")
    return m.group(1)


def _capnp_str(value: str) -> str:
    """A Cap'n Proto text literal."""
    return json.dumps(value)


class WorkerdError(RuntimeError):
    pass


class LocalRuntime:
    """What a locally run Worker offers a test, whatever runs it (`Workerd` here, `WranglerDev`
    in wrangler_dev.py): a context manager, its address, its output. A subclass sets `error`,
    `port`, `proc`, `dir`, `keep_dir`, `_finalizer`, `_stdout_path`/`_stderr_path` and
    `_final_stdout`/`_final_stderr`, and defines `start()` and `_end(proc)`."""

    error: type = RuntimeError
    name = "the runtime"
    port: Optional[int] = None
    proc: Optional[subprocess.Popen] = None
    dir: Optional[Path] = None
    keep_dir = False
    _finalizer: Optional[weakref.finalize] = None
    _stdout_path: Optional[Path] = None
    _stderr_path: Optional[Path] = None
    _final_stdout: Optional[str] = None
    _final_stderr: Optional[str] = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise self.error(f"{self.name} is not running")
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def stop(self) -> None:
        """Ends the process (`_end`), keeps its output for `log_lines()` and removes its
        directory (unless `keep_dir`)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            self._end(proc)
            if self._finalizer is not None:
                self._finalizer.detach()
        if self.dir is not None:
            self._final_stdout = self._read(self._stdout_path)
            self._final_stderr = self._read(self._stderr_path)
            if not self.keep_dir:
                shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.port = None

    def log_lines(self) -> list[str]:
        """The Worker's console lines so far (console.log, console.info, console.debug)."""
        return self._lines(self._stdout_path, self._final_stdout)

    def stderr_lines(self) -> list[str]:
        """Lines on stderr so far: console.warn/console.error and the runtime's own messages."""
        return self._lines(self._stderr_path, self._final_stderr)

    def output(self) -> str:
        """What a failure message shows of the runtime's output."""
        return ("stdout:\n" + "\n".join(self.log_lines()[-50:]) + "\nstderr:\n"
                + "\n".join(self.stderr_lines()[-50:]))

    def wait_for_log(self, needle: str | re.Pattern, timeout: float = 5.0) -> str:
        """The first log line containing `needle` (a substring or a compiled regex), waiting
        for it up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.log_lines():
                if (needle.search(line) if isinstance(needle, re.Pattern) else needle in line):
                    return line
            if time.monotonic() >= deadline:
                raise self.error(f"no log line matching {needle!r} within {timeout}s; "
                                 + self.output()[-6000:])
            time.sleep(0.02)

    def _lines(self, path: Optional[Path], final: Optional[str]) -> list[str]:
        text = final if final is not None else self._read(path)
        return text.splitlines()

    @staticmethod
    def _read(path: Optional[Path]) -> str:
        if path is None:
            return ""
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""


class Workerd(LocalRuntime):
    """One `workerd serve` process running the built Worker on 127.0.0.1."""

    def __init__(
        self,
        config_json: Optional[str],
        *,
        text_bindings: Optional[Mapping[str, str]] = None,
        service_bindings: Optional[Mapping[str, str]] = None,
        mtls_bindings: Optional[Mapping[str, Mapping[str, str]]] = None,
        instances: int = 1,
        build_dir: Path | str = BUILD_DIR,
        compatibility_date: Optional[str] = None,
        compatibility_flags: Iterable[str] = (),
        startup_timeout: float = 20.0,
        workerd_bin: Path | str = WORKERD_BIN,
        keep_dir: bool = bool(os.environ.get("PORTCULLIS_KEEP_WORKERD_DIR")),
    ) -> None:
        self.config_json = config_json
        self.text_bindings = dict(text_bindings or {})
        # Fetcher bindings to a plain HTTP server ("127.0.0.1:PORT"): a service binding, as a
        # Workers VPC service or another Worker would be.
        self.service_bindings = dict(service_bindings or {})
        # Fetcher bindings that connect with TLS and a client certificate, as an mTLS
        # certificate binding does: name -> {"address", "cert", "key", "ca", "host"} (PEM text;
        # `host`: the name the server's certificate must carry).
        self.mtls_bindings = dict(mtls_bindings or {})
        # Isolates of the same Worker in one process, each on its own port, sharing the cache
        # service as the isolates of one Cloudflare location share its cache.
        self.instances = instances
        self.ports: list[int] = []
        if CONFIG_BINDING in self.text_bindings:
            raise ValueError(f"pass {CONFIG_BINDING} as config_json, not in text_bindings")
        self.build_dir = Path(build_dir)
        self.compatibility_date = compatibility_date or default_compatibility_date()
        self.compatibility_flags = list(compatibility_flags)
        self.startup_timeout = startup_timeout
        self.workerd_bin = Path(workerd_bin)
        self.keep_dir = keep_dir

        self.dir: Optional[Path] = None
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._stdout_path: Optional[Path] = None
        self._stderr_path: Optional[Path] = None
        self._final_stdout: Optional[str] = None
        self._final_stderr: Optional[str] = None
        self._finalizer: Optional[weakref.finalize] = None

    error = WorkerdError
    name = "workerd"

    # ----------------------------------------------------------------------------- lifecycle

    def start(self) -> "Workerd":
        if self.proc is not None:
            raise WorkerdError("already started")
        if not self.workerd_bin.is_file():
            raise WorkerdError(f"workerd not found at {self.workerd_bin}: run scripts/setup")
        if not self.build_dir.is_dir():
            raise WorkerdError(f"no Worker build at {self.build_dir}: run scripts/build-worker")

        self.dir = Path(tempfile.mkdtemp(prefix="portcullis-workerd-"))
        self._stdout_path = self.dir / "stdout.log"
        self._stderr_path = self.dir / "stderr.log"
        try:
            config_path = self._write_config()
        except BaseException:
            self.stop()
            raise

        control_r, control_w = os.pipe()
        try:
            with open(self._stdout_path, "wb") as out, open(self._stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [str(self.workerd_bin), "serve", str(config_path), f"--control-fd={control_w}"],
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(control_w,),
                    start_new_session=True,
                )
            os.close(control_w)
            control_w = -1
            self._finalizer = weakref.finalize(self, _kill, self.proc)
            self.ports = self._wait_for_listen(control_r)
            self.port = self.ports[0]
            self._wait_for_port()
        except BaseException:
            self.stop()
            raise
        finally:
            if control_w >= 0:
                os.close(control_w)
            os.close(control_r)
        return self

    def _end(self, proc: subprocess.Popen) -> None:
        _kill(proc)

    # ----------------------------------------------------------------------------- logs

    # ----------------------------------------------------------------------------- internals

    def _modules(self, bundle_dir: Path) -> list[str]:
        """capnp module entries for the copied build, main module first."""
        files = sorted(p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file())
        main = next((m for m in MAIN_MODULE_CANDIDATES if m in files), None)
        if main is None:
            raise WorkerdError(f"no main module ({' or '.join(MAIN_MODULE_CANDIDATES)}) in {self.build_dir}")
        entries = []
        for name in [main] + [f for f in files if f != main]:
            if name.endswith((".js", ".mjs")):
                kind = "esModule"
            elif name.endswith(".wasm"):
                kind = "wasm"
            else:
                continue  # package.json, .d.ts and such
            entries.append(f"(name = {_capnp_str(name)}, {kind} = embed {_capnp_str('bundle/' + name)})")
        return entries

    def _write_config(self) -> Path:
        assert self.dir is not None
        bundle_dir = self.dir / "bundle"
        shutil.copytree(self.build_dir, bundle_dir)
        shutil.copyfile(CACHE_SERVICE_JS, self.dir / "cache_service.js")

        bindings = []
        if self.config_json is not None:
            (self.dir / "config.json").write_text(self.config_json, encoding="utf-8")
            bindings.append(f'(name = {_capnp_str(CONFIG_BINDING)}, text = embed "config.json")')
        for i, (name, value) in enumerate(sorted(self.text_bindings.items())):
            fname = f"binding-{i}.txt"
            (self.dir / fname).write_text(value, encoding="utf-8")
            bindings.append(f"(name = {_capnp_str(name)}, text = embed {_capnp_str(fname)})")

        services = []
        for i, (name, address) in enumerate(sorted(self.service_bindings.items())):
            services.append(f'(name = "svc-{i}", external = (address = {_capnp_str(address)}, http = ()))')
            bindings.append(f'(name = {_capnp_str(name)}, service = "svc-{i}")')
        for i, (name, m) in enumerate(sorted(self.mtls_bindings.items())):
            tls = (f"tlsOptions = (keypair = (privateKey = {_capnp_str(m['key'])}, "
                   f"certificateChain = {_capnp_str(m['cert'])}), trustedCertificates = [{_capnp_str(m['ca'])}])")
            services.append(f'(name = "mtls-{i}", external = (address = {_capnp_str(m["address"])}, '
                            f'https = (options = (), {tls}, certificateHost = {_capnp_str(m["host"])})))')
            bindings.append(f'(name = {_capnp_str(name)}, service = "mtls-{i}")')
        extra_services = "".join(f"\n    {s}," for s in services)
        more_services = "".join(f'\n    (name = "main-{i}", worker = .gateway),' for i in range(1, self.instances))
        more_sockets = "".join(f'\n    (name = "http-{i}", address = "127.0.0.1:0", http = (), service = "main-{i}"),'
                               for i in range(1, self.instances))

        flags = ", ".join(_capnp_str(f) for f in self.compatibility_flags)
        modules = ",\n    ".join(self._modules(bundle_dir))
        date = _capnp_str(self.compatibility_date)
        config = f"""\
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .gateway),
    (name = "outbound", network = (allow = ["public", "private", "local"])),
    (name = "cache", worker = .cache),{extra_services}{more_services}
  ],
  sockets = [
    (name = "http", address = "127.0.0.1:0", http = (), service = "main"),{more_sockets}
  ],
);

const gateway :Workerd.Worker = (
  modules = [
    {modules}
  ],
  bindings = [{", ".join(bindings)}],
  compatibilityDate = {date},
  compatibilityFlags = [{flags}],
  globalOutbound = "outbound",
  cacheApiOutbound = "cache",
);

const cache :Workerd.Worker = (
  modules = [(name = "cache_service.js", esModule = embed "cache_service.js")],
  compatibilityDate = {date},
);
"""
        path = self.dir / "config.capnp"
        path.write_text(config, encoding="utf-8")
        return path

    def _failure(self, what: str) -> WorkerdError:
        time.sleep(0.1)  # let a dying workerd finish writing
        code = self.proc.poll() if self.proc is not None else None
        status = f"exited with {code}" if code is not None else "still running"
        where = (f"config in {self.dir}" if self.keep_dir
                 else "set PORTCULLIS_KEEP_WORKERD_DIR=1 to keep its config directory")
        return WorkerdError(
            f"{what} (workerd {status}); {where}\n--- workerd stderr ---\n"
            + self._read(self._stderr_path)[-8000:]
            + "\n--- workerd stdout ---\n"
            + self._read(self._stdout_path)[-4000:]
        )

    def _wait_for_listen(self, control_r: int) -> list[int]:
        """workerd writes {"event":"listen","socket":"http","port":N} on the control fd once the
        socket listens."""
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        buf = b""
        ports: dict[str, int] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"workerd did not listen within {self.startup_timeout}s")
            ready, _, _ = select.select([control_r], [], [], min(remaining, 0.2))
            if ready:
                chunk = os.read(control_r, 65536)
                if not chunk:
                    raise self._failure("workerd closed its control fd before listening")
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if msg.get("event") == "listen" and msg.get("socket", "").startswith("http"):
                        ports[msg["socket"]] = int(msg["port"])
                        if len(ports) == self.instances:
                            return [ports["http"]] + [ports[f"http-{i}"] for i in range(1, self.instances)]
            elif self.proc.poll() is not None:
                raise self._failure("workerd exited during startup")

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                    return
            except OSError:
                if self.proc is None or self.proc.poll() is not None:
                    raise self._failure("workerd exited during startup")
                if time.monotonic() >= deadline:
                    raise self._failure(f"port {self.port} did not answer within {self.startup_timeout}s")
                time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    """Stop one workerd process (by its own pid): SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass
