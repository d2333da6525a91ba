"""Every refusal keyward makes, driven with raw bytes over plain HTTP
(absolute-form) and inside CONNECT tunnels.

Each refused request is checked four ways: the status code, the "check"
field of keyward's JSON answer, the audit record (decision and reason), and
that the upstream received nothing at all. Allowed controls sit next to the
refusals so that a refusal cannot pass just because nothing works."""

import json
import signal
import socket
import ssl
import time
import urllib.parse

import pytest

from conftest import policy_for
from kwtest import (PLACEHOLDER2, PLACEHOLDER, SECRET, HttpConn, Upstream, connect_head, open_tunnel, raw_request,
                    status_of)

MODES = ["http", "tunnel"]


# ---- helpers ----

def body_json(resp):
    head, sep, body = resp.partition(b"\r\n\r\n")
    assert sep, resp
    return json.loads(body)


def head_request(method, target, host, headers=(), body=b"", version="HTTP/1.1"):
    """Request bytes; host=None leaves the Host header out."""
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += list(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Via:
    """One way of reaching the upstream through a proxy: plain absolute-form
    requests ("http") or origin-form requests inside a CONNECT tunnel."""

    def __init__(self, mode, proxy, up):
        self.mode = mode
        self.p = proxy
        self.up = up
        self.tunnel = mode == "tunnel"
        self.authority = f"{up.host}:{up.port}"

    def target(self, path):
        return path if self.tunnel else f"http://{self.authority}{path}"

    def send(self, data, tunnel_host=None, **kw):
        if self.tunnel:
            kw["tls_host"] = (tunnel_host or self.up.host, self.up.port)
            kw["ca"] = str(self.p.ca)
        return raw_request(self.p.port, data, **kw)

    def request(self, method, path, headers=(), body=b"", close=True, host="", version="HTTP/1.1"):
        hs = list(headers) + (["Connection: close"] if close else [])
        return self.send(head_request(method, self.target(path), self.authority if host == "" else host,
                                      hs, body, version))

    def raw(self, fmt):
        """Raw bytes with {T} (request target) and {H} (authority) filled in."""
        return self.send(fmt.replace(b"{T}", self.target("/api/x").encode())
                         .replace(b"{H}", self.authority.encode()))


def last_request_record(p):
    recs = p.requests()
    assert recs, "no audit record"
    return recs[-1]


def assert_refused(v, resp, status, check, reason=None, decision="deny"):
    """The answer, the JSON check, the audit record, and a silent upstream."""
    assert status_of(resp) == status, resp[:400]
    assert b"Connection: close" in resp.partition(b"\r\n\r\n")[0]
    assert body_json(resp)["check"] == check
    assert v.up.requests == []
    rec = last_request_record(v.p)
    assert rec["decision"] == decision, rec
    assert rec["reason"] == (reason or check), rec
    assert rec["status"] == status, rec
    return rec


def assert_allowed(v, resp, upstream_target):
    """Exactly one request reached the upstream, with this target, and the
    audit record shows the very path that was sent."""
    assert status_of(resp) == 200, resp[:400]
    assert len(v.up.requests) == 1, [r.head for r in v.up.requests]
    got = v.up.requests[0]
    assert got.target == upstream_target
    rec = last_request_record(v.p)
    assert rec["decision"] == "allow", rec
    assert rec["path"] == upstream_target.split("?")[0]
    return got


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


@pytest.fixture
def up(mode, certs):
    u = Upstream(tls=certs if mode == "tunnel" else None)
    yield u
    u.close()


@pytest.fixture
def via(mode, up, proxy_factory):
    """via(**policy_for kwargs) starts a proxy with a credentialed route."""
    def make(public=False, **kw):
        if public:
            kw["extra_routes"] = public_route(up)
        return Via(mode, proxy_factory(policy_for(up, **kw)), up)
    return make


def public_route(up):
    """An extra route on the same upstream without a credential."""
    scheme = "" if up.tls else "\n    scheme: http"
    ca = f"\n    upstream_ca: {up.ca_file}" if up.tls else ""
    return f"""  - host: {up.host}
    port: {up.port}{scheme}
    paths: ["/public/**"]{ca}
    allow_private: true
"""


# ---- host, port, method, path, scheme ----

def send_to(v, host, port, path="/api/x"):
    """A GET for host:port: absolute-form, or inside a CONNECT tunnel to it.
    keyward intercepts tunnels to any host (docs/proxy.md, "Refusals"),
    without DNS or dialling, and refuses the request inside."""
    a = f"{host}:{port}"
    if v.tunnel:
        return raw_request(v.p.port, head_request("GET", path, a), tls_host=(host, port), ca=str(v.p.ca))
    return raw_request(v.p.port, head_request("GET", f"http://{a}{path}", a))


def test_disallowed_host(via):
    v = via()
    resp = send_to(v, "other.test", 443)
    rec = assert_refused(v, resp, 403, "host")
    assert rec["host"] == "other.test" and rec["method"] == "GET"
    assert v.up.connections == 0


def test_disallowed_port(via):
    v = via()
    resp = send_to(v, v.up.host, v.up.port + 1)
    rec = assert_refused(v, resp, 403, "port")
    assert rec["port"] == v.up.port + 1


def test_disallowed_method(via):
    v = via(methods="[GET]")
    resp = v.request("DELETE", "/api/x")
    assert_refused(v, resp, 403, "method")


@pytest.mark.parametrize("path", ["/api/x", "/public/x"])
def test_trace_is_refused_without_methods(via, path):
    # No methods: on either route (every method allowed), yet TRACE, which
    # makes the upstream echo the request, never goes upstream: not with
    # the credential of /api/**, not on the uncredentialed /public/**.
    v = via(public=True)
    resp = v.request("TRACE", path)
    assert_refused(v, resp, 403, "method")
    assert "never forwards TRACE" in body_json(resp)["message"]
    assert v.up.connections == 0


def test_trace_refusal_on_a_methods_route_does_not_suggest_listing_it(via):
    v = via(methods="[GET]")
    resp = v.request("TRACE", "/api/x")
    assert_refused(v, resp, 403, "method")
    assert "never forwards TRACE" in body_json(resp)["hint"]


def test_disallowed_path(via):
    v = via()
    resp = v.request("GET", "/admin")
    rec = assert_refused(v, resp, 403, "path")
    assert rec["path"] == "/admin"


def test_plain_http_to_https_only_route(proxy_factory, upstream):
    v = Via("http", proxy_factory(policy_for(upstream)), upstream)
    resp = v.request("GET", "/api/x")
    rec = assert_refused(v, resp, 403, "scheme")
    assert rec["scheme"] == "http"


def test_connect_to_http_only_route(proxy_factory, plain_upstream):
    p = proxy_factory(policy_for(plain_upstream))
    v = Via("tunnel", p, plain_upstream)
    resp = send_to(v, plain_upstream.host, plain_upstream.port)
    rec = assert_refused(v, resp, 403, "scheme")
    assert rec["scheme"] == "https"
    assert plain_upstream.connections == 0


def test_https_absolute_form_outside_a_tunnel(proxy_factory, upstream):
    v = Via("http", proxy_factory(policy_for(upstream)), upstream)
    resp = v.send(head_request("GET", f"https://{v.authority}/api/x", v.authority))
    assert_refused(v, resp, 400, "malformed")


def test_origin_form_outside_a_tunnel(proxy_factory, plain_upstream):
    v = Via("http", proxy_factory(policy_for(plain_upstream)), plain_upstream)
    resp = v.send(head_request("GET", "/api/x", v.authority))
    assert_refused(v, resp, 400, "malformed")


def test_allowed_control(via):
    v = via()
    assert_allowed(v, v.request("GET", "/api/x?q=1"), "/api/x?q=1")


# ---- traversal and encoding tricks on a credentialed route (paths /api/**) ----

ESCAPES_ROUTE = [
    # (raw path, normalised path keyward checks and records)
    ("/api/../admin", "/admin"),
    ("/api/%2e%2e/admin", "/admin"),
    ("/api/%2E%2E/admin", "/admin"),
    ("/api/.%2e/admin", "/admin"),
    ("/api/x/../../admin", "/admin"),
    ("/api/./../admin", "/admin"),
    ("/api/..", "/"),
    ("/%61pi/../admin", "/admin"),
]


@pytest.mark.parametrize("raw,normalised", ESCAPES_ROUTE)
def test_traversal_out_of_route(via, raw, normalised):
    v = via()
    resp = v.request("GET", raw)
    rec = assert_refused(v, resp, 403, "path")
    assert rec["path"] == normalised


AMBIGUOUS = [
    "/api/..%2fadmin",          # encoded slash: an upstream that decodes it sees /api/../admin
    "/api/..%2Fadmin",
    "/api/%2e%2e%2fadmin",
    "/api/x%2F..%2F..%2Fadmin",
    "/api/%5c",                 # encoded backslash
    "/api/%5C..%5C..%5Cadmin",
    "/api/a\\b",                # raw backslash
    "/api/x%00",                # encoded NUL
    "/api/x%0a",                # encoded control
    "/api/x%7f",
    "/api/%252e%252e/admin",    # double encoding: an upstream that decodes twice sees ..
    "/api/x%25",
    "/api/x;jsessionid=1",      # matrix parameter
    "/api/x%2F../../y",         # flagged even though .. later removes the segment
]


@pytest.mark.parametrize("raw", AMBIGUOUS)
def test_ambiguous_path_on_credentialed_route(via, raw):
    v = via()
    resp = v.request("GET", raw)
    assert_refused(v, resp, 403, "ambiguous-path")


def test_ambiguous_path_allowed_without_credential(via):
    # The flags only matter where a secret would be attached: an
    # uncredentialed route forwards the normalised form unchanged.
    v = via(credential=False)
    got = assert_allowed(v, v.request("GET", "/api/a%2fb"), "/api/a%2Fb")
    assert got.header("Authorization") is None


MALFORMED_PATHS = [
    "/api/%zz",
    "/api/%4",
    "/api/%",
    "/api/%g0",
    "/api/x%",
]


@pytest.mark.parametrize("raw", MALFORMED_PATHS)
def test_invalid_escape_is_400(via, raw):
    v = via()
    resp = v.request("GET", raw)
    assert_refused(v, resp, 400, "malformed")


def test_raw_non_ascii_in_path_is_refused(via):
    v = via()
    resp = v.send(b"GET " + v.target("/api/\xc3\xa9").encode("latin-1") + b" HTTP/1.1\r\nHost: "
                  + v.authority.encode() + b"\r\n\r\n")
    assert_refused(v, resp, 400, "malformed")


def test_fragment_in_target_is_refused(via):
    v = via()
    resp = v.request("GET", "/api/x#frag")
    assert_refused(v, resp, 400, "malformed")


NORMALISED = [
    ("/api//x", "/api/x"),
    ("/api///x//y", "/api/x/y"),
    ("//api/x", "/api/x"),
    ("/api/./x", "/api/x"),
    ("/api/a/../x", "/api/x"),
    ("/api/%61%62c", "/api/abc"),
    ("/api/%7euser", "/api/~user"),
    ("/api/a%2db", "/api/a-b"),
    ("/api/caf%c3%a9", "/api/caf%C3%A9"),
    ("/api/x/", "/api/x/"),
    ("/api/x/.", "/api/x/"),
    ("/api/x/y/..", "/api/x/"),
    ("/api", "/api"),
]


@pytest.mark.parametrize("raw,normalised", NORMALISED)
def test_the_path_checked_is_the_path_sent(via, raw, normalised):
    v = via()
    got = assert_allowed(v, v.request("GET", raw + "?a=%2F..%2F"), normalised + "?a=%2F..%2F")
    assert got.header("Authorization") is not None


# ---- Host header and tunnel confusion ----

def test_host_header_other_than_tunnel(proxy_factory, upstream):
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.request("GET", "/api/x", host=f"other.test:{upstream.port}")
    assert_refused(v, resp, 403, "host-mismatch")


def test_host_header_without_the_tunnel_port(proxy_factory, upstream):
    # CONNECT api.test:PORT, Host: api.test means port 443: another origin.
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.request("GET", "/api/x", host="api.test")
    assert_refused(v, resp, 403, "host-mismatch")


def test_absolute_form_other_host_inside_tunnel(proxy_factory, upstream):
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.send(head_request("GET", "https://other.test/api/x", v.authority))
    assert_refused(v, resp, 403, "host-mismatch")


def test_absolute_form_other_port_inside_tunnel(proxy_factory, upstream):
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.send(head_request("GET", "https://api.test/api/x", v.authority))
    assert_refused(v, resp, 403, "host-mismatch")


def test_absolute_form_same_host_inside_tunnel_is_allowed(proxy_factory, upstream):
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.send(head_request("GET", f"https://{v.authority}/api/x", v.authority, ["Connection: close"]))
    assert_allowed(v, resp, "/api/x")


def test_plain_http_absolute_form_inside_tunnel(proxy_factory, upstream):
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.send(head_request("GET", f"http://{v.authority}/api/x", v.authority))
    assert_refused(v, resp, 400, "malformed")


def test_connect_inside_tunnel(proxy_factory, upstream):
    v = Via("tunnel", proxy_factory(policy_for(upstream)), upstream)
    resp = v.send(f"CONNECT {v.authority} HTTP/1.1\r\nHost: {v.authority}\r\n\r\n".encode())
    assert_refused(v, resp, 400, "malformed")


def test_two_host_headers(via):
    v = via()
    resp = v.request("GET", "/api/x", headers=[f"Host: {v.authority}"])
    assert_refused(v, resp, 403, "host-mismatch")


def test_two_host_headers_second_differs(via):
    v = via()
    resp = v.request("GET", "/api/x", headers=["Host: other.test"])
    assert_refused(v, resp, 403, "host-mismatch")


def test_absolute_form_with_other_host_header(proxy_factory, plain_upstream):
    v = Via("http", proxy_factory(policy_for(plain_upstream)), plain_upstream)
    resp = v.send(head_request("GET", v.target("/api/x"), "b.test"))
    assert_refused(v, resp, 403, "host-mismatch")


def test_missing_host_header_http11(via):
    v = via()
    resp = v.request("GET", "/api/x", host=None)
    assert_refused(v, resp, 403, "host-mismatch")


def test_userinfo_in_absolute_form(proxy_factory, plain_upstream):
    # http://api.test:PORT@evil.test/ : which host is meant depends on the reader.
    v = Via("http", proxy_factory(policy_for(plain_upstream)), plain_upstream)
    resp = v.send(head_request("GET", f"http://{v.authority}@evil.test/api/x", v.authority))
    assert_refused(v, resp, 400, "malformed")


def test_sni_differs_from_connect_target(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    a = f"api.test:{upstream.port}"
    resp = connect_head(s, a)
    assert status_of(resp) == 200, resp
    # No name check on our side: whatever fails, it is keyward that refuses.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        t = ctx.wrap_socket(s, server_hostname="other.test")
        # TLS 1.3: a client may finish its side before the server's alert.
        t.sendall(head_request("GET", "/api/x", a, ["Connection: close"]))
        if not t.recv(4096):
            raise ConnectionResetError("closed")
    s.close()
    deadline = time.time() + 5
    while time.time() < deadline:
        recs = [r for r in p.records() if r["event"] == "connect"]
        if recs:
            break
        time.sleep(0.05)
    assert recs, p.records()
    assert recs[-1]["decision"] == "deny" and recs[-1]["reason"] == "sni", recs[-1]
    assert upstream.requests == [] and upstream.connections == 0


# ---- placeholder leaks to an uncredentialed route ----

# ---- placeholder leaks to an uncredentialed route ----

def pct_all(s):
    return "".join("%%%02X" % b for b in s.encode())


@pytest.mark.parametrize("query", [
    "t=" + pct_all(PLACEHOLDER),                                  # every byte encoded
    "t=" + PLACEHOLDER[:5] + pct_all(PLACEHOLDER[5:9]) + PLACEHOLDER[9:],  # a few bytes encoded
    "t=" + urllib.parse.quote(PLACEHOLDER, safe="").lower().replace("_", "%5f"),  # lower-case hex
], ids=["all", "some", "lowerhex"])
def test_placeholder_percent_encoded_in_query(via, query):
    v = via(public=True)
    resp = v.request("GET", "/public/x?" + query)
    body = body_json(resp)
    rec = assert_refused(v, resp, 403, "leak")
    assert "percent-encoded" in body["message"], body
    # No route allowed it; the record names the credential that leaked.
    assert "route" not in rec and rec["credential"] == "test", rec


def test_placeholder_in_custom_header(via):
    v = via(public=True)
    resp = v.request("GET", "/public/x", headers=[f"X-Custom-Token: prefix-{PLACEHOLDER}-suffix"])
    rec = assert_refused(v, resp, 403, "leak")
    assert "header" in body_json(resp)["message"]
    assert rec["path"] == "/public/x"


@pytest.mark.parametrize("query", [
    "bad=%zz&t=" + pct_all(PLACEHOLDER),
    "t=" + pct_all(PLACEHOLDER) + "&bad=%",
], ids=["before", "after"])
def test_placeholder_percent_encoded_next_to_a_malformed_escape(via, query):
    # A malformed escape anywhere in the target must not switch off the
    # search of the decoded target.
    v = via(public=True)
    resp = v.request("GET", "/public/x?" + query)
    assert_refused(v, resp, 403, "leak")


def test_own_placeholder_with_a_refused_method_says_method(via):
    # The route for this host refuses the method only: its own credential's
    # placeholder is where it belongs, so the refusal names the method. The
    # placeholder of another credential is still a leak.
    v = via(methods="[GET]")
    resp = v.request("DELETE", "/api/x", headers=[f"Authorization: Bearer {PLACEHOLDER}"])
    assert_refused(v, resp, 403, "method")
    resp = v.request("GET", "/elsewhere", headers=[f"Authorization: Bearer {PLACEHOLDER}"])
    assert_refused(v, resp, 403, "path")
    resp = v.request("DELETE", "/api/x", headers=[f"Authorization: Bearer {PLACEHOLDER2}"])
    assert_refused(v, resp, 403, "leak")
    assert v.up.requests == []


def test_placeholder_in_header_name(via):
    v = via(public=True)
    resp = v.request("GET", "/public/x", headers=[f"X-{PLACEHOLDER}: 1"])
    assert_refused(v, resp, 403, "leak")


def wildcard_route(up):
    scheme = "" if up.tls else "\n    scheme: http"
    ca = f"\n    upstream_ca: {up.ca_file}" if up.tls else ""
    return f"""  - host: "*.api.test"
    port: {up.port}{scheme}{ca}
    allow_private: true
"""


def test_placeholder_in_host_name(mode, up, proxy_factory, request):
    # The placeholder as a DNS label of an uncredentialed wildcard route.
    # HTTP/1.0 needs no Host header, so inside a tunnel the name travels only
    # in the CONNECT target (and SNI), and would be sent to a resolver.
    leak_host = PLACEHOLDER.lower() + ".api.test"
    p = proxy_factory(policy_for(up, extra_routes=wildcard_route(up)),
                      resolve=("api.test:127.0.0.1", f"{leak_host}:127.0.0.1"))
    v = Via(mode, p, up)
    a = f"{leak_host}:{up.port}"
    if mode == "tunnel":
        resp = raw_request(p.port, b"GET /x HTTP/1.0\r\n\r\n", tls_host=(leak_host, up.port), ca=str(p.ca))
    else:
        resp = raw_request(p.port, f"GET http://{a}/x HTTP/1.0\r\n\r\n".encode())
    assert_refused(v, resp, 403, "leak")


def test_public_route_control(via):
    # The same requests without the placeholder go through, uncredentialed.
    v = via(public=True)
    got = assert_allowed(v, v.request("GET", "/public/x?t=abc", headers=["X-Custom-Token: abc"]),
                         "/public/x?t=abc")
    assert got.header("Authorization") is None


# ---- request smuggling ----

# Refused while the head is read: nothing reaches the upstream, not even a
# connection.
SMUGGLING_HEAD = {
    "cl-and-te": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
    "te-and-cl": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG",
    "cl-duplicate-same": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl-duplicate-different": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl-list": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5, 5\r\n\r\nhello",
    "cl-plus": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: +5\r\n\r\nhello",
    "cl-negative": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: -1\r\n\r\nhello",
    "cl-hex": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 0x5\r\n\r\nhello",
    "cl-overflow": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
    "te-chunked-identity": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-xchunked": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: xchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-identity": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: identity\r\n\r\nhello",
    "te-chunked-then-identity": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nTransfer-encoding: identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-space-before-colon": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding : chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-leading-space-line": b"POST {T} HTTP/1.1\r\nHost: {H}\r\n Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-vertical-tab": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\x0bchunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-folded": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "bare-lf": b"GET {T} HTTP/1.1\nHost: {H}\n\n",
    "bare-lf-one-line": b"GET {T} HTTP/1.1\r\nHost: {H}\nX-A: b\r\n\r\n",
    "bare-lf-end": b"GET {T} HTTP/1.1\r\nHost: {H}\r\n\n",
    "bare-cr": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A: b\rX-B: c\r\n\r\n",
    "bare-cr-request-line": b"GET {T} HTTP/1.1\rHost: {H}\r\n\r\n",
    "obs-fold": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A: b\r\n c\r\n\r\n",
    "obs-fold-tab": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A: b\r\n\tc\r\n\r\n",
    "nul-in-value": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A: b\x00c\r\n\r\n",
    "nul-in-name": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-\x00A: b\r\n\r\n",
    "space-before-colon": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A : b\r\n\r\n",
    "tab-before-colon": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A\t: b\r\n\r\n",
    "space-in-name": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX A: b\r\n\r\n",
    "no-colon": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A\r\n\r\n",
    "empty-name": b"GET {T} HTTP/1.1\r\nHost: {H}\r\n: b\r\n\r\n",
    "host-space-before-colon": b"GET {T} HTTP/1.1\r\nHost : {H}\r\n\r\n",
    "leading-empty-line": b"\r\nGET {T} HTTP/1.1\r\nHost: {H}\r\n\r\n",
    "del-in-value": b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX-A: b\x7fc\r\n\r\n",
    "te-in-http10": b"POST {T} HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "lower-case-version": b"GET {T} http/1.1\r\nHost: {H}\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING_HEAD))
def test_smuggling_head_refused(via, name):
    v = via()
    resp = v.raw(SMUGGLING_HEAD[name])
    assert_refused(v, resp, 400, "malformed")
    assert v.up.connections == 0


# Refused while the body is read. keyward streams: the head has been sent
# upstream when the bad chunk arrives, so the upstream may see a connection
# and the start of a request, but never a complete one; the client gets a
# 400 and both connections are closed.
SMUGGLING_BODY = {
    "bad-chunk-size": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    "chunk-size-negative": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "chunk-size-space": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5 5\r\nhello\r\n0\r\n\r\n",
    "chunk-data-too-long": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
    "chunk-bare-lf": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING_BODY))
