"""Real clients through keyward to real TLS servers on loopback: the secret
is attached outside the client, placeholders are swapped, refusals are
clear, and the audit log records every decision."""

import json
import socket
import ssl
import subprocess
import threading

import httpx
import pytest
import requests

from conftest import policy_for
from kwtest import PLACEHOLDER, PLACEHOLDER2, SECRET, connect_head, open_tunnel


def curl(proxy, url, *args):
    r = subprocess.run(["curl", "-sS", "--max-time", "20", "-x", proxy.url, "--cacert", str(proxy.ca),
                        "-w", "\n%{http_code}", *args, url], capture_output=True, text=True)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body, r.stderr


def test_curl_https_bearer_injected(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream))
    code, body, _ = curl(p, f"https://api.test:{upstream.port}/api/repos?x=1",
                         "-H", f"Authorization: Bearer {PLACEHOLDER}")
    assert code == 200, body
    got = upstream.requests[-1]
    assert got.header("Authorization") == f"Bearer {SECRET}"
    assert got.target == "/api/repos?x=1"
    assert PLACEHOLDER not in got.head.decode()
    rec = p.requests()[-1]
    assert rec["decision"] == "allow" and rec["credential"] == "test" and rec["status"] == 200
    assert rec["path"] == "/api/repos" and rec["scheme"] == "https"


def test_first_tunnels_at_once(proxy_factory, upstream):
    # The tunnels' TLS context is made by the first CONNECT that needs it;
    # sixteen arriving together on two workers must all be served.
    p = proxy_factory(policy_for(upstream))
    start = threading.Barrier(16)
    results = []

    def one(i):
        start.wait()
        s = open_tunnel(p.port, "api.test", upstream.port, p.ca)
        try:
            s.sendall(f"GET /api/first/{i} HTTP/1.1\r\nHost: api.test:{upstream.port}\r\n"
                      f"Authorization: Bearer {PLACEHOLDER}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            results.append(data.split(b"\r\n", 1)[0])
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [b"HTTP/1.1 200 OK"] * 16
    got = [r for r in upstream.requests if r.target.startswith("/api/first/")]
    assert len(got) == 16
    assert all(r.header("Authorization") == f"Bearer {SECRET}" for r in got)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_tls_sessions_resume_in_new_tunnels(proxy_factory, upstream, version):
    # keyward resumes by tickets only (no session cache in memory): a
    # client that offers the session of its last tunnel skips the full
    # handshake in the next one, TLS 1.2 and 1.3 alike, and each resumed
    # tunnel still gets the credential.
    p = proxy_factory(policy_for(upstream))
    ctx = ssl.create_default_context(cafile=str(p.ca))
    ctx.minimum_version = ctx.maximum_version = version
    session, reused = None, []
    for i in range(3):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        assert connect_head(s, f"api.test:{upstream.port}").startswith(b"HTTP/1.1 200")
        t = ctx.wrap_socket(s, server_hostname="api.test", session=session)
        try:
            t.sendall(f"GET /api/resume/{i} HTTP/1.1\r\nHost: api.test:{upstream.port}\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := t.recv(65536):
                data += chunk
            assert data.startswith(b"HTTP/1.1 200"), data[:200]
            assert t.version() == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
            reused.append(t.session_reused)
            session = t.session  # TLS 1.3: the ticket came after the handshake
        finally:
            t.close()
    assert reused == [False, True, True]
    got = [r for r in upstream.requests if r.target.startswith("/api/resume/")]
    assert [r.header("Authorization") for r in got] == [f"Bearer {SECRET}"] * 3


def test_curl_without_placeholder_still_gets_credential(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream))
    code, _, _ = curl(p, f"https://api.test:{upstream.port}/api/x")
    assert code == 200
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRET}"


def test_client_authorization_is_replaced_not_forwarded(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream))
    code, _, _ = curl(p, f"https://api.test:{upstream.port}/api/x", "-H", "Authorization: Bearer client-own",
                      "-H", "Proxy-Authorization: Basic Zm9vOmJhcg==")
    assert code == 200
    got = upstream.requests[-1]
    assert [v for n, v in got.headers if n.lower() == "authorization"] == [f"Bearer {SECRET}"]
    assert got.header("Proxy-Authorization") is None


def test_plain_http_route(proxy_factory, plain_upstream):
    p = proxy_factory(policy_for(plain_upstream))
    code, _, _ = curl(p, f"http://api.test:{plain_upstream.port}/api/x")
    assert code == 200
    assert plain_upstream.requests[-1].header("Authorization") == f"Bearer {SECRET}"


def test_python_requests(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, inject="{header: X-Api-Key, value: 'key={secret}'}"))
    s = requests.Session()
    s.proxies = {"https": p.url, "http": p.url}
    s.verify = str(p.ca)
    r = s.post(f"https://api.test:{upstream.port}/api/items", json={"a": 1},
               headers={"X-Api-Key": PLACEHOLDER})
    assert r.status_code == 200, r.text
    assert upstream.requests[-1].header("X-Api-Key") == f"key={SECRET}"
    assert json.loads(upstream.requests[-1].body) == {"a": 1}
    r = s.get(f"https://api.test:{upstream.port}/elsewhere")
    assert r.status_code == 403
    assert r.json()["check"] == "path"


