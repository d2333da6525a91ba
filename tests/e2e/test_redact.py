"""Responses never hand a secret back: an upstream that reflects the request
(headers, bodies, error pages) or knows a secret gives the client its
placeholder instead, in every header and body, raw or encoded, however the
body is cut into chunks, compressed or not. Every byte the client receives
is searched for every form of every secret."""

import base64
import gzip
import json
import socket
import time
import urllib.parse
import zlib

import re

import pytest

from conftest import policy_for
from kwtest import (PLACEHOLDER, PLACEHOLDER2, SECRET, SECRET2, HttpConn, Upstream, open_tunnel)


def pct(secret, lower=False):
    """Percent-encoding (RFC 3986 unreserved kept), upper- or lower-case hex."""
    q = urllib.parse.quote(secret, safe="-._~")
    return (re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), q) if lower else q).encode()


def forms(secret):
    """The forms of a secret a response must never carry."""
    s = secret.encode()
    out = {s, base64.b64encode(s), base64.urlsafe_b64encode(s).rstrip(b"="), pct(secret), pct(secret, True)}
    for user in (b"x-access-token", b"alice", b"ab", b""):
        out.add(base64.b64encode(user + b":" + s))
    return out


FORBIDDEN = forms(SECRET) | forms(SECRET2)


def assert_clean(data):
    for f in FORBIDDEN:
        assert f not in data, f"a form of a secret reached the client: {f!r}"


class Scripted(Upstream):
    """An upstream whose response to each request is written by the test:
    script(req) returns a list of byte strings, each sent with its own
    write (and a pause, so that keyward reads them apart)."""

    def __init__(self, script, **kw):
        self.script = script
        super().__init__(**kw)

    def _respond(self, c, f, req):
        for piece in self.script(req):
            c.sendall(piece)
            time.sleep(0.002)
        return True


class Recording(HttpConn):
    """HttpConn that keeps every byte it received."""

    def __init__(self, sock):
        super().__init__(sock)
        self.raw = b""

    def _more(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.raw += data
        self.buf += data


def connect(p, u):
    return Recording(open_tunnel(p.port, "api.test", u.port, p.ca))


def get(u, path, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: api.test:{u.port}\r\n{extra}\r\n".encode()


def chunked(*pieces):
    """A chunked body with one chunk per piece, each its own write."""
    return [b"%x\r\n%s\r\n" % (len(x), x) for x in pieces if x] + [b"0\r\n\r\n"]


def head(extra=b"", status=b"200 OK"):
    return b"HTTP/1.1 " + status + b"\r\n" + extra


@pytest.fixture
def tls_upstream(certs):
    ups = []

    def make(script):
        u = Scripted(script, tls=certs)
        ups.append(u)
        return u

    yield make
    for u in ups:
        u.close()


ALL = '["/**"]'


def test_reflected_headers_and_status_line(proxy_factory, tls_upstream):
    def script(req):
        auth = req.header("Authorization").encode()
        return [b"HTTP/1.1 200 OK " + SECRET.encode() + b"\r\n",
                b"X-Echo-Authorization: " + auth + b"\r\n",
                b"Set-Cookie: session=" + SECRET.encode() + b"; Path=/\r\n",
                b"Location: https://api.test/cb?token=" + urllib.parse.quote(SECRET, safe="").encode() + b"\r\n",
                b"X-Other: " + SECRET2.encode() + b"\r\n",
                b"X-" + SECRET.encode() + b": in the name\r\n",
                b"Content-Length: 2\r\n\r\nok"]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/x", f"Authorization: Bearer {PLACEHOLDER}\r\n"))
    status, headers, body, raw = c.read_response()
    assert status == 200 and body == b"ok"
    assert u.requests[-1].header("Authorization") == f"Bearer {SECRET}"
    assert headers["x-echo-authorization"] == f"Bearer {PLACEHOLDER}"
    assert headers["set-cookie"] == f"session={PLACEHOLDER}; Path=/"
    assert headers["location"] == "https://api.test/cb?token=" + PLACEHOLDER
    assert headers["x-other"] == PLACEHOLDER2  # any secret of the policy, not only the route's
    assert headers["x-" + PLACEHOLDER.lower()] == "in the name"  # names are scanned too
    assert PLACEHOLDER.encode() in raw.split(b"\r\n")[0]
    assert_clean(c.raw)
    c.close()
    rec = p.requests()[-1]
    assert rec["status"] == 200 and rec["redacted"] == 6


def test_large_response_head_is_redacted_and_the_connection_goes_on(proxy_factory, tls_upstream):
    # a 200 KiB head (the limit raised to 256 KiB) with the secret at its
    # end: redacted like a small one, and the next response on the same
    # connection too (keyward's head buffers grew past what it keeps, were
    # freed, and are made again)
    def script(req):
        filler = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"f" * 2000) for i in range(99))
        return [b"HTTP/1.1 200 OK\r\n", filler, b"X-Echo: " + SECRET.encode() + b"\r\n",
                b"Content-Length: 2\r\n\r\nok"]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL) + "limits:\n  max_header_bytes: 256KiB\n  max_headers: 200\n")
    c = connect(p, u)
    for _ in range(2):
        c.send(get(u, "/x"))
        status, headers, body, raw = c.read_response()
        assert status == 200 and body == b"ok"
        assert headers["x-echo"] == PLACEHOLDER
        assert headers["x-filler-98"] == "f" * 2000
        assert len(raw) > 190_000
    assert_clean(c.raw)
    c.close()
    assert [r["redacted"] for r in p.requests()[-2:]] == [1, 1]