def test_smuggling_body_refused(via, name):
    v = via()
    resp = v.raw(SMUGGLING_BODY[name])
    assert_refused(v, resp, 400, "malformed")
    time.sleep(0.2)
    assert v.up.requests == []


# Forms keyward legitimately accepts; the upstream receives exactly one
# request, framed by keyward itself, so it cannot read it differently.
ACCEPTED_FRAMING = {
    # OWS around the value is not part of it (RFC 9110 5.5).
    "te-extra-ows": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:   chunked  \r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "te-tab-ows": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding:\tchunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # Transfer codings are case-insensitive (RFC 9112 7).
    "te-upper-case": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: CHUNKED\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    # Extensions and trailers are dropped: keyward re-chunks what it parsed.
    "chunk-ext-trailer": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "cl-plain": b"POST {T} HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
}


@pytest.mark.parametrize("name", list(ACCEPTED_FRAMING))
def test_accepted_framing_is_unambiguous(via, name):
    v = via()
    resp = v.raw(ACCEPTED_FRAMING[name])
    got = assert_allowed(v, resp, "/api/x")
    assert got.body == b"hello"
    te = [x for n, x in got.headers if n.lower() == "transfer-encoding"]
    cl = [x for n, x in got.headers if n.lower() == "content-length"]
    if name.startswith("cl"):
        assert te == [] and cl == ["5"]
    else:
        # exactly one framing header, keyward's own spelling
        assert te == ["chunked"] and cl == []
        assert got.head.count(b"\r\n") >= 2 and b"x=y" not in got.head and b"X-Trailer" not in got.head