def test_httpx(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, inject="{query: api_key}"))
    with httpx.Client(proxies=p.url, verify=str(p.ca)) as c:
        r = c.get(f"https://api.test:{upstream.port}/api/q", params={"api_key": PLACEHOLDER, "b": "2"})
        assert r.status_code == 200, r.text
        r2 = c.get(f"https://api.test:{upstream.port}/api/q2")
        assert r2.status_code == 200
    targets = [q.target for q in upstream.requests]
    assert targets[0] == f"/api/q?b=2&api_key={SECRET}"
    assert targets[1] == f"/api/q2?api_key={SECRET}"


def test_basic_swap_keeps_user(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, inject="swap"))
    code, _, _ = curl(p, f"https://api.test:{upstream.port}/api/x", "-u", f"alice:{PLACEHOLDER}")
    assert code == 200
    import base64
    auth = upstream.requests[-1].header("Authorization")
    assert base64.b64decode(auth.split()[1]).decode() == f"alice:{SECRET}"


def test_denials_answer_json_and_are_audited(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, methods="[GET]"))
    base = f"https://api.test:{upstream.port}"
    code, body, _ = curl(p, f"{base}/api/x", "-X", "DELETE")
    assert code == 403 and json.loads(body)["check"] == "method"
    code, body, _ = curl(p, f"{base}/admin")
    assert code == 403 and json.loads(body)["check"] == "path"
    assert "hint" in json.loads(body)
    code, body, err = curl(p, "https://unlisted.example:443/")
    assert code == 403 or "403" in err
    reasons = [r["reason"] for r in p.requests() if r["decision"] == "deny"]
    assert reasons == ["method", "path", "host"]
    assert upstream.requests == []


def test_placeholder_to_other_destination_is_a_leak(proxy_factory, upstream):
    extra = f"""  - host: api.test
    port: {upstream.port}
    paths: ["/public/**"]
    upstream_ca: {upstream.ca_file}
    allow_private: true
"""
    p = proxy_factory(policy_for(upstream, extra_routes=extra))
    code, body, _ = curl(p, f"https://api.test:{upstream.port}/public/x?token={PLACEHOLDER}")
    assert code == 403 and json.loads(body)["check"] == "leak"
    code, body, _ = curl(p, f"https://api.test:{upstream.port}/public/x", "-u", f"u:{PLACEHOLDER}")
    assert code == 403 and json.loads(body)["check"] == "leak"
    # The other credential's placeholder on the test credential's route.
    code, body, _ = curl(p, f"https://api.test:{upstream.port}/api/x", "-H", f"X-Other: {PLACEHOLDER2}")
    assert code == 403 and json.loads(body)["check"] == "leak"
    assert upstream.requests == []
    assert [r["reason"] for r in p.requests()] == ["leak", "leak", "leak"]


def test_pooled_upstream_connections(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream))
    s = requests.Session()
    s.proxies = {"https": p.url}
    s.verify = str(p.ca)
    for i in range(5):
        assert s.get(f"https://api.test:{upstream.port}/api/{i}").status_code == 200
    assert len(upstream.requests) == 5
    assert upstream.connections <= 2  # one per worker at most


def test_upstream_certificate_is_verified(proxy_factory, upstream):
    # No upstream_ca: the test CA is not trusted, so the request must fail.
    text = policy_for(upstream).replace(f"\n    upstream_ca: {upstream.ca_file}", "")
    p = proxy_factory(text)
    code, body, _ = curl(p, f"https://api.test:{upstream.port}/api/x")
    assert code == 502
    assert "certificate" in json.loads(body)["message"]
    assert upstream.requests == []


def test_pool_survives_upstream_closing_idle_connections(proxy_factory, upstream):
    """An upstream that closes after each response without saying so: every
    request must still succeed (a stale pooled connection is retried once on
    a new one when the request has no body)."""
    p = proxy_factory(policy_for(upstream))
    s = requests.Session()
    s.proxies = {"https": p.url}
    for i in range(10):
        r = s.get(f"https://api.test:{upstream.port}/api/{i}/drop", verify=str(p.ca))
        assert r.status_code == 200, r.text
        assert r.text == "drop"
    assert len([q for q in upstream.requests if q.target.endswith("/drop")]) >= 10
    assert all(r["status"] == 200 for r in p.requests())


def test_request_retried_when_pooled_connection_dies(proxy_factory, upstream):
    """The upstream reads the request on a reused connection and closes it
    without an answer: keyward sends the request again on a new connection."""
    p = proxy_factory(policy_for(upstream), args=("--workers", "1", "--verbose"))
    s = requests.Session()
    s.proxies = {"https": p.url}
    for i in range(4):
        r = s.get(f"https://api.test:{upstream.port}/api/{i}/dropnext", verify=str(p.ca))
        assert r.status_code == 200, r.text
    assert upstream.dropped >= 3
    assert p.stderr.count("retrying GET") == upstream.dropped