def test_chunked_body_split_at_every_offset(proxy_factory, tls_upstream):
    s = SECRET.encode()

    def script(req):
        k = int(req.target.rsplit("/", 1)[1])
        return [head(b"Transfer-Encoding: chunked\r\n\r\n")] + chunked(b"before " + s[:k], s[k:] + b" after")
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    for k in range(len(s) + 1):
        c.send(get(u, f"/split/{k}"))
        status, headers, body, _ = c.read_response()
        assert status == 200 and headers["transfer-encoding"] == "chunked"
        assert body == b"before " + PLACEHOLDER.encode() + b" after", (k, body)
    assert_clean(c.raw)
    c.close()
    recs = p.requests()
    assert len(recs) == len(s) + 1 and all(r["redacted"] == 1 for r in recs)


def test_secret_split_byte_by_byte_and_repeated(proxy_factory, tls_upstream):
    text = (b"a" + SECRET.encode() + SECRET.encode() + b"b" + SECRET2.encode()) * 3

    def script(req):
        return [head(b"Transfer-Encoding: chunked\r\n\r\n")] + chunked(*[text[i:i + 1] for i in range(len(text))])
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/bytes"))
    _, _, body, _ = c.read_response()
    assert body == (b"a" + PLACEHOLDER.encode() * 2 + b"b" + PLACEHOLDER2.encode()) * 3
    assert_clean(c.raw)
    c.close()
    assert p.requests()[-1]["redacted"] == 9


def test_content_length_body_is_reframed(proxy_factory, tls_upstream):
    def script(req):
        body = json.dumps({"headers": req.headers}).encode()
        # the body goes out in pieces cut inside the secret
        cut = body.index(SECRET.encode()) + 5
        return [head(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)),
                body[:cut], body[cut:]]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/echo", f"Authorization: Bearer {PLACEHOLDER}\r\n"))
    status, headers, body, _ = c.read_response()
    assert status == 200 and "content-length" not in headers and headers["transfer-encoding"] == "chunked"
    got = dict((n.lower(), v) for n, v in json.loads(body)["headers"])
    assert got["authorization"] == f"Bearer {PLACEHOLDER}"
    # keep-alive goes on after a re-framed body
    c.send(get(u, "/echo"))
    assert c.read_response()[0] == 200
    assert_clean(c.raw)
    c.close()