def test_extra_space_in_request_line_is_rewritten(via):
    # llhttp accepts "GET  /x HTTP/1.1" (RFC 9112 3 lets a recipient split on
    # whitespace). That is harmless here: keyward writes its own request
    # line, so the upstream receives exactly one, single-spaced.
    v = via()
    resp = v.raw(b"GET  {T} HTTP/1.1\r\nHost: {H}\r\nConnection: close\r\n\r\n")
    got = assert_allowed(v, resp, "/api/x")
    assert got.head.startswith(b"GET /api/x HTTP/1.1\r\n")


def test_request_in_body_is_only_body(via):
    inner = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    v = via()
    data = (f"POST {v.target('/api/x')} HTTP/1.1\r\nHost: {v.authority}\r\nContent-Length: {len(inner)}\r\n"
            f"Connection: close\r\n\r\n").encode() + inner
    got = assert_allowed(v, v.send(data), "/api/x")
    assert got.body == inner


def test_pipelined_requests_are_each_checked(via):
    v = via()
    first = head_request("GET", v.target("/api/x"), v.authority)
    second = head_request("GET", v.target("/admin"), v.authority)
    resp = v.send(first + second)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:300]
    assert resp.count(b"HTTP/1.1 ") == 2
    second_resp = resp[resp.index(b"HTTP/1.1 ", 5):]
    assert status_of(second_resp) == 403
    assert body_json(second_resp)["check"] == "path"
    assert [r.target for r in v.up.requests] == ["/api/x"]
    recs = v.p.requests()
    assert [(r["decision"], r.get("reason"), r["path"]) for r in recs[-2:]] == [
        ("allow", None, "/api/x"), ("deny", "path", "/admin")]


