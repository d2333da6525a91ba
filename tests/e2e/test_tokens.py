"""Minted tokens: OAuth2 client_credentials and refresh_token grants and
GitHub App installation tokens, against a loopback TLS server that plays
both the token endpoint and the API. The server tracks every token it
issued and when it expires; the API refuses unknown and expired tokens and
records any expired token it was sent."""

import base64
import http.server
import json
import secrets
import signal
import ssl
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from kwtest import PLACEHOLDER

CLIENT_ID = "kwtest-client-id-51c2"
CLIENT_SECRET = "kwtest-CLIENT-SECRET-93be1f0a"
REFRESH0 = "kwtest-REFRESH-0-6ad3e9"
APP_ID = "4711"
INSTALLATION = "42"


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class TokenServer:
    """Token endpoint (/token), GitHub stand-in (/app/installations/ID/access_tokens)
    and API (/api/...), over TLS with the test certificate for api.test."""

    def __init__(self, certs, public_key=None):
        self.lock = threading.Lock()
        self.issued = {}          # access token -> expiry (time.time())
        self.issued_order = []
        self.notes = []
        self.refresh_valid = {REFRESH0}
        self.refresh_seen = []    # every refresh token ever issued or used
        self.fetches = 0
        self.mode = "ok"          # ok | 500 | badjson | slow
        self.expires_in = 3600
        self.scopes_ok = {"read write"}  # scope values the endpoint grants
        self.rotate = False
        self.expired_sent = []    # expired tokens the API received
        self.unknown_sent = []
        self.revoked = set()
        self.api_seen = []        # Authorization values the API received
        self.token_requests = []  # (path, headers, body) of token requests
        self.public_key = public_key
        self.jwt_claims = []
        self.gh_bodies = []
        self.all_secrets = [CLIENT_SECRET, REFRESH0]
        self.closed = False
        server = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, code, obj, raw=None):
                body = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                server.token_requests.append((self.path, dict(self.headers), body))
                if self.path.split("?")[0] == "/token":
                    return server.oauth(self, body)
                if self.path == f"/app/installations/{INSTALLATION}/access_tokens":
                    return server.github(self, body)
                if self.path.startswith("/api/"):
                    return server.api(self)
                self.reply(404, {"error": "not_found"})

            def do_GET(self):
                return server.api(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs / "server.pem", certs / "server.key")
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.ca_file = certs / "ca.pem"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def issue(self, prefix="kwtest-at"):
        tok = f"{prefix}-{len(self.issued_order)}-{secrets.token_hex(8)}"
        self.issued[tok] = time.time() + self.expires_in
        self.issued_order.append(tok)
        self.all_secrets.append(tok)
        return tok

    def failure(self, h):
        if self.mode == "500":
            h.reply(500, {"error": "server_error", "error_description": CLIENT_SECRET})
            return True
        if self.mode == "badjson":
            h.reply(200, None, raw=b"{not json")
            return True
        if self.mode == "slow":
            time.sleep(1.0)
        if self.mode == "trickle":  # a byte every 0.3 s, for longer than keyward waits
            for ch in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" * 4:
                try:
                    h.wfile.write(bytes([ch]))
                except OSError:
                    break
                time.sleep(0.3)
            return True
        return False

    def oauth(self, h, body):
        form = urllib.parse.parse_qs(body.decode())
        with self.lock:
            self.fetches += 1
            if self.failure(h):
                return
            auth = h.headers.get("Authorization", "")
            grant = form.get("grant_type", [""])[0]
            if grant == "client_credentials":
                want = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if auth != want:
                    return h.reply(401, {"error": "invalid_client"})
                if form.get("scope", [""])[0] not in self.scopes_ok:
                    return h.reply(400, {"error": "invalid_scope"})
            elif grant == "refresh_token":
                rt = form.get("refresh_token", [""])[0]
                if rt not in self.refresh_valid:
                    return h.reply(400, {"error": "invalid_grant"})
                if self.rotate:
                    self.refresh_valid.discard(rt)
            else:
                return h.reply(400, {"error": "unsupported_grant_type"})
            answer = {"access_token": self.issue(), "token_type": "Bearer", "expires_in": self.expires_in}
            if grant == "refresh_token" and self.rotate:
                new = f"kwtest-REFRESH-{len(self.refresh_seen) + 1}-{secrets.token_hex(6)}"
                self.refresh_valid.add(new)
                self.refresh_seen.append(new)
                self.all_secrets.append(new)
                answer["refresh_token"] = new
            h.reply(200, answer)

    def github(self, h, body):
        with self.lock:
            self.fetches += 1
            auth = h.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return h.reply(401, {"message": "no JWT"})
            jwt = auth[7:]
            head_b64, payload_b64, sig_b64 = jwt.split(".")
            try:
                self.public_key.verify(b64url_decode(sig_b64), f"{head_b64}.{payload_b64}".encode(),
                                       padding.PKCS1v15(), hashes.SHA256())
            except Exception:
                return h.reply(401, {"message": "bad signature"})
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(payload_b64))
            now = time.time()
            ok = (header.get("alg") == "RS256" and claims.get("iss") == APP_ID and
                  claims["iat"] <= now and claims["exp"] > now and claims["exp"] - now <= 600)
            self.jwt_claims.append(claims)
            if not ok:
                return h.reply(401, {"message": "bad claims"})
            self.gh_bodies.append(json.loads(body))
            tok = self.issue("ghs_kwtest")
            exp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.issued[tok]))
            h.reply(201, {"token": tok, "expires_at": exp, "permissions": {}, "repository_selection": "selected"})

    def api(self, h):
        if h.path.startswith("/open/notes"):  # a public page showing what /api/notes stored
            with self.lock:
                return h.reply(200, {"notes": list(self.notes)})
        if h.path.startswith("/open/refresh"):  # a careless debug page: the newest refresh token
            with self.lock:
                return h.reply(200, {"refresh": self.refresh_seen[-1:]})
        auth = h.headers.get("Authorization", "")
        tok = auth[7:] if auth.startswith("Bearer ") else auth
        with self.lock:
            self.api_seen.append(auth)
            exp = self.issued.get(tok)
            if tok in self.revoked:
                return h.reply(401, {"message": "revoked token"})
            if exp is None:
                self.unknown_sent.append(tok)
                return h.reply(401, {"message": "unknown token"})
            if time.time() >= exp:
                self.expired_sent.append(tok)
                return h.reply(401, {"message": "expired token"})
        if h.path.startswith("/api/echo"):
            return h.reply(200, {"you sent": auth})  # a debug endpoint that reflects the request
        if h.path.startswith("/api/notes"):  # stores a header, as a title or a note
            with self.lock:
                self.notes.append(h.headers.get("X-Note", ""))
        h.reply(200, {"path": h.path, "ok": True})

    def revoke_all(self):
        with self.lock:
            self.revoked.update(self.issued)


