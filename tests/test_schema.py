"""routes.schema.json and the parser agree: every valid config passes both, every invalid config
fails the parser (`portcullis check`, exit 1, naming the expected JSON path). Also the CLI's exit
codes and `explain` output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "tests" / "configs"
SCHEMA = json.loads((ROOT / "routes.schema.json").read_text())
BIN = ROOT / "target" / "debug" / "portcullis"


@pytest.fixture(scope="module", autouse=True)
def built_cli():
    subprocess.run(["cargo", "build", "-q", "--features", "cli", "--bin", "portcullis"], cwd=ROOT, check=True, timeout=600)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


VALID = sorted((CONFIGS / "valid").glob("*.json")) + [ROOT / "routes.json"]
EXPECTED = json.loads((CONFIGS / "invalid" / "expected.json").read_text())
INVALID = sorted(p for p in (CONFIGS / "invalid").glob("*.json") if p.stem != "expected")


def test_the_schema_is_a_valid_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_configs_pass_schema_and_parser(path: Path):
    jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(path.read_text()))
    r = cli("check", str(path))
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_the_e2e_config_passes_schema_and_parser(tmp_path):
    import sys
    sys.path.insert(0, str(ROOT / "tests" / "e2e"))
    from conftest import gateway_config

    class Fake:
        url = "http://127.0.0.1:1"
    cfg = gateway_config(Fake(), Fake())
    jsonschema.Draft202012Validator(SCHEMA).validate(cfg)
    f = tmp_path / "e2e.json"
    f.write_text(json.dumps(cfg))
    assert cli("check", str(f)).returncode == 0


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_configs_fail_the_parser_naming_the_path(path: Path):
    r = cli("check", str(path))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert EXPECTED[path.stem] + ":" in r.stderr, r.stderr


def test_every_invalid_fixture_has_an_expected_path():
    assert sorted(EXPECTED) == sorted(p.stem for p in INVALID)


def test_usage_errors_exit_2():
    assert cli().returncode == 2
    assert cli("check").returncode == 2
    assert cli("frobnicate", "routes.json").returncode == 2
    assert cli("check", str(ROOT / "no-such-file.json")).returncode == 2


def test_explain_prints_route_params_and_upstream():
    r = cli("explain", str(ROOT / "routes.json"), "GET", "https://api.example.com/api/users/7?x=1")
    assert r.returncode == 0, r.stderr
    assert "route:       user" in r.stdout
    assert "params:      id=7" in r.stdout
    assert "upstream:    GET http://127.0.0.1:9101/internal/v2/users/7?x=1" in r.stdout
    r = cli("explain", str(ROOT / "routes.json"), "PATCH", "https://api.example.com/api/users/7")
    assert r.returncode == 1
    assert "405 method_not_allowed" in r.stdout


def test_explain_verifies_an_hs256_token_with_the_secret_from_the_environment():
    import base64, hashlib, hmac, os, time
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    secret = "a-test-secret-for-explain-0123456789abcdef"
    now = int(time.time())
    head = b64(json.dumps({"alg": "HS256"}).encode())
    body = b64(json.dumps({"sub": "cli-user", "iss": "portcullis-dev", "aud": "api", "exp": now + 60,
                           "scope": "profile:read"}).encode())
    sig = b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    args = ["explain", str(ROOT / "routes.json"), "GET", "https://localhost/api/me",
            f"authorization: Bearer {head}.{body}.{sig}"]
    env = dict(os.environ, JWT_SECRET=secret)
    r = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "x-user-id: cli-user" in r.stdout, r.stdout
    env["JWT_SECRET"] = "another-secret-of-the-same-length-0123456789"
    r = subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "401 unauthorized" in r.stdout and "bad_signature" in r.stdout, r.stdout