# ---- sizes and versions ----

def test_oversized_head_is_431(via):
    v = via()
    start = head_request("GET", v.target("/api/x"), v.authority)[:-2] + b"X-Big: "
    # Exactly one byte over the limit and no blank line: keyward reads all
    # of it, so its close cannot turn into a reset that eats the answer.
    data = start + b"a" * (65537 - len(start))
    assert len(data) == 65537
    resp = v.send(data)
    assert_refused(v, resp, 431, "limit")
    assert v.up.connections == 0


def test_head_at_the_limit_is_allowed(via):
    v = via()
    start = head_request("GET", v.target("/api/x"), v.authority, ["Connection: close"])[:-2] + b"X-Big: "
    data = start + b"a" * (65536 - len(start) - 4) + b"\r\n\r\n"
    assert len(data) == 65536
    assert_allowed(v, v.send(data), "/api/x")


def test_too_many_headers_is_431(via):
    v = via()
    hs = [f"X-H{i}: v" for i in range(100)]  # plus Host: 101
    resp = v.send(head_request("GET", v.target("/api/x"), v.authority, hs))
    assert_refused(v, resp, 431, "limit")
    assert v.up.connections == 0


def test_hundred_headers_are_allowed(via):
    v = via()
    hs = [f"X-H{i}: v" for i in range(98)] + ["Connection: close"]  # plus Host: 100
    got = assert_allowed(v, v.send(head_request("GET", v.target("/api/x"), v.authority, hs)), "/api/x")
    assert got.header("X-H97") == "v"