@pytest.fixture
def tokserver(certs):
    s = TokenServer(certs)
    yield s
    s.close()


def oauth_policy(ts, kind="oauth2_client_credentials", extra="", allow_private=True):
    parts = (f"""    client_id: {{from: env:KW_CLIENT_ID}}
    client_secret: {{from: env:KW_CLIENT_SECRET}}
    scopes: [read, write]""" if kind == "oauth2_client_credentials" else """    refresh_token: {from: env:KW_REFRESH}""")
    ap = "\n    allow_private: true" if allow_private else ""
    return f"""version: 1
credentials:
  crm:
    kind: {kind}
    token_url: https://api.test:{ts.port}/token
{parts}
    upstream_ca: {ts.ca_file}{ap}
    env: CRM_TOKEN
    placeholder: {PLACEHOLDER}{extra}
routes:
  - host: api.test
    port: {ts.port}
    paths: ["/api/**"]
    credential: crm
    upstream_ca: {ts.ca_file}
    allow_private: true
"""


ENV = {"KW_CLIENT_ID": CLIENT_ID, "KW_CLIENT_SECRET": CLIENT_SECRET, "KW_REFRESH": REFRESH0}


def session(p):
    s = requests.Session()
    s.proxies = {"https": p.url, "http": p.url}
    s.verify = str(p.ca)
    return s


def check_no_secrets(p, ts, responses=()):
    """No secret of the test (client secret, refresh tokens, access tokens) in
    keyward's output, audit log or anything the client received."""
    out = p.stop()
    blobs = {"stdout": out, "stderr": p.stderr, "audit": p.audit.read_text()}
    for i, r in enumerate(responses):
        blobs[f"response {i}"] = r.text + json.dumps(dict(r.headers))
    for name, blob in blobs.items():
        for s in ts.all_secrets:
            assert s not in blob, f"a secret was found in {name}"