def test_http10_client_gets_a_close_delimited_body(proxy_factory, tls_upstream):
    def script(req):
        body = b"token=" + SECRET.encode()
        return [head(b"Content-Length: %d\r\n\r\n" % len(body)), body]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(f"GET /x HTTP/1.0\r\nHost: api.test:{u.port}\r\n\r\n".encode())
    status, headers, body, _ = c.read_response()
    assert status == 200 and "transfer-encoding" not in headers and "content-length" not in headers
    assert headers.get("connection") == "close"
    assert body == b"token=" + PLACEHOLDER.encode()
    assert_clean(c.raw)
    c.close()


def compressors():
    def raw_deflate(b):
        z = zlib.compressobj(9, zlib.DEFLATED, -15)
        return z.compress(b) + z.flush()
    return {
        "gzip": (b"gzip", gzip.compress),
        "x-gzip": (b"x-gzip", gzip.compress),
        "gzip-two-members": (b"gzip", lambda b: gzip.compress(b[:50]) + gzip.compress(b[50:])),
        "deflate-zlib": (b"deflate", zlib.compress),
        "deflate-raw": (b"deflate", raw_deflate),
    }


@pytest.mark.parametrize("name", list(compressors()))
def test_compressed_bodies_are_decoded_and_scanned(proxy_factory, tls_upstream, name):
    coding, compress = compressors()[name]
    text = (b"{\"token\": \"" + SECRET.encode() + b"\", \"pad\": \"" + b"x" * 5000 + b"\"} ") * 4

    def script(req):
        z = compress(text)
        # chunk boundaries every 7 bytes of the compressed stream
        return [head(b"Content-Encoding: " + coding + b"\r\nTransfer-Encoding: chunked\r\n\r\n")] + \
            chunked(*[z[i:i + 7] for i in range(0, len(z), 7)])
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/z", "Accept-Encoding: gzip, deflate, br, zstd\r\n"))
    status, headers, body, _ = c.read_response()
    assert status == 200 and "content-encoding" not in headers
    assert body == text.replace(SECRET.encode(), PLACEHOLDER.encode())
    # keyward asked only for codings it can decode
    assert u.requests[-1].header("Accept-Encoding") == "gzip, deflate"
    assert_clean(c.raw)
    c.close()
    assert p.requests()[-1]["redacted"] == 4


def test_no_accept_encoding_asks_for_identity(proxy_factory, tls_upstream):
    u = tls_upstream(lambda req: [head(b"Content-Length: 2\r\n\r\nok")])
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/a", "Accept-Encoding: br\r\n"))
    assert c.read_response()[0] == 200
    assert u.requests[-1].header("Accept-Encoding") == "identity"
    c.close()


def test_unknown_coding_is_refused(proxy_factory, tls_upstream):
    u = tls_upstream(lambda req: [head(b"Content-Encoding: br\r\nContent-Length: 5\r\n\r\n"), b"\x8b\x02\x80hi"])
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/br"))
    status, headers, body, _ = c.read_response()
    assert status == 502 and b"unsupported Content-Encoding" in body and b"cannot decode" in body
    c.close()
    rec = p.requests()[-1]
    assert rec["status"] == 502 and rec["reason"] == "upstream"


def test_reflected_coding_is_not_quoted_in_the_refusal(proxy_factory, tls_upstream):
    # An upstream that turns query values into response headers (httpbin's
    # /response-headers, a storage API's response-content-encoding): the
    # placeholder in the query went upstream as the secret, and comes back
    # as a Content-Encoding keyward cannot decode. Its 502 and the audit
    # record must not quote the value.
    def reflect(req):
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(req.target).query))
        value = q["ce"].encode()
        return [head(b"Content-Encoding: %s\r\nX-Echo: %s\r\nContent-Length: 2\r\n\r\nok" % (value, value))]

    u = tls_upstream(reflect)
    p = proxy_factory(policy_for(u, paths=ALL))
    for ce in (PLACEHOLDER, f"gzip, {PLACEHOLDER}", f"{PLACEHOLDER}, gzip"):
        c = connect(p, u)
        c.send(get(u, "/response-headers?ce=" + urllib.parse.quote(ce)))
        status, _, body, _ = c.read_response()
        assert status == 502 and b"cannot decode" in body, body
        assert SECRET in u.requests[-1].target  # the swap happened: the upstream had it
        assert_clean(c.raw)
        assert PLACEHOLDER.encode() not in body  # nothing of the value is quoted
        c.close()
    recs = p.requests()
    assert [r["status"] for r in recs] == [502] * 3
    text = p.stop() + p.stderr + p.audit.read_text()
    assert SECRET not in text and PLACEHOLDER not in text