def test_http10_is_allowed(via):
    v = via()
    resp = v.send(f"GET {v.target('/api/x')} HTTP/1.0\r\n\r\n".encode())
    got = assert_allowed(v, resp, "/api/x")
    assert got.version == "HTTP/1.1"
    assert got.header("Host") == v.authority


def test_http10_with_host_is_allowed(via):
    v = via()
    resp = v.send(head_request("GET", v.target("/api/x"), v.authority, version="HTTP/1.0"))
    assert_allowed(v, resp, "/api/x")


def test_http09_is_refused(via):
    v = via()
    resp = v.send(f"GET {v.target('/api/x')}\r\n\r\n".encode())
    assert_refused(v, resp, 400, "malformed")
    assert v.up.connections == 0


def test_http09_without_blank_line_times_out(mode, up, proxy_factory):
    # A real 0.9 request is one line: keyward waits for the rest of a head
    # and gives up at header_timeout, upstream untouched.
    v = Via(mode, proxy_factory(policy_for(up) + "limits:\n  header_timeout: 500ms\n"), up)
    resp = v.send(f"GET {v.target('/api/x')}\r\n".encode())
    assert_refused(v, resp, 408, "timeout")
    assert v.up.connections == 0


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/3.0", "HTTP/1.10", "HTTP/01.1", "HTTP/1"])
def test_other_http_versions_are_refused(via, version):
    v = via()
    resp = v.send(head_request("GET", v.target("/api/x"), v.authority, version=version))
    assert_refused(v, resp, 400, "malformed")