def token_records(p):
    return [r for r in p.records() if r["event"] == "token"]


def test_client_credentials_flow(proxy_factory, tokserver):
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    rs = [s.get(f"https://api.test:{tokserver.port}/api/items", headers={"Authorization": f"Bearer {PLACEHOLDER}"})
          for _ in range(3)]
    assert [r.status_code for r in rs] == [200, 200, 200], rs[0].text
    # one token, fetched once, carried by all three
    assert tokserver.fetches == 1
    assert tokserver.api_seen == [f"Bearer {tokserver.issued_order[0]}"] * 3
    recs = token_records(p)
    assert len(recs) == 1 and recs[0]["decision"] == "allow" and recs[0]["credential"] == "crm"
    assert "expires in" in recs[0]["detail"]
    reqs = [r for r in p.requests() if r.get("path") == "/api/items"]
    assert len(reqs) == 3 and all(r["status"] == 200 for r in reqs)
    check_no_secrets(p, tokserver, rs)


def test_minted_token_echoed_back_is_redacted(proxy_factory, tokserver):
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    r = s.get(f"https://api.test:{tokserver.port}/api/echo", headers={"Authorization": f"Bearer {PLACEHOLDER}"})
    assert r.status_code == 200, r.text
    assert tokserver.api_seen == [f"Bearer {tokserver.issued_order[0]}"]
    assert r.json() == {"you sent": f"Bearer {PLACEHOLDER}"}
    assert p.requests()[-1]["redacted"] == 1
    check_no_secrets(p, tokserver, [r])


def test_minted_token_stored_and_read_back_on_an_open_route_is_redacted(proxy_factory, tokserver):
    # The placeholder in a header of the credentialed route is swapped for
    # the minted token; the service stores it and shows it on a route that
    # needs no credential. Responses from that host are scanned on every
    # route, for every credential's current minted token too.
    p = proxy_factory(oauth_policy(tokserver) + open_route(tokserver), env=ENV)
    s = session(p)
    base = f"https://api.test:{tokserver.port}"
    r1 = s.get(base + "/api/notes", headers={"Authorization": f"Bearer {PLACEHOLDER}", "X-Note": PLACEHOLDER})
    assert r1.status_code == 200, r1.text
    assert tokserver.notes == [tokserver.issued_order[0]]
    r2 = s.get(base + "/open/notes")
    assert r2.status_code == 200 and r2.json() == {"notes": [PLACEHOLDER]}, r2.text
    assert p.requests()[-1]["route"] == 1 and p.requests()[-1]["redacted"] == 1
    check_no_secrets(p, tokserver, [r1, r2])


def open_route(ts):
    return (f'  - host: api.test\n    port: {ts.port}\n    paths: ["/open/**"]\n'
            f'    upstream_ca: {ts.ca_file}\n    allow_private: true\n')


def test_replaced_token_read_back_is_redacted(proxy_factory, tokserver):
    # The service stored the first token; a 401 makes keyward fetch a
    # second one. The first is no longer current but has not expired (the
    # provider may still take it): a page showing it must not hand it out.
    p = proxy_factory(oauth_policy(tokserver) + open_route(tokserver), env=ENV)
    s = session(p)
    base = f"https://api.test:{tokserver.port}"
    r1 = s.get(base + "/api/notes", headers={"X-Note": PLACEHOLDER})
    assert r1.status_code == 200, r1.text
    tokserver.revoke_all()
    r2 = s.get(base + "/api/x")
    assert r2.status_code == 200 and tokserver.fetches == 2, r2.text
    assert tokserver.notes == [tokserver.issued_order[0]]
    r3 = s.get(base + "/open/notes")
    assert r3.status_code == 200 and r3.json() == {"notes": [PLACEHOLDER]}, r3.text
    assert p.requests()[-1]["redacted"] == 1
    check_no_secrets(p, tokserver, [r1, r2, r3])