# Transfer codings keyward does not decode: llhttp frames "gzip, chunked" as
# chunked and "gzip" alone as read-until-close, keyward drops the field when
# it re-frames, and the client would get gzip bytes the redactor never read.
OTHER_TRANSFER_CODINGS = {
    "gzip-chunked": (b"Transfer-Encoding: gzip, chunked\r\n", True),
    "gzip-until-close": (b"Transfer-Encoding: gzip\r\nConnection: close\r\n", False),
    "deflate-chunked-two-fields": (b"Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n", True),
    "chunked-twice": (b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", True),
}


@pytest.mark.parametrize("credential", [True, False], ids=["credentialed", "open"])
@pytest.mark.parametrize("name", list(OTHER_TRANSFER_CODINGS))
def test_transfer_coding_other_than_chunked_is_refused(proxy_factory, tls_upstream, name, credential):
    fields, chunk = OTHER_TRANSFER_CODINGS[name]

    def script(req):
        z = gzip.compress(json.dumps({"headers": req.headers}).encode())
        if name == "chunked-twice":
            z = b"%x\r\n%s\r\n0\r\n\r\n" % (len(z), z)
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(z), z) if chunk else z
        return [head(fields + b"\r\n"), body]

    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL, credential=credential))
    c = connect(p, u)
    # only a credentialed route may be sent its placeholder
    c.send(get(u, "/echo", f"Authorization: Bearer {PLACEHOLDER}\r\n" if credential else ""))
    status, _, body, _ = c.read_response()
    assert status == 502 and b"Transfer-Encoding other than chunked alone" in body, body
    assert_clean(c.raw)
    assert b"\x1f\x8b" not in c.raw  # no gzip member reached the client
    c.close()
    rec = p.requests()[-1]
    assert rec["status"] == 502 and rec["reason"] == "upstream"


def test_chunked_in_any_case_is_accepted(proxy_factory, tls_upstream):
    body = b"token=" + SECRET.encode()
    u = tls_upstream(lambda req: [head(b"Transfer-Encoding:  ChUnKeD \r\n\r\n"), *chunked(body[:9], body[9:])])
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/x"))
    status, _, got, _ = c.read_response()
    assert status == 200 and got == b"token=" + PLACEHOLDER.encode()
    assert_clean(c.raw)
    c.close()


def test_compressed_refused_when_the_route_says_so(proxy_factory, tls_upstream):
    z = gzip.compress(SECRET.encode())
    u = tls_upstream(lambda req: [head(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z)), z])
    p = proxy_factory(policy_for(u, paths=ALL, route_extra="\n    compressed: refuse"))
    c = connect(p, u)
    c.send(get(u, "/gz", "Accept-Encoding: gzip\r\n"))
    status, _, body, _ = c.read_response()
    assert status == 502 and b"compressed: refuse" in body
    assert u.requests[-1].header("Accept-Encoding") == "identity"
    assert_clean(c.raw)
    c.close()


def test_decompression_bomb_is_cut_with_an_error(proxy_factory, tls_upstream):
    z = gzip.compress(b"\0" * (8 * 1024 * 1024))
    u = tls_upstream(lambda req: [head(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z)), z])
    text = policy_for(u, paths=ALL) + "limits:\n  max_decoded_body: 1MiB\n"
    p = proxy_factory(text)
    c = connect(p, u)
    c.send(get(u, "/bomb"))
    status, headers, _ = c.read_head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            size = int(c.read_until(b"\r\n")[:-2], 16)
            assert size > 0, "the body must not end as if it were complete"
            c.read_exact(size + 2)
    c.close()
    rec = p.requests()[-1]
    assert rec["decision"] == "error" and "max_decoded_body" in rec["detail"]