# ---- private addresses ----

def test_private_address_needs_allow_private(mode, up, proxy_factory):
    # api.test is pinned to 127.0.0.1 (conftest's --resolve); the route
    # names a host, not an address, and does not say allow_private.
    text = policy_for(up).replace("\n    allow_private: true", "")
    assert "allow_private" not in text
    v = Via(mode, proxy_factory(text), up)
    resp = v.request("GET", "/api/x")
    rec = assert_refused(v, resp, 403, "private-address")
    assert f"127.0.0.1:{up.port}" in body_json(resp)["message"]  # the port the route names, not 0
    assert rec["path"] == "/api/x"
    time.sleep(0.1)
    assert up.connections == 0


def test_metadata_address_without_route(via):
    v = via()
    resp = send_to(v, "169.254.169.254", 443 if v.tunnel else 80, "/latest/meta-data/")
    rec = assert_refused(v, resp, 403, "host")
    assert rec["host"] == "169.254.169.254"


# Other spellings of loopback and metadata hosts (plain http, no route for them).
ODD_HOSTS = [
    ("127.1", 400, "malformed"),
    ("0x7f.0.0.1", 400, "malformed"),
    ("2130706433", 400, "malformed"),
    ("0177.0.0.1", 400, "malformed"),
    ("169.254.169.254.", 403, "host"),
    ("localhost", 403, "host"),
    ("[::1]", 403, "host"),
    ("[::ffff:127.0.0.1]", 403, "host"),
    ("api.test@127.0.0.1", 400, "malformed"),
]