def test_rotated_refresh_token_shown_by_the_service_is_redacted(proxy_factory, tokserver):
    # A provider that rotates refresh tokens hands keyward one that no
    # secret source holds; a response of that host that shows it is
    # scanned for it as for the access tokens.
    tokserver.rotate = True
    p = proxy_factory(oauth_policy(tokserver, kind="oauth2_refresh") + open_route(tokserver), env=ENV)
    s = session(p)
    base = f"https://api.test:{tokserver.port}"
    r1 = s.get(base + "/api/x")
    assert r1.status_code == 200, r1.text
    assert len(tokserver.refresh_seen) == 1
    r2 = s.get(base + "/open/refresh")
    assert r2.status_code == 200 and r2.json() == {"refresh": [PLACEHOLDER]}, r2.text
    check_no_secrets(p, tokserver, [r1, r2])


def test_expiry_gets_new_token_never_an_expired_one(proxy_factory, tokserver):
    tokserver.expires_in = 2
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    r1 = s.get(url)
    assert r1.status_code == 200
    time.sleep(2.5)
    r2 = s.get(url)
    assert r2.status_code == 200
    assert tokserver.fetches == 2
    assert tokserver.expired_sent == [] and tokserver.unknown_sent == []
    assert tokserver.api_seen == [f"Bearer {t}" for t in tokserver.issued_order]
    check_no_secrets(p, tokserver, [r1, r2])