def test_corrupt_gzip_is_an_error(proxy_factory, tls_upstream):
    z = bytearray(gzip.compress(b"hello " * 1000))
    z[20:30] = b"\xff" * 10
    u = tls_upstream(lambda req: [head(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(z)), bytes(z)])
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/corrupt"))
    status, _, _ = c.read_head()
    assert status == 200
    with pytest.raises((EOFError, ConnectionResetError, ValueError)):
        while True:
            size = int(c.read_until(b"\r\n")[:-2], 16)
            assert size > 0
            c.read_exact(size + 2)
    c.close()
    assert "cannot be scanned" in p.requests()[-1]["detail"]


def test_basic_credentials_and_encodings(proxy_factory, tls_upstream):
    """The exact Basic pair keyward sent comes back as the placeholder's
    pair; the secret's base64 and URL-encoded forms are replaced too."""
    s = SECRET.encode()

    def script(req):
        sent = req.header("Authorization").encode()
        body = b"\n".join([sent, base64.b64encode(s), base64.b64encode(b"other-user:" + s),
                           base64.urlsafe_b64encode(s).rstrip(b"=")])
        return [head(b"X-Sent: " + sent + b"\r\nContent-Length: %d\r\n\r\n" % len(body)), body]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL, inject="{basic: x-access-token}"))
    c = connect(p, u)
    c.send(get(u, "/git"))
    status, headers, body, _ = c.read_response()
    assert status == 200
    sent_by_keyward = "Basic " + base64.b64encode(b"x-access-token:" + s).decode()
    assert u.requests[-1].header("Authorization") == sent_by_keyward
    want = "Basic " + base64.b64encode(b"x-access-token:" + PLACEHOLDER.encode()).decode()
    assert headers["x-sent"] == want
    lines = body.split(b"\n")
    assert lines[0] == want.encode()
    assert lines[1] == base64.b64encode(PLACEHOLDER.encode())
    assert_clean(c.raw)
    c.close()


def test_one_connection_many_responses_each_redacted(proxy_factory, tls_upstream):
    """keyward keeps a connection's redaction state from one request to the
    next (emptied in between): on one kept-alive tunnel, compressed and
    plain responses in turn, each carrying the secret and the Basic pair
    keyward sent, come back redacted every time, each with its own count."""
    s = SECRET.encode()
    sent = base64.b64encode(b"x-access-token:" + s)
    compress = compressors()

    def script(req):
        body = b"token " + s + b" basic " + sent + b" end"
        name = req.target.rsplit("/", 1)[-1]
        if name == "plain":
            return [head(b"Content-Length: %d\r\n\r\n" % len(body)), body]
        coding, fn = compress[name]
        z = fn(body)
        return [head(b"Content-Encoding: " + coding + b"\r\nContent-Length: %d\r\n\r\n" % len(z)), z]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL, inject="{basic: x-access-token}"))
    c = connect(p, u)
    want = (b"token " + PLACEHOLDER.encode() + b" basic " +
            base64.b64encode(b"x-access-token:" + PLACEHOLDER.encode()) + b" end")
    order = ["gzip", "plain", "deflate-raw", "plain", "gzip-two-members", "deflate-zlib", "plain"]
    for name in order:
        c.send(get(u, "/r/" + name, "Accept-Encoding: gzip, deflate\r\n"))
        status, headers, body, _ = c.read_response()
        assert status == 200, name
        assert body == want, name
    assert_clean(c.raw)
    c.close()
    records = [r for r in p.requests() if r.get("path", "").startswith("/r/")]
    assert [r["path"] for r in records] == ["/r/" + n for n in order]
    assert all(r["redacted"] == 2 for r in records), records