@pytest.mark.parametrize("host,status,check", ODD_HOSTS)
def test_odd_hosts(proxy_factory, plain_upstream, host, status, check):
    v = Via("http", proxy_factory(policy_for(plain_upstream)), plain_upstream)
    hp = f"{host}:{plain_upstream.port}"
    resp = v.send(head_request("GET", f"http://{hp}/api/x", hp))
    assert_refused(v, resp, status, check)
    assert plain_upstream.connections == 0


def test_route_for_loopback_address_works(mode, up, proxy_factory):
    # A route that names 127.0.0.1 allows it without allow_private.
    text = policy_for(up).replace("\n    allow_private: true", "").replace(
        f"host: {up.host}", "host: 127.0.0.1")
    p = proxy_factory(text)
    a = f"127.0.0.1:{up.port}"
    req = head_request("GET", "/api/x" if mode == "tunnel" else f"http://{a}/api/x", a, ["Connection: close"])
    if mode == "tunnel":
        resp = raw_request(p.port, req, tls_host=("127.0.0.1", up.port), ca=str(p.ca))
    else:
        resp = raw_request(p.port, req)
    assert status_of(resp) == 200, resp[:300]
    assert [r.target for r in up.requests] == ["/api/x"]
    rec = p.requests()[-1]
    assert rec["decision"] == "allow" and rec["host"] == "127.0.0.1"


def test_names_under_localhost_are_loopback_without_dns(proxy_factory, plain_upstream):
    # A route for *.localhost implies allow_private (RFC 6761: loopback
    # names), so whatever address a lookup gave would be dialled: a DNS
    # answer for such a name (a search domain appended, a resolver that
    # forwards it) could name the metadata service or the local network.
    # keyward asks no resolver: the names are 127.0.0.1 and ::1. Without
    # that, foo.localhost went to DNS (here: "cannot resolve", 502).
    text = policy_for(plain_upstream).replace(f"host: {plain_upstream.host}", 'host: "*.localhost"')
    assert "*.localhost" in text
    p = proxy_factory(text, resolve=())
    v = Via("http", p, plain_upstream)
    a = f"foo.localhost:{plain_upstream.port}"
    resp = v.send(head_request("GET", f"http://{a}/api/x", a, ["Connection: close"]))
    assert status_of(resp) == 200, resp[:300]
    assert [r.target for r in plain_upstream.requests] == ["/api/x"]
    rec = p.requests()[-1]
    assert rec["decision"] == "allow" and rec["host"] == "foo.localhost"


# ---- the upstream connection pool keeps to the policy ----

def keep_alive_conn(mode, p, up):
    """One client connection to the upstream through p: plain (absolute-form
    requests) or a CONNECT tunnel; returns (HttpConn, target for a path)."""
    if mode == "tunnel":
        return HttpConn(open_tunnel(p.port, up.host, up.port, p.ca)), lambda path: path
    s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
    return HttpConn(s), lambda path: f"http://{up.host}:{up.port}{path}"


def get(conn, target, up, headers=()):
    conn.send(head_request("GET", target, f"{up.host}:{up.port}", headers))
    return conn.read_response()


def test_pooled_private_connection_is_not_reused_by_a_route_without_allow_private(mode, up, proxy_factory):
    # Two routes to the same host (pinned to 127.0.0.1): /public/** may
    # reach private addresses, the credentialed /api/** may not. The first
    # leaves a connection to 127.0.0.1 in the pool; the second must not
    # send its credential over it.
    text = policy_for(up, extra_routes=public_route(up)).replace("\n    allow_private: true", "", 1)
    assert text.count("allow_private") == 1
    p = proxy_factory(text, args=("--workers", "1"))
    c, t = keep_alive_conn(mode, p, up)
    try:
        st, _, _, _ = get(c, t("/public/x"), up)
        assert st == 200
        st, _, body, raw = get(c, t("/api/x"), up)
    finally:
        c.close()
    assert st == 403, raw + body
    assert json.loads(body)["check"] == "private-address"
    assert [r.target for r in up.requests] == ["/public/x"]
    assert all(SECRET not in r.head.decode("latin-1") for r in up.requests)
    assert up.connections == 1
    rec = last_request_record(p)
    assert rec["decision"] == "deny" and rec["reason"] == "private-address", rec


