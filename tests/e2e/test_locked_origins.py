"""End-to-end: origins only the gateway can reach.

* Servers behind a fetcher binding (`{"binding": NAME}`): a workerd service binding to a loopback
  server stands in for a Workers VPC service (an origin with no public address); they take part
  in balancing, retries and ejection like URL servers, and the log names the binding.
* Mutual TLS (`mtls_certificate`): an origin on 127.0.0.1 that refuses every connection without
  a client certificate from its CA, reached through a workerd external service configured with
  the client's key pair, as an mTLS certificate binding would be.
"""

from __future__ import annotations

import datetime
import http.server
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import log_entries, send
from origin import Origin, free_port
from workerd import Workerd



# --- binding servers --------------------------------------------------------------------------

def binding_config(servers: list[dict], **pool) -> str:
    return json.dumps({
        "origins": {"users": {"servers": servers, "timeout_ms": 2000, **pool}},
        "routes": [{"name": "users", "path": "/users/{*rest}", "origin": "users"}],
    })


def test_a_binding_server_answers_and_the_log_names_the_binding():
    vpc = Origin("vpc").start()
    try:
        cfg = binding_config([{"binding": "USERS_VPC", "url": "http://users.internal/v1"}])
        with Workerd(cfg, service_bindings={"USERS_VPC": f"127.0.0.1:{vpc.port}"}) as wd:
            reply = send(wd.base_url, "GET", "/users/7?x=1")
            assert reply.status == 200, reply.body[:200]
            got = vpc.received[-1]
            assert (got.path, got.query) == ("/v1/users/7", "x=1")
            assert got.header("host") == "users.internal", "the url's host is sent through the binding"
            time.sleep(0.3)
            entry = [e for e in log_entries(wd) if e.get("route") == "users"][-1]
            assert entry["attempts"][0]["address"] == "binding:USERS_VPC"
            assert str(vpc.port) not in json.dumps(entry), "the log names the binding, not an address"
    finally:
        vpc.stop()


def test_binding_servers_balance_fail_over_and_eject_like_url_servers():
    live = Origin("live").start()
    dead_port = free_port()
    try:
        cfg = binding_config([{"binding": "DEAD"}, {"binding": "LIVE"}],
                             eject={"after_failures": 1, "for_ms": 60000})
        bindings = {"DEAD": f"127.0.0.1:{dead_port}", "LIVE": f"127.0.0.1:{live.port}"}
        with Workerd(cfg, service_bindings=bindings) as wd:
            for _ in range(6):
                reply = send(wd.base_url, "GET", "/users/1")
                assert reply.status == 200, reply.body[:200]
            time.sleep(0.3)
            attempts = [a for e in log_entries(wd) if e.get("route") == "users" for a in e["attempts"]]
            dead = [a for a in attempts if a["address"] == "binding:DEAD"]
            assert len(dead) == 1, attempts
            assert dead[0]["outcome"] == "connect_failed" and dead[0].get("ejected_for_ms") == 60000
            assert len(live.received) == 6
    finally:
        live.stop()


def test_a_binding_that_is_not_bound_is_config_invalid():
    cfg = binding_config([{"binding": "NOT_BOUND"}])
    with Workerd(cfg) as wd:
        reply = send(wd.base_url, "GET", "/users/1")
        assert reply.status == 500 and reply.json()["error"] == "config_invalid"
        assert "NOT_BOUND" not in reply.body.decode()
        time.sleep(0.3)
        entry = [e for e in log_entries(wd) if e.get("route") == "users"][-1]
        assert "NOT_BOUND" in entry["detail"]


# --- mutual TLS ---------------------------------------------------------------------------------

def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _cert(subject: str, key, issuer_name, issuer_key, *, ca=False, server=False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d: Path = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, _name("test CA"), ca_key, ca=True)
    out = {"dir": d, "ca": ca.public_bytes(serialization.Encoding.PEM).decode()}
    for who, server in (("server", True), ("client", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"{who}.test", key, ca.subject, ca_key, server=server)
        out[f"{who}_key"] = _pem_key(key)
        out[f"{who}_cert"] = cert.public_bytes(serialization.Encoding.PEM).decode()
        (d / f"{who}.pem").write_text(out[f"{who}_cert"] + out[f"{who}_key"])
    (d / "ca.pem").write_text(out["ca"])
    return out


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        peer = self.connection.getpeercert()
        body = json.dumps({"path": self.path, "client": dict(x[0] for x in peer["subject"])["commonName"]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def mtls_origin(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["dir"] / "server.pem")
    ctx.load_verify_locations(pki["dir"] / "ca.pem")
    ctx.verify_mode = ssl.CERT_REQUIRED  # no client certificate from the CA: no connection
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join(timeout=5)


def test_an_mtls_origin_refuses_direct_connections_and_answers_the_gateway(pki, mtls_origin):
    url = f"https://localhost:{mtls_origin}/hello"
    # Directly, with the server's CA trusted but no client certificate: refused.
    direct = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
        urllib.request.urlopen(url, context=direct, timeout=5).read()
    # Through the gateway, whose certificate binding presents the client certificate.
    cfg = json.dumps({
        "origins": {"locked": {"servers": [{"url": f"https://localhost:{mtls_origin}"}],
                               "mtls_certificate": "ORIGIN_CERT", "timeout_ms": 5000}},
        "routes": [{"name": "locked", "path": "/locked/{*rest}", "origin": "locked",
                    "rewrite": {"strip_prefix": "/locked"}}],
    })
    binding = {"address": f"127.0.0.1:{mtls_origin}", "cert": pki["client_cert"], "key": pki["client_key"],
               "ca": pki["ca"], "host": "localhost"}
    with Workerd(cfg, mtls_bindings={"ORIGIN_CERT": binding}) as wd:
        reply = send(wd.base_url, "GET", "/locked/hello")
        assert reply.status == 200, (reply.status, reply.body[:300], wd.output()[-2000:])
        assert reply.json() == {"path": "/hello", "client": "client.test"}
    # The same route without the certificate binding cannot reach it (no client certificate; and
    # the origin's private CA is not one the runtime's own fetch trusts).
    plain = json.loads(cfg)
    del plain["origins"]["locked"]["mtls_certificate"]
    with Workerd(json.dumps(plain)) as wd:
        reply = send(wd.base_url, "GET", "/locked/hello")
        assert reply.status == 502 and reply.json()["error"] == "origin_unavailable"