def test_url_encoded_forms(proxy_factory, tls_upstream):
    """A secret with reserved characters, percent-encoded with upper- and
    lower-case hex digits, in a header and the body."""
    special = "kwtest/SPECIAL+secret=&?9z~x"

    def script(req):
        body = b" ".join([pct(special), pct(special, True), base64.b64encode(special.encode())])
        return [head(b"Location: /cb?t=" + pct(special, True) + b"\r\nContent-Length: %d\r\n\r\n" % len(body)),
                body]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL), env={"TEST_TOKEN": special})
    c = connect(p, u)
    c.send(get(u, "/u"))
    _, headers, body, _ = c.read_response()
    assert u.requests[-1].header("Authorization") == f"Bearer {special}"
    assert headers["location"] == "/cb?t=" + PLACEHOLDER
    assert body == b" ".join([PLACEHOLDER.encode(), PLACEHOLDER.encode(), base64.b64encode(PLACEHOLDER.encode())])
    for f in forms(special):
        assert f not in c.raw, f
    c.close()
    assert p.requests()[-1]["redacted"] == 4
    assert special not in p.stop() + p.stderr + p.audit.read_text()


def test_swapped_basic_comes_back_as_sent(proxy_factory, tls_upstream):
    client_auth = "Basic " + base64.b64encode(f"bob:{PLACEHOLDER}".encode()).decode()

    def script(req):
        sent = req.header("Authorization").encode()
        return [head(b"X-Sent: " + sent + b"\r\nContent-Length: 2\r\n\r\nok")]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL, inject="swap"))
    c = connect(p, u)
    c.send(get(u, "/s", f"Authorization: {client_auth}\r\n"))
    _, headers, _, _ = c.read_response()
    assert u.requests[-1].header("Authorization") == "Basic " + base64.b64encode(f"bob:{SECRET}".encode()).decode()
    assert headers["x-sent"] == client_auth
    assert_clean(c.raw)
    c.close()


def test_real_clients_never_see_the_secret(proxy_factory, tls_upstream):
    """curl through the proxy against an echo upstream: gzip on the wire,
    the secret nowhere in what curl prints."""
    import subprocess

    def script(req):
        body = gzip.compress(json.dumps({"you sent": req.headers}).encode())
        return [head(b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)), body]
    u = tls_upstream(script)
    p = proxy_factory(policy_for(u, paths=ALL))
    r = subprocess.run(["curl", "-sS", "-i", "--compressed", "--max-time", "20", "-x", p.url, "--cacert", str(p.ca),
                        f"https://api.test:{u.port}/x"], capture_output=True)
    assert r.returncode == 0, r.stderr
    assert PLACEHOLDER.encode() in r.stdout
    assert_clean(r.stdout + r.stderr)


def test_uncredentialed_route_is_passed_as_is(proxy_factory, tls_upstream):
    body = b"not ours: " + SECRET.encode()
    u = tls_upstream(lambda req: [head(b"Content-Length: %d\r\n\r\n" % len(body)), body])
    p = proxy_factory(policy_for(u, paths=ALL, credential=False))
    c = connect(p, u)
    c.send(get(u, "/open"))
    status, headers, got, _ = c.read_response()
    # keyward sent no secret there: nothing is scanned or re-framed
    assert status == 200 and headers["content-length"] == str(len(body)) and got == body
    c.close()
    assert "redacted" not in p.requests()[-1]


def test_uncredentialed_route_to_a_credentialed_host_is_scanned(proxy_factory, tls_upstream):
    # A placeholder sent in a header or the query of the credentialed route
    # is swapped for the secret, so the service may store it (an issue
    # title, a note) and serve it back on a route that needs no credential:
    # responses from a host a credentialed route reaches are scanned on
    # every route, and asked for whole.
    body = b"note: " + SECRET.encode()
    u = tls_upstream(lambda req: [head(b"Content-Length: %d\r\n\r\n" % len(body)), body])
    extra = (f"  - host: {u.host}\n    port: {u.port}\n    paths: [\"/open/**\"]\n"
             f"    upstream_ca: {u.ca_file}\n    allow_private: true\n")
    p = proxy_factory(policy_for(u, paths='["/api/**"]', extra_routes=extra))
    c = connect(p, u)
    c.send(get(u, "/open/notes", "Range: bytes=0-9\r\nAccept-Encoding: br\r\n"))
    status, headers, got, _ = c.read_response()
    c.close()
    assert status == 200 and got == b"note: " + PLACEHOLDER.encode(), got
    assert u.requests[-1].header("Range") is None
    assert u.requests[-1].header("Accept-Encoding") in (None, "identity"), u.requests[-1].headers
    assert u.requests[-1].header("Authorization") is None
    assert_clean(c.raw)
    assert p.requests()[-1]["route"] == 1 and p.requests()[-1].get("redacted") == 1, p.requests()[-1]