def test_refreshed_in_the_background_before_expiry(proxy_factory, tokserver):
    """A token of 8 s is handed out until 6 s (margin 2 s); a request after
    4 s still gets it and starts the next fetch, so the request after that
    finds the new one ready."""
    tokserver.expires_in = 8
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    assert s.get(url).status_code == 200
    time.sleep(4.3)
    assert s.get(url).status_code == 200
    deadline = time.time() + 5
    while len(token_records(p)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert tokserver.fetches == 2
    assert s.get(url).status_code == 200
    t0, t1 = tokserver.issued_order
    assert tokserver.api_seen == [f"Bearer {t0}", f"Bearer {t0}", f"Bearer {t1}"]
    assert tokserver.expired_sent == []
    check_no_secrets(p, tokserver)


def test_401_refreshes_once_and_retries(proxy_factory, tokserver):
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    assert s.get(url).status_code == 200
    tokserver.revoke_all()  # the API now refuses the cached token
    r = s.get(url)
    assert r.status_code == 200, r.text  # retried with a new token
    assert tokserver.fetches == 2
    assert tokserver.api_seen[-2:] == [f"Bearer {tokserver.issued_order[0]}", f"Bearer {tokserver.issued_order[1]}"]
    # a body is not buffered for a retry: the 401 goes to the client, the next request gets a new token
    tokserver.revoke_all()
    r = s.post(url, data=b"payload")
    assert r.status_code == 401
    assert tokserver.fetches == 2
    r2 = s.get(url)
    assert r2.status_code == 200 and tokserver.fetches == 3
    assert tokserver.expired_sent == []
    check_no_secrets(p, tokserver, [r, r2])


def test_401_with_a_fresh_token_is_not_retried_twice(proxy_factory, tokserver):
    tokserver.expires_in = 3600
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    # every token is refused from the start: one retry, then the 401 is passed on
    orig = tokserver.issue

    def issue_revoked(prefix="kwtest-at"):
        t = orig(prefix)
        tokserver.revoked.add(t)
        return t
    tokserver.issue = issue_revoked
    r = s.get(url)
    assert r.status_code == 401
    assert tokserver.fetches == 2
    check_no_secrets(p, tokserver, [r])


def test_refresh_token_rotation(proxy_factory, tokserver):
    tokserver.rotate = True
    tokserver.expires_in = 1
    p = proxy_factory(oauth_policy(tokserver, kind="oauth2_refresh"), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    codes = []
    for _ in range(3):
        codes.append(s.get(url).status_code)
        time.sleep(1.1)
    assert codes == [200, 200, 200]
    assert tokserver.fetches == 3
    # each grant used the refresh token issued by the one before (old ones are revoked)
    used = [urllib.parse.parse_qs(b.decode())["refresh_token"][0] for (_, _, b) in tokserver.token_requests]
    assert used == [REFRESH0] + tokserver.refresh_seen[:2]
    rot = [r for r in token_records(p) if "rotated" in r["detail"]]
    assert len(rot) == 3
    check_no_secrets(p, tokserver)


def test_reload_that_narrows_scopes_fetches_a_new_token(proxy_factory, tokserver):
    # A token minted under the policy before a reload carries what that
    # policy asked for (scopes, permissions, the endpoint and client it came
    # from). A reload that narrows scopes: must not keep attaching the wider
    # token until it expires (an hour here, up to a year).
    tokserver.scopes_ok = {"read write", "read"}
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    assert s.get(url).status_code == 200
    assert tokserver.fetches == 1
    wide = tokserver.issued_order[0]
    assert tokserver.api_seen == [f"Bearer {wide}"]
    p.policy.write_text(oauth_policy(tokserver).replace("scopes: [read, write]", "scopes: [read]"))
    p.signal(signal.SIGHUP)
    wait_for_reload(p)
    r = s.get(url)
    assert r.status_code == 200, r.text
    assert tokserver.fetches == 2
    scope = urllib.parse.parse_qs(tokserver.token_requests[-1][2].decode())["scope"]
    assert scope == ["read"]
    assert tokserver.api_seen[-1] == f"Bearer {tokserver.issued_order[1]}" != f"Bearer {wide}"
    # a reload that changes nothing of the credential keeps its token
    p.policy.write_text(oauth_policy(tokserver).replace("scopes: [read, write]", "scopes: [read]") + "\n")
    p.signal(signal.SIGHUP)
    wait_for_reload(p, 2)
    assert s.get(url).status_code == 200
    assert tokserver.fetches == 2
    check_no_secrets(p, tokserver, [r])


def test_reload_that_narrows_scopes_keeps_a_rotated_refresh_token(proxy_factory, tokserver):
    # The provider rotates refresh tokens and revokes the old one: after a
    # reload that only narrows scopes (same endpoint, same client), the
    # next grant must use the newest refresh token, not the source's (long
    # revoked), while the access token is fetched anew.
    tokserver.rotate = True
    p = proxy_factory(oauth_policy(tokserver, kind="oauth2_refresh"), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    assert s.get(url).status_code == 200
    assert tokserver.fetches == 1
    p.policy.write_text(oauth_policy(tokserver, kind="oauth2_refresh", extra="\n    scopes: [read]"))
    p.signal(signal.SIGHUP)
    wait_for_reload(p)
    r = s.get(url)
    assert r.status_code == 200, r.text
    assert tokserver.fetches == 2
    used = [urllib.parse.parse_qs(b.decode())["refresh_token"][0] for (_, _, b) in tokserver.token_requests]
    assert used == [REFRESH0, tokserver.refresh_seen[0]]
    assert urllib.parse.parse_qs(tokserver.token_requests[-1][2].decode())["scope"] == ["read"]
    assert tokserver.api_seen[-1] == f"Bearer {tokserver.issued_order[1]}"
    # another token endpoint: the rotated refresh token is not sent there
    p.policy.write_text(oauth_policy(tokserver, kind="oauth2_refresh").replace("/token\n", "/token?v=2\n"))
    p.signal(signal.SIGHUP)
    wait_for_reload(p, 2)
    r = s.get(url)
    assert tokserver.token_requests[-1][0] == "/token?v=2"
    assert urllib.parse.parse_qs(tokserver.token_requests[-1][2].decode())["refresh_token"] == [REFRESH0]
    check_no_secrets(p, tokserver, [r])


def wait_for_reload(p, n=1):
    deadline = time.time() + 10
    while len([r for r in p.records() if r["event"] == "reload"]) < n:
        assert time.time() < deadline, "no reload record"
        time.sleep(0.05)
    assert [r for r in p.records() if r["event"] == "reload"][-1]["decision"] == "allow"


def test_trickling_token_endpoint_is_cut_at_the_fetch_deadline(proxy_factory, tokserver):
    # A byte every 0.3 s keeps each read short and the fetch long: the 10 s
    # bound holds for the whole fetch, and a stop does not wait for it.
    tokserver.mode = "trickle"
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    t0 = time.monotonic()
    r = session(p).get(f"https://api.test:{tokserver.port}/api/x", headers={"Authorization": f"Bearer {PLACEHOLDER}"},
                       timeout=30)
    assert r.status_code == 503 and "did not answer within 10 s" in r.json()["message"], r.text
    assert time.monotonic() - t0 < 14
    t1 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    p.proc.wait(timeout=10)
    assert time.monotonic() - t1 < 3


@pytest.mark.parametrize("mode,word", [("500", "answered 500 (server_error)"), ("badjson", "not a JSON object"),
                                       ("down", "cannot connect")])
def test_provider_failure_is_503_with_reason(proxy_factory, tokserver, mode, word):
    if mode == "down":
        tokserver.close()
    else:
        tokserver.mode = mode
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    r = s.get(f"https://api.test:{tokserver.port}/api/x")
    assert r.status_code == 503
    assert r.json()["check"] == "token"
    assert word in r.json()["message"], r.json()
    recs = token_records(p)
    assert recs and recs[-1]["decision"] == "error" and word in recs[-1]["detail"]
    req = [x for x in p.requests() if x.get("path") == "/api/x"][-1]
    assert req["status"] == 503 and req["reason"] == "token"
    check_no_secrets(p, tokserver, [r])


def test_private_token_endpoint_needs_allow_private(proxy_factory, tokserver):
    p = proxy_factory(oauth_policy(tokserver, allow_private=False), env=ENV)
    r = session(p).get(f"https://api.test:{tokserver.port}/api/x")
    assert r.status_code == 503
    assert "allow_private" in r.json()["message"]
    assert tokserver.fetches == 0
    check_no_secrets(p, tokserver, [r])


def test_token_endpoint_tls_is_verified(proxy_factory, tokserver):
    """Without the test CA for the endpoint (the route's upstream_ca does not
    apply to it), the endpoint's certificate is refused: nothing is sent."""
    pol = oauth_policy(tokserver).replace(f"    upstream_ca: {tokserver.ca_file}\n    allow_private: true\n    env:",
                                          "    allow_private: true\n    env:")
    assert pol.count("upstream_ca") == 1
    p = proxy_factory(pol, env=ENV)
    r = session(p).get(f"https://api.test:{tokserver.port}/api/x")
    assert r.status_code == 503
    assert "TLS with api.test failed" in r.json()["message"], r.json()
    assert tokserver.token_requests == []
    check_no_secrets(p, tokserver, [r])


def test_parallel_requests_share_one_fetch(proxy_factory, tokserver):
    tokserver.mode = "slow"  # the fetch takes a second: every request waits for it
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    url = f"https://api.test:{tokserver.port}/api/x"

    def one(_):
        return session(p).get(url).status_code
    with ThreadPoolExecutor(16) as ex:
        codes = list(ex.map(one, range(16)))
    assert codes == [200] * 16
    assert tokserver.fetches == 1
    assert len(token_records(p)) == 1
    check_no_secrets(p, tokserver)


def test_waiters_that_leave_do_not_disturb_the_others(proxy_factory, tokserver):
    # Requests wait on their worker for a token the fetch thread reports
    # back through the worker's mailbox; those that give up first are
    # taken off the queue, the rest get the token, and keyward goes on.
    tokserver.mode = "slow"
    p = proxy_factory(oauth_policy(tokserver), env=ENV)  # two workers
    url = f"https://api.test:{tokserver.port}/api/x"

    def one(i):
        try:
            return session(p).get(url, timeout=0.3 if i % 2 else 10).status_code
        except requests.exceptions.Timeout:
            return "left"
    with ThreadPoolExecutor(12) as ex:
        codes = list(ex.map(one, range(12)))
    assert codes == [200, "left"] * 6
    assert tokserver.fetches == 1
    assert session(p).get(url).status_code == 200
    assert p.proc.poll() is None
    check_no_secrets(p, tokserver)


def test_placeholder_stable_across_refreshes(proxy_factory, tokserver):
    """The sandbox's value never changes; what upstream sees does."""
    tokserver.expires_in = 1
    p = proxy_factory(oauth_policy(tokserver), env=ENV)
    s = session(p)
    url = f"https://api.test:{tokserver.port}/api/x"
    for _ in range(2):
        r = s.get(url, headers={"Authorization": f"Bearer {PLACEHOLDER}"})
        assert r.status_code == 200
        time.sleep(1.1)
    assert len(set(tokserver.api_seen)) == 2
    assert all(PLACEHOLDER not in a for a in tokserver.api_seen)
    check_no_secrets(p, tokserver)


def test_policy_check_shows_minted_credential(tmp_path, tokserver):
    import subprocess
    from conftest import KEYWARD
    pol = tmp_path / "p.yaml"
    pol.write_text(oauth_policy(tokserver))
    out = subprocess.run([KEYWARD, "policy", "check", str(pol)], capture_output=True, text=True, env=ENV)
    assert out.returncode == 0, out.stderr
    assert "crm" in out.stdout and CLIENT_SECRET not in out.stdout + out.stderr


# ---- GitHub App ----

@pytest.fixture
def app_key(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    f = tmp_path / "app.pem"
    f.write_bytes(pem)
    f.chmod(0o600)
    return key, f, pem.decode()


def github_policy(ts, key_file):
    return f"""version: 1
credentials:
  gh:
    kind: github_app
    app_id: {APP_ID}
    installation_id: {INSTALLATION}
    api_url: https://api.test:{ts.port}/
    repositories: [app, docs]
    permissions: {{contents: read, pull_requests: write}}
    private_key: {{from: file:{key_file}}}
    upstream_ca: {ts.ca_file}
    allow_private: true
    env: GH_TOKEN
    placeholder: ghs_kwPLACEHOLDER0000000000000000000000
routes:
  - host: api.test
    port: {ts.port}
    paths: ["/api/**"]
    credential: gh
    inject: bearer
    upstream_ca: {ts.ca_file}
    allow_private: true
"""


def test_github_app_installation_token(proxy_factory, certs, app_key):
    key, key_file, pem = app_key
    ts = TokenServer(certs, public_key=key.public_key())
    try:
        p = proxy_factory(github_policy(ts, key_file))
        s = session(p)
        rs = [s.get(f"https://api.test:{ts.port}/api/repos/acme/app",
                    headers={"Authorization": "Bearer ghs_kwPLACEHOLDER0000000000000000000000"}) for _ in range(2)]
        assert [r.status_code for r in rs] == [200, 200], rs[0].text
        assert ts.fetches == 1
        assert ts.gh_bodies == [{"repositories": ["app", "docs"],
                                 "permissions": {"contents": "read", "pull_requests": "write"}}]
        c = ts.jwt_claims[0]
        assert c["iss"] == APP_ID and c["exp"] - c["iat"] <= 600
        assert ts.api_seen == [f"Bearer {ts.issued_order[0]}"] * 2
        jwt = ts.token_requests[0][1]["Authorization"][7:]
        ts.all_secrets += [jwt, pem.splitlines()[1]]
        check_no_secrets(p, ts, rs)
    finally:
        ts.close()


def test_github_app_wrong_key_is_refused(proxy_factory, certs, app_key, tmp_path):
    key, key_file, _ = app_key
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ts = TokenServer(certs, public_key=other.public_key())  # the stand-in knows another key
    try:
        p = proxy_factory(github_policy(ts, key_file))
        r = session(p).get(f"https://api.test:{ts.port}/api/x")
        assert r.status_code == 503
        assert "answered 401" in r.json()["message"]
        check_no_secrets(p, ts, [r])
    finally:
        ts.close()


def test_sandbox_curl_sees_only_the_placeholder(sandbox_factory, tokserver):
    """keyward run: the sandbox's CRM_TOKEN is the placeholder; curl inside
    sends it and the API receives a minted token."""
    from conftest import userns_problem
    if userns_problem():
        pytest.skip(userns_problem())
    sb = sandbox_factory(oauth_policy(tokserver))
    url = f"https://api.test:{tokserver.port}/api/items"
    p = sb.run(["sh", "-c", 'echo "env=$CRM_TOKEN"; env | grep -c kwtest- || true; '
                f'curl -sS -w " %{{http_code}}" -H "Authorization: Bearer $CRM_TOKEN" {url}'],
               env=ENV)
    assert f"env={PLACEHOLDER}" in p.out, p.out + p.err
    assert "\n0\n" in p.out  # no made-up secret in the sandbox's environment
    assert p.out.rstrip().endswith("200"), p.out + p.err
    assert tokserver.api_seen == [f"Bearer {tokserver.issued_order[0]}"]
    for s in tokserver.all_secrets:
        assert s not in p.out + p.err and s not in sb.audit.read_text()