def test_reload_retires_pooled_connections_of_the_old_policy(mode, up, proxy_factory):
    # allow_private taken away by a reload: neither an idle pooled
    # connection nor one busy during the reload serves a request after it.
    p = proxy_factory(policy_for(up), args=("--workers", "1"))
    reloads = lambda: [r for r in p.records() if r["event"] == "reload"]

    def reload(text):
        n = len(reloads())
        p.policy.write_text(text)
        p.signal(signal.SIGHUP)
        deadline = time.time() + 10
        while len(reloads()) == n:
            assert time.time() < deadline, "no reload record"
            time.sleep(0.05)
        assert reloads()[-1]["decision"] == "allow", reloads()[-1]

    # idle: the connection is in the pool when the policy changes
    c, t = keep_alive_conn(mode, p, up)
    assert get(c, t("/api/idle"), up)[0] == 200
    c.close()
    reload(policy_for(up).replace("\n    allow_private: true", ""))
    c, t = keep_alive_conn(mode, p, up)
    st, _, body, _ = get(c, t("/api/after-idle"), up)
    c.close()
    assert st == 403 and json.loads(body)["check"] == "private-address", body
    assert [r.target for r in up.requests] == ["/api/idle"]

    # busy: a request of the old policy is in flight during the reload; its
    # connection goes back to no pool afterwards
    reload(policy_for(up))
    c, t = keep_alive_conn(mode, p, up)
    c.send(head_request("GET", t("/api/stall/1.5"), f"{up.host}:{up.port}"))
    time.sleep(0.3)
    reload(policy_for(up).replace("\n    allow_private: true", ""))
    assert c.read_response()[0] == 200  # started under the old policy
    c2, t2 = keep_alive_conn(mode, p, up)
    st, _, body, _ = get(c2, t2("/api/after-busy"), up)
    c.close()
    c2.close()
    assert st == 403 and json.loads(body)["check"] == "private-address", body
    assert [r.target for r in up.requests] == ["/api/idle", "/api/stall/1.5"]


class LateBodyUpstream(Upstream):
    """Answers HEAD /api/head-late with a head announcing a 46-byte body,
    then sends those 46 bytes 0.3 s later: a whole response of its own."""

    def _respond(self, c, f, req):
        if req.method == "HEAD" and req.target == "/api/head-late":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 46\r\n\r\n")
            time.sleep(0.3)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nA-PRIVATE")
            return True
        return super()._respond(c, f, req)


def test_head_response_announcing_a_body_is_not_pooled(proxy_factory):
    up = LateBodyUpstream()
    try:
        p = proxy_factory(policy_for(up), args=("--workers", "1"))
        a, t = keep_alive_conn("http", p, up)
        a.send(head_request("HEAD", t("/api/head-late"), f"{up.host}:{up.port}", ["X-Client: A"]))
        st, hd, _, _ = a.read_response("HEAD")
        assert st == 200 and hd["content-length"] == "46"
        b, _ = keep_alive_conn("http", p, up)  # another client, at once
        st, _, body, _ = get(b, t("/api/x"), up, ["X-Client: B"])
        a.close()
        b.close()
    finally:
        up.close()
    assert st == 200 and b"A-PRIVATE" not in body, body
    assert json.loads(body)["target"] == "/api/x"
    assert up.connections == 2


def test_pooled_connections_stay_with_their_listener(proxy_factory, plain_upstream):
    # Two listeners of one `keyward proxy` (two sandboxes): a connection
    # one of them left in the pool is not handed to the other.
    up = plain_upstream
    p = proxy_factory(policy_for(up), args=("--workers", "1", "--listen", "127.0.0.1:0"))
    deadline = time.time() + 10
    while len(ports := [int(l.rsplit(":", 1)[1]) for l in p.stderr.splitlines()
                        if "listening on 127.0.0.1:" in l]) < 2:
        assert time.time() < deadline, p.stderr
        time.sleep(0.02)
    target = f"http://{up.host}:{up.port}"
    for i, port in enumerate(ports + ports):
        c = HttpConn(socket.create_connection(("127.0.0.1", port), timeout=10))
        c.send(head_request("GET", f"{target}/api/{i}", f"{up.host}:{up.port}"))
        assert c.read_response()[0] == 200
        c.close()
    assert [r.target for r in up.requests] == ["/api/0", "/api/1", "/api/2", "/api/3"]
    assert up.connections == 2  # one per listener, each reused once
    assert {r["listener"] for r in p.requests()} == {f"127.0.0.1:{port}" for port in ports}


# ---- no DNS for unlisted names ----

def test_unlisted_name_is_refused_without_resolving(mode, up, proxy_factory):
    p = proxy_factory(policy_for(up), resolve=())
    v = Via(mode, p, up)
    resp = send_to(v, "unlisted.invalid", 443 if mode == "tunnel" else 80, "/")
    rec = assert_refused(v, resp, 403, "host")
    assert rec["host"] == "unlisted.invalid"
    # A resolver failure would have said so; the refusal names the policy.
    assert "no route allows host unlisted.invalid" in body_json(resp)["message"]


def test_upgrade_other_than_websocket_is_refused(proxy_factory, upstream):
    """After a 101 bytes flow unchecked, so only WebSocket may upgrade:
    an h2c upgrade would open HTTP/2 to every path of the host."""
    from kwtest import raw_request, status_of
    from conftest import policy_for
    p = proxy_factory(policy_for(upstream, paths='["/**"]'))
    req = (f"GET /api/x HTTP/1.1\r\nHost: api.test:{upstream.port}\r\nConnection: Upgrade, HTTP2-Settings\r\n"
           "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n").encode()
    resp = raw_request(p.port, req, tls_host=("api.test", upstream.port), ca=str(p.ca))
    assert status_of(resp) == 403
    assert b'"check":"upgrade"' in resp
    assert upstream.requests == []
    assert p.requests()[-1]["reason"] == "upgrade"