# ---- partial responses: a part of a response is not scanned whole ----

CONFIG = b"# deploy config\nAPI_TOKEN=" + SECRET.encode() + b"\nREGION=eu\n"


def byte_ranges(req):
    """A byte-range-capable file server (nginx, S3, an artifact store) with
    a file that holds the secret: 206 for a Range, multipart for several."""
    rng = req.header("Range")
    if not rng:
        return [head(b"Accept-Ranges: bytes\r\nContent-Length: %d\r\n\r\n" % len(CONFIG)), CONFIG]
    parts = [tuple(int(x) for x in r.split("-")) for r in rng.split("=", 1)[1].split(",")]
    if len(parts) == 1:
        a, b = parts[0]
        return [head(b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n"
                     % (a, b, len(CONFIG), b + 1 - a), b"206 Partial Content"), CONFIG[a:b + 1]]
    out = b""
    for a, b in parts:
        out += (b"--B\r\nContent-Range: bytes %d-%d/%d\r\n\r\n" % (a, b, len(CONFIG)) + CONFIG[a:b + 1] + b"\r\n")
    out += b"--B--\r\n"
    return [head(b"Content-Type: multipart/byteranges; boundary=B\r\nContent-Length: %d\r\n\r\n" % len(out),
                 b"206 Partial Content"), out]


@pytest.mark.parametrize("rng", [
    ",".join(f"{i}-{min(i + 5, len(CONFIG) - 1)}" for i in range(0, len(CONFIG), 6)),  # parts of 6 bytes
    "26-31",  # one piece of the secret
])
def test_range_is_not_forwarded_on_a_credentialed_route(proxy_factory, tls_upstream, rng):
    u = tls_upstream(byte_ranges)
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/config.env", f"Range: bytes={rng}\r\nIf-Range: \"v1\"\r\n"))
    status, headers, body, _ = c.read_response()
    c.close()
    # the whole file, redacted, instead of parts the redactor cannot join
    assert status == 200, body
    assert body == CONFIG.replace(SECRET.encode(), PLACEHOLDER.encode())
    assert u.requests[-1].header("Range") is None and u.requests[-1].header("If-Range") is None
    assert_clean(c.raw)


def test_partial_content_is_refused_on_a_credentialed_route(proxy_factory, tls_upstream):
    # An upstream that answers 206 to a request without Range.
    piece = CONFIG[26:32]
    u = tls_upstream(lambda req: [head(b"Content-Range: bytes 26-31/%d\r\nContent-Length: 6\r\n\r\n" % len(CONFIG),
                                       b"206 Partial Content"), piece])
    p = proxy_factory(policy_for(u, paths=ALL))
    c = connect(p, u)
    c.send(get(u, "/config.env"))
    status, headers, body, _ = c.read_response()
    c.close()
    assert status == 502 and json.loads(body)["check"] == "upstream", body
    assert b"206" in body and piece not in c.raw
    assert_clean(c.raw)
    rec = p.requests()[-1]
    assert rec["status"] == 502 and rec["decision"] == "error" and rec["reason"] == "upstream", rec


def test_range_is_forwarded_on_an_uncredentialed_route(proxy_factory, tls_upstream):
    # Nothing of keyward's goes there and nothing is scanned: ranges work.
    u = tls_upstream(byte_ranges)
    p = proxy_factory(policy_for(u, paths=ALL, credential=False))
    c = connect(p, u)
    c.send(get(u, "/config.env", "Range: bytes=0-14\r\n"))
    status, headers, body, _ = c.read_response()
    c.close()
    assert status == 206 and body == CONFIG[:15]
    assert u.requests[-1].header("Range") == "bytes=0-14"
