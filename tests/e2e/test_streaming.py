"""Bodies both ways through keyward, over CONNECT tunnels (https) and plain
http: chunked and Content-Length uploads, large downloads in constant memory,
slow readers, server-sent events, bodiless responses, interim responses,
connection-delimited bodies, keep-alive, Upgrade, body limits and timeouts."""

import hashlib
import json
import os
import socket
import ssl
import time

import httpx
import pytest
import requests

from conftest import policy_for
from kwtest import (PLACEHOLDER, SECRET, HttpConn, Request, RssSampler, Upstream, connect_head, open_tunnel,
                    vmrss_kib)

MiB = 1024 * 1024
ALL_PATHS = '["/**"]'


@pytest.fixture(params=["https", "http"])
def any_upstream(request, certs):
    """The TLS upstream (reached through CONNECT) and the plain one."""
    u = Upstream(tls=certs if request.param == "https" else None)
    yield u
    u.close()


def base_url(u):
    return f"{'https' if u.tls else 'http'}://api.test:{u.port}"


def session(p):
    s = requests.Session()
    s.proxies = {"https": p.url, "http": p.url}
    s.verify = str(p.ca)
    return s


def connect(p, u, timeout=10):
    """A raw client connection that reaches u: a tunnel for https, else the proxy itself."""
    if u.tls:
        return HttpConn(open_tunnel(p.port, "api.test", u.port, p.ca, timeout=timeout))
    return HttpConn(socket.create_connection(("127.0.0.1", p.port), timeout=timeout))


def target(u, path):
    """The request target for a raw request: origin-form in a tunnel, absolute-form for plain http."""
    return path if u.tls else f"http://api.test:{u.port}{path}"


def get(u, path, method="GET", extra=""):
    return (f"{method} {target(u, path)} HTTP/1.1\r\nHost: api.test:{u.port}\r\n{extra}\r\n").encode()


def pattern(n, seed=b"keyward"):
    """n bytes that are not all alike, so a misplaced block changes the hash."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    block = bytes((b + i) & 0xFF for i, b in enumerate(block[:256])) + block[256:]
    reps, rest = divmod(n, len(block))
    return block * reps + block[:rest]


class FramingUpstream(Upstream):
    """An upstream that also records how a chunked body was framed on the
    wire: chunk sizes, whether any chunk extension or trailer came through."""

    def _read_request(self, f):
        got = self._read_head(f)
        if got is None:
            return None
        head, method, tgt, version, headers, hd = got
        body = bytearray()
        sizes, size_lines, trailers = [], [], []
        if hd.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line = f.readline()
                if not line:
                    return None
                size_lines.append(line)
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while True:
                        t = f.readline()
                        if t in (b"\r\n", b""):
                            break
                        trailers.append(t)
                    break
                sizes.append(size)
                body += f.read(size)
                if f.read(2) != b"\r\n":
                    raise ValueError("bad chunk end")
        elif "content-length" in hd:
            body = f.read(int(hd["content-length"]))
        req = Request(head, method, tgt, version, headers, bytes(body))
        req.chunk_sizes, req.size_lines, req.trailers = sizes, size_lines, trailers
        return req


class ExpectUpstream(Upstream):
    """An upstream that honours Expect: 100-continue: it answers 100 after the
    head and only then reads the body."""

    def _serve(self, c):
        try:
            c.settimeout(10)
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            f = c.makefile("rb")
            orig = f.readline

            class F:
                def __init__(s):
                    s.in_head = True
                    s.expect = False

                def readline(s, *a):
                    line = orig(*a)
                    if s.in_head and line.lower().startswith(b"expect:") and b"100-continue" in line.lower():
                        s.expect = True
                    if s.in_head and line in (b"\r\n", b"\n"):
                        s.in_head = False
                        if s.expect:
                            c.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    return line

                def read(s, n):
                    return f.read(n)

            while True:
                req = self._read_request(F())
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                if not self._respond(c, f, req):
                    return
        except (OSError, ValueError):
            return
        finally:
            try:
                c.close()
            except OSError:
                pass


# ---- uploads ----

@pytest.mark.parametrize("client", ["httpx-https", "requests-http", "httpx-http"])
def test_chunked_upload_20mb_arrives_intact_with_keywards_framing(proxy_factory, certs, client):
    # Not requests over https: requests 2.28 sends a generator body on a
    # connection it never tunnels (TLS straight at the proxy, no CONNECT),
    # which keyward rightly refuses as a malformed request.
    u = FramingUpstream(tls=certs if client.endswith("https") else None)
    try:
        p = proxy_factory(policy_for(u))
        data = pattern(20 * MiB + 12345)
        want = hashlib.sha256(data).hexdigest()

        def gen():
            # Odd piece sizes, so keyward's chunks cannot simply mirror ours.
            i, step = 0, 0
            sizes = (1, 777, 65536, 300000, 13, 1 << 20)
            while i < len(data):
                k = sizes[step % len(sizes)]
                yield data[i:i + k]
                i += k
                step += 1

        url = f"{base_url(u)}/api/upload"
        hdrs = {"Authorization": f"Bearer {PLACEHOLDER}"}
        if client.startswith("httpx"):
            with httpx.Client(proxies=p.url, verify=str(p.ca), timeout=120) as hc:
                r = hc.post(url, content=gen(), headers=hdrs)
        else:
            r = session(p).post(url, data=gen(), headers=hdrs, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["body_len"] == len(data)
        got = u.requests[-1]
        assert got.header("Transfer-Encoding").lower() == "chunked"
        assert got.header("Content-Length") is None
        assert got.header("Authorization") == f"Bearer {SECRET}"
        assert hashlib.sha256(got.body).hexdigest() == want
        assert sum(got.chunk_sizes) == len(data)
        assert all(l.rstrip(b"\r\n") == b"%x" % n for l, n in zip(got.size_lines, got.chunk_sizes))
        rec = p.requests()[-1]
        assert rec["decision"] == "allow" and rec["bytes_in"] == len(data)
    finally:
        u.close()


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_chunked_upload_extensions_and_trailers_are_dropped(proxy_factory, certs, scheme):
    u = FramingUpstream(tls=certs if scheme == "https" else None)
    try:
        p = proxy_factory(policy_for(u))
        c = connect(p, u)
        c.send(get(u, "/api/chunks", "POST", "Transfer-Encoding: chunked\r\n") +
               b"5;name=value\r\nhello\r\n6;x\r\n world\r\n0\r\nX-Trailer: sneaky\r\n\r\n")
        status, _, body, _ = c.read_response()
        c.close()
        assert status == 200, body
        got = u.requests[-1]
        assert got.body == b"hello world"
        assert got.header("Transfer-Encoding").lower() == "chunked"
        assert all(b";" not in l for l in got.size_lines), got.size_lines
        assert got.trailers == []
    finally:
        u.close()


def test_content_length_upload_50mb(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u))
    data = pattern(50 * MiB + 7, seed=b"cl")
    r = session(p).put(f"{base_url(u)}/api/blob", data=data, timeout=180)
    assert r.status_code == 200, r.text
    assert r.json()["body_len"] == len(data)
    got = u.requests[-1]
    assert got.header("Content-Length") == str(len(data))
    assert got.header("Transfer-Encoding") is None
    assert hashlib.sha256(got.body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert p.requests()[-1]["bytes_in"] == len(data)


# ---- downloads in constant memory ----

RSS_BOUND_KIB = 64 * 1024
# ASan keeps freed memory in a quarantine (256 MB by default), which shows up
# in VmRSS as if keyward held it: measured growth during a 200 MB download
# was ~290 MB with it and ~1 MB without. Memory held by keyward is what
# these tests are about, so their proxies run with a tiny quarantine.
SMALL_QUARANTINE = {"ASAN_OPTIONS": (os.environ.get("ASAN_OPTIONS", "detect_leaks=1") +
                                     ":quarantine_size_mb=1").lstrip(":")}


def test_download_200mb_constant_memory(proxy_factory, any_upstream, record_property):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS), env=SMALL_QUARANTINE)
    n = 200 * 1000 * 1000
    s = session(p)
    # Warm up: first TLS handshakes, certificate minting, pools.
    assert s.get(f"{base_url(u)}/big/1000", timeout=20).status_code == 200
    before = vmrss_kib(p.proc.pid)
    sampler = RssSampler(p.proc.pid)
    got = 0
    bad = 0
    t0 = time.monotonic()
    with s.get(f"{base_url(u)}/big/{n}", stream=True, timeout=60) as r:
        assert r.status_code == 200
        # the route is credentialed: its responses are scanned for secrets,
        # which may change their length, so they come as chunks
        assert r.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in r.headers
        for chunk in r.iter_content(chunk_size=MiB):
            got += len(chunk)
            bad += len(chunk) - chunk.count(b"x")
    dt = time.monotonic() - t0
    peak = sampler.stop()
    print(f"\n{u.tls and 'https' or 'http'} 200 MB download: RSS before {before} KiB, peak {peak} KiB, "
          f"delta {peak - before} KiB, {sampler.samples} samples, {n / dt / 1e6:.0f} MB/s")
    record_property("rss_delta_kib", peak - before)
    assert got == n
    assert bad == 0
    assert peak - before < RSS_BOUND_KIB, f"keyward grew by {peak - before} KiB during a {n} byte download"
    assert p.requests()[-1]["bytes_out"] == n


def test_slow_reader_does_not_make_keyward_buffer(proxy_factory, any_upstream, record_property):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS), env=SMALL_QUARANTINE)
    n = 100 * 1000 * 1000
    c = connect(p, u, timeout=30)
    # Warm up the path first on the same connection.
    c.send(get(u, "/big/1000"))
    assert c.read_response()[0] == 200
    before = vmrss_kib(p.proc.pid)
    sampler = RssSampler(p.proc.pid)
    c.send(get(u, f"/big/{n}"))
    status, headers, _ = c.read_head()
    # credentialed route: scanned for secrets, so re-framed as chunks
    assert status == 200 and headers["transfer-encoding"] == "chunked"

    def read_body(want):
        got = 0
        while got < want:
            size = int(c.read_until(b"\r\n")[:-2], 16)
            assert size > 0
            got += len(c.read_exact(size))
            assert c.read_exact(2) == b"\r\n"
        return got

    got = read_body(MiB)
    time.sleep(2.0)  # the client stops reading; keyward must stop reading upstream
    peak = sampler.stop()
    print(f"\n{u.tls and 'https' or 'http'} slow reader: RSS before {before} KiB, peak {peak} KiB, "
          f"delta {peak - before} KiB")
    record_property("rss_delta_kib", peak - before)
    assert peak - before < RSS_BOUND_KIB, f"keyward grew by {peak - before} KiB for a stalled reader"
    # Reading resumes: the rest arrives.
    c.s.settimeout(60)
    assert got + read_body(n - got) == n
    assert c.read_until(b"\r\n\r\n") == b"0\r\n\r\n"
    c.close()


def test_chunked_download_intact(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    n = 3 * 1000 * 1000 + 17
    r = session(p).get(f"{base_url(u)}/chunked/{n}", timeout=60)
    assert r.status_code == 200
    assert r.content == b"y" * n
    assert r.headers.get("Transfer-Encoding", "").lower() == "chunked"
    assert p.requests()[-1]["bytes_out"] == n


def test_server_sent_events_are_not_buffered(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    s = session(p)
    arrivals = []
    t0 = time.monotonic()
    buf = b""
    with s.get(f"{base_url(u)}/sse", stream=True, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "text/event-stream"
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                arrivals.append((ev, time.monotonic() - t0))
    end = time.monotonic() - t0
    assert [e for e, _ in arrivals] == [b"data: event 0", b"data: event 1", b"data: event 2"]
    times = [t for _, t in arrivals]
    # The upstream sends an event every 0.3 s: each must arrive when sent.
    assert times[0] < end - 0.5, (times, end)
    assert times[1] - times[0] > 0.2 and times[2] - times[1] > 0.2, times


# ---- bodiless responses, interim responses ----

def test_head_then_get_on_same_connection(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u))
    c = connect(p, u)
    c.send(get(u, "/api/head", "HEAD"))
    status, headers, body, _ = c.read_response("HEAD")
    assert status == 200 and int(headers["content-length"]) > 0
    # No body bytes may follow a HEAD response: the next response must start clean.
    c.send(get(u, "/api/after"))
    status, headers, body, raw = c.read_response()
    assert status == 200, raw
    assert json.loads(body)["target"] == "/api/after"
    c.close()
    assert [q.method for q in u.requests] == ["HEAD", "GET"]
    assert len({r["client"] for r in p.requests()}) == 1


@pytest.mark.parametrize("code", [204, 304])
def test_bodiless_status_keeps_connection(proxy_factory, any_upstream, code):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    c = connect(p, u)
    c.send(get(u, f"/status/{code}"))
    status, headers, body, raw = c.read_response()
    assert status == code and body == b""
    assert headers.get("connection", "").lower() != "close", raw
    c.send(get(u, "/api/next"))
    status, _, body, raw = c.read_response()
    assert status == 200, raw
    assert json.loads(body)["target"] == "/api/next"
    c.close()


class BodilessFramingUpstream(Upstream):
    """Responses that have no body by their status but frame one anyway.
      /304-cl      304 with the Content-Length of the unsent representation
                   (RFC 9110 8.6), and nothing after it
      /204-cl      204 with Content-Length and a smuggled response after it
      /204-late    204 with Content-Length, its "body" sent 0.3 s later
      /204-chunked 204 framed chunked, with a chunked "body"
      /103-cl      103 with Content-Length, then the final 200
    anything else: 200 "fresh" with the connection number."""

    SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nsmuggled reply"

    def _respond(self, c, f, req):
        path = req.target.split("?")[0]
        if path == "/304-cl":
            c.sendall(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n')
        elif path == "/204-cl":
            c.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n%s" % (len(self.SMUGGLED), self.SMUGGLED))
        elif path == "/204-late":
            c.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: %d\r\n\r\n" % len(self.SMUGGLED))
            time.sleep(0.3)
            c.sendall(self.SMUGGLED)
        elif path == "/204-chunked":
            c.sendall(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
                      % (len(self.SMUGGLED), self.SMUGGLED))
        elif path == "/103-cl":
            c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\nContent-Length: 5\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
        else:
            body = b"fresh %d" % self.connections
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        return True


@pytest.mark.parametrize("path", ["/304-cl", "/204-cl", "/204-late", "/204-chunked", "/103-cl"])
@pytest.mark.parametrize("scheme", ["https", "http"])
def test_bodiless_status_with_framing_has_no_body(proxy_factory, certs, scheme, path):
    # llhttp 8.1 reads a body by Content-Length or chunked framing whatever
    # the status: a 304 with Content-Length hung the next request until
    # upstream_timeout, and bytes after a 204 reached the client as its
    # body. Whatever follows such a response is never relayed, and its
    # connection is not pooled (it might be read as the next response).
    u = BodilessFramingUpstream(tls=certs if scheme == "https" else None)
    try:
        p = proxy_factory(policy_for(u, paths=ALL_PATHS, route_extra="\nlimits:\n  upstream_timeout: 5s"))
        c = connect(p, u, timeout=4)
        t0 = time.time()
        c.send(get(u, path, extra=f"Authorization: Bearer {PLACEHOLDER}\r\n"))
        status, headers, body, raw = c.read_response(skip_interim=False)
        if path == "/103-cl":
            assert status == 103 and "content-length" not in headers, raw
            status, headers, body, raw = c.read_response()
            assert status == 200 and body == b"final", raw
        else:
            assert status == int(path[1:4]), raw
            # a 204 carries no framing to the client; a 304 keeps its Content-Length
            assert headers.get("content-length") == ("1234" if status == 304 else None), raw
            assert "transfer-encoding" not in headers, raw
        assert headers.get("connection", "").lower() != "close", raw
        # at once: /204-late's bytes are still to come, and must not be
        # read as the answer to this request
        c.send(get(u, "/next"))
        status, _, body, raw = c.read_response()
        assert status == 200 and body.startswith(b"fresh"), (raw, body)
        assert time.time() - t0 < 3, "the next request waited for a body"
        assert b"smuggled" not in c.buf
        c.close()
        # not pooled, except after the 304, whose Content-Length is allowed
        if path.startswith("/204") or path == "/103-cl":
            assert body == b"fresh 2", "a connection that framed a forbidden body was reused"
        else:
            assert body == b"fresh 1"
        recs = p.requests()
        assert [r["status"] for r in recs] == [int(path[1:4]) if path != "/103-cl" else 200, 200]
    finally:
        u.close()


@pytest.mark.parametrize("code", [100, 103])
def test_interim_response_then_final(proxy_factory, any_upstream, code):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    c = connect(p, u)
    c.send(get(u, f"/status/{code}"))
    status, _, _, raw = c.read_response(skip_interim=False)
    assert status == code, raw
    status, _, body, raw = c.read_response()
    assert status == 200 and body == b"ok", raw
    # Still usable afterwards.
    c.send(get(u, "/api/next"))
    assert c.read_response()[0] == 200
    c.close()
    assert p.requests()[0]["status"] == 200


def test_expect_100_continue_relayed_from_upstream(proxy_factory, certs):
    u = ExpectUpstream(tls=certs)
    try:
        p = proxy_factory(policy_for(u))
        c = connect(p, u, timeout=5)
        c.send(get(u, "/api/upload", "POST", "Content-Length: 11\r\nExpect: 100-continue\r\n"))
        status, _, _, raw = c.read_response(skip_interim=False)  # waits for the 100 (timeout 5 s)
        assert status == 100, raw
        c.send(b"hello world")
        status, _, body, raw = c.read_response()
        assert status == 200, raw
        assert json.loads(body)["body_len"] == 11
        assert u.requests[-1].body == b"hello world"
        c.close()
    finally:
        u.close()


def test_expect_100_continue_client_sends_body_anyway(proxy_factory, any_upstream):
    # Most clients send the body after a short wait even without a 100.
    u = any_upstream
    p = proxy_factory(policy_for(u))
    c = connect(p, u)
    c.send(get(u, "/api/upload", "POST", "Content-Length: 11\r\nExpect: 100-continue\r\n") + b"hello world")
    status, _, body, raw = c.read_response()
    assert status == 200, raw
    assert u.requests[-1].body == b"hello world"
    c.close()


# ---- connection-delimited bodies, keep-alive ----

@pytest.mark.parametrize("scheme", ["https", "http"])
def test_body_delimited_by_close(proxy_factory, certs, scheme):
    # The upstream ends the body by closing its socket, as most servers do:
    # over TLS without a close_notify alert.
    u = Upstream(tls=certs if scheme == "https" else None)
    try:
        p = proxy_factory(policy_for(u, paths=ALL_PATHS))
        c = connect(p, u)
        c.send(get(u, "/close"))
        status, headers, body, raw = c.read_response()
        assert status == 200, raw
        assert headers.get("connection", "").lower() == "close"
        assert body == b"until the end"
        assert c.closed_by_peer(5)
        c.close()
        rec = p.requests()[-1]
        assert rec["decision"] == "allow" and rec["bytes_out"] == len(b"until the end")
    finally:
        u.close()


def test_keep_alive_both_sides(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u))
    s = session(p)
    for i in range(20):
        r = s.get(f"{base_url(u)}/api/{i}", timeout=10)
        assert r.status_code == 200
        assert r.json()["target"] == f"/api/{i}"
    assert len(u.requests) == 20
    assert u.connections <= 2, u.connections
    recs = p.requests()
    assert len(recs) == 20
    assert len({r["client"] for r in recs}) == 1, "the client connection was not kept alive"


def test_pipelined_requests_answered_in_order(proxy_factory, any_upstream):
    # keyward keeps reading the client while it serves a request; requests
    # that arrive early wait in its buffer and are answered in order.
    u = any_upstream
    p = proxy_factory(policy_for(u))
    c = connect(p, u)
    c.send(b"".join(get(u, f"/api/pipe{i}") for i in range(3)))
    for i in range(3):
        status, _, body, raw = c.read_response()
        assert status == 200, raw
        assert json.loads(body)["target"] == f"/api/pipe{i}"
    c.close()
    assert [q.target for q in u.requests] == [f"/api/pipe{i}" for i in range(3)]
    recs = p.requests()
    assert [(r["path"], r["decision"], r["status"]) for r in recs] == [
        (f"/api/pipe{i}", "allow", 200) for i in range(3)]


class MemoryTls:
    """A TLS client over memory BIOs on a socket, with the socket calls
    HttpConn uses: the test decides which bytes share a TCP segment."""

    def __init__(self, sock, ca, host):
        self.s = sock
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ssl.create_default_context(cafile=str(ca)).wrap_bio(self.inc, self.out, server_hostname=host)

    def handshake(self):
        """Runs the handshake; the client's last flight (its Finished) stays unsent."""
        while True:
            try:
                self.tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                if self.out.pending:
                    self.s.sendall(self.out.read())
                data = self.s.recv(65536)
                if not data:
                    raise EOFError("closed during the handshake")
                self.inc.write(data)

    def queue(self, data):
        """Encrypts data (one record per call) without sending it."""
        self.tls.write(data)

    def wire(self):
        return self.out.read()

    def sendall(self, data):
        self.tls.write(data)
        self.s.sendall(self.out.read())

    def recv(self, n):
        while True:
            try:
                return self.tls.read(n)
            except ssl.SSLWantReadError:
                data = self.s.recv(65536)
                if not data:
                    return b""
                self.inc.write(data)

    def close(self):
        self.s.close()


@pytest.mark.parametrize("split", [False, True], ids=["whole", "split"])
def test_requests_that_come_with_the_clients_finished(proxy_factory, certs, split):
    # keyward reads ahead during a tunnel's TLS handshake (one read(2) for
    # whatever has arrived instead of two per record). Requests a client
    # sends in the same segment as its Finished are then inside OpenSSL when
    # the handshake ends, where libevent would not look for them: each must
    # be answered, in order, without waiting for more bytes; and so must a
    # request whose record arrives in two parts, the second part later.
    u = Upstream(tls=certs)
    try:
        p = proxy_factory(policy_for(u))
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        assert connect_head(s, f"api.test:{u.port}").startswith(b"HTTP/1.1 200")
        t = MemoryTls(s, p.ca, "api.test")
        t.handshake()
        for i in range(3):
            t.queue(get(u, f"/api/early{i}"))
        wire = t.wire()  # the Finished and three records
        if split:
            s.sendall(wire[:-10])
            time.sleep(0.3)
            s.sendall(wire[-10:])
        else:
            s.sendall(wire)
        c = HttpConn(t)
        for i in range(3):
            status, _, body, raw = c.read_response()
            assert status == 200, raw
            assert json.loads(body)["target"] == f"/api/early{i}"
        # the tunnel goes on as usual
        c.send(get(u, "/api/later"))
        status, _, body, raw = c.read_response()
        assert status == 200 and json.loads(body)["target"] == "/api/later", raw
        c.close()
        assert [q.target for q in u.requests] == [f"/api/early{i}" for i in range(3)] + ["/api/later"]
    finally:
        u.close()


def test_pipelined_responses_to_a_client_that_does_not_read(proxy_factory, any_upstream):
    # keyward writes a response straight to the client's socket (through
    # OpenSSL in a tunnel) when nothing is queued before it, and queues what
    # the socket does not take. A client with a small receive buffer sends
    # many requests and reads nothing until all are sent: the socket fills
    # in the middle of a response (in a tunnel: in the middle of a TLS
    # record that OpenSSL must finish later), and every response must still
    # arrive whole and in order.
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # no autotuning
    s.settimeout(30)
    s.connect(("127.0.0.1", p.port))
    if u.tls:
        assert connect_head(s, f"api.test:{u.port}").startswith(b"HTTP/1.1 200")
        s = ssl.create_default_context(cafile=str(p.ca)).wrap_socket(s, server_hostname="api.test")
    c = HttpConn(s)
    # a size of its own for every response (each under one TLS record), so
    # that one lost, repeated or out of order shows
    sizes = [11000 + 7 * i for i in range(600)]
    c.send(b"".join(get(u, f"/big/{size}") for size in sizes))
    time.sleep(1.0)  # keyward answers into the full socket
    for i, size in enumerate(sizes):
        status, headers, raw = c.read_head()
        assert status == 200, raw
        body = b""
        while True:
            chunk = int(c.read_until(b"\r\n")[:-2], 16)
            body += c.read_exact(chunk)
            assert c.read_exact(2) == b"\r\n"
            if chunk == 0:
                break
        assert body == b"x" * size, f"response {i}: {len(body)} bytes, {size} expected"
    # and nothing after the last one
    assert c.buf == b""
    c.s.settimeout(0.5)
    with pytest.raises(TimeoutError):
        c.s.recv(1)
    c.close()
    recs = p.requests()
    assert [(r["status"], r["bytes_out"]) for r in recs] == [(200, size) for size in sizes]


def test_bodies_with_their_heads_and_after_them(proxy_factory, any_upstream):
    # A body of known length that came whole with its head goes upstream
    # in the same write as the head (in a tunnel, the same TLS record, up
    # to 16 KiB with the head); any other is pumped after it. Both ways the
    # upstream gets every byte once, the request after it on the same
    # connection (pipelined in the same send) is read from the right byte,
    # and the audit counts the body.
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    s = socket.create_connection(("127.0.0.1", p.port), timeout=20)
    if u.tls:
        assert connect_head(s, f"api.test:{u.port}").startswith(b"HTTP/1.1 200")
        s = ssl.create_default_context(cafile=str(p.ca)).wrap_socket(s, server_hostname="api.test")
    c = HttpConn(s)

    def post(name, body):
        return get(u, f"/api/{name}", "POST", f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n") + body

    bodies = {"small": b'{"model":"m","messages":[]}', "fits": b"f" * 15000, "record": b"r" * 16384,
              "large": b"l" * 70000, "empty": b""}
    for name, body in bodies.items():
        c.send(post(name, body) + get(u, f"/api/after-{name}"))
        for want in (name, f"after-{name}"):
            status, _, got, _ = c.read_response()
            assert status == 200, got
            assert json.loads(got)["target"] == f"/api/{want}"
    # the body in a later packet than its head: pumped
    c.send(post("later", b"later!!")[:-7])
    time.sleep(0.2)
    c.send(b"later!!")
    status, _, got, _ = c.read_response()
    assert status == 200 and json.loads(got)["body_len"] == 7
    c.close()
    seen = {r.target.rsplit("/", 1)[1]: r.body for r in u.requests}
    for name, body in bodies.items():
        assert seen[name] == body, name
        assert seen[f"after-{name}"] == b""
    assert seen["later"] == b"later!!"
    recs = {r["path"].rsplit("/", 1)[1]: r for r in p.requests()}
    for name, body in bodies.items():
        assert recs[name]["status"] == 200 and recs[name]["bytes_in"] == len(body), recs[name]


def test_half_closed_client_gets_its_answer(proxy_factory, plain_upstream):
    # A client may close its sending side once the request is out (RFC 9112
    # section 9.6), e.g. `printf 'GET …' | nc`: it still gets the answer,
    # then keyward closes.
    u = plain_upstream
    p = proxy_factory(policy_for(u))
    c = connect(p, u)
    c.send(get(u, "/api/half"))
    c.s.shutdown(socket.SHUT_WR)
    status, headers, body, raw = c.read_response()
    assert status == 200, raw
    assert json.loads(body)["target"] == "/api/half"
    assert c.s.recv(1) == b"", "keyward must close after answering a half-closed client"
    c.close()
    rec = p.requests()[-1]
    assert (rec["path"], rec["decision"], rec["status"]) == ("/api/half", "allow", 200), rec


# ---- Upgrade ----

WS_HEAD = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n")


def test_websocket_upgrade_relays_both_ways(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    c = connect(p, u)
    c.send(get(u, "/ws", extra=WS_HEAD))
    status, headers, raw = c.read_head()
    assert status == 101, raw
    got = u.requests[-1]
    assert got.header("Upgrade") == "websocket"
    assert got.header("Authorization") == f"Bearer {SECRET}"
    c.send(b"hello ws")
    assert c.read_exact(8) == b"hello ws"
    # A few MB both ways, 256 KiB in flight at a time (one thread: an
    # SSLSocket must not be read and written concurrently).
    data = pattern(4 * MiB, seed=b"ws")
    c.s.settimeout(30)
    echoed = bytearray()
    step = 256 * 1024
    for i in range(0, len(data), step):
        c.send(data[i:i + step])
        echoed += c.read_exact(len(data[i:i + step]))
    assert echoed == data
    c.close()
    # The decision was written before the upgrade went upstream; the result
    # follows when the relay ends.
    deadline = time.time() + 5
    while time.time() < deadline and "result_seq" not in (p.requests() or [{}])[-1]:
        time.sleep(0.05)
    rec = p.requests()[-1]
    assert rec["status"] == 101 and rec["decision"] == "allow", rec


def test_websocket_101_keeps_upgrade_header(proxy_factory, any_upstream):
    # RFC 9110 7.8: a 101 must say which protocol it switches to; WebSocket
    # clients (RFC 6455 4.1) fail the handshake without Upgrade: websocket.
    u = any_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    c = connect(p, u)
    c.send(get(u, "/ws", extra=WS_HEAD))
    status, headers, raw = c.read_head()
    c.close()
    assert status == 101, raw
    assert "upgrade" in headers.get("connection", "").lower(), raw
    assert headers.get("upgrade", "").lower() == "websocket", raw


@pytest.fixture(params=["https", "http"])
def recording_upstream(request, certs):
    """any_upstream that keeps every byte each connection received (Upstream.raw)."""
    u = Upstream(tls=certs if request.param == "https" else None, record=True)
    yield u
    u.close()


def read_to_end(c):
    """What is left of a relay for the client: the bytes already read past
    the head, then everything until keyward's end (a reset or a TLS end
    without close_notify ends it too)."""
    data = c.buf
    while True:
        try:
            more = c.s.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            break
        if not more:
            break
        data += more
    return data


@pytest.mark.parametrize("size", [8, 100000])
def test_relay_last_bytes_with_the_clients_end_reach_the_upstream(proxy_factory, recording_upstream, size):
    # After a 101 the client's last bytes and its end (FIN, or close_notify
    # in a tunnel) can arrive in one segment, and keyward hears the end
    # before the upstream's socket has taken those bytes: they must still
    # go out, and the upstream's answer (here its echo) must still come
    # back to the half-closed client. A race: it is run a few times.
    u = recording_upstream
    p = proxy_factory(policy_for(u, paths=ALL_PATHS))
    attempts = 5
    for attempt in range(attempts):
        s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        t = None
        if u.tls:
            assert connect_head(s, f"api.test:{u.port}").startswith(b"HTTP/1.1 200")
            t = MemoryTls(s, p.ca, "api.test")
            t.handshake()
        c = HttpConn(t or s)
        c.send(get(u, "/ws", extra=WS_HEAD))
        status, _, raw = c.read_head()
        assert status == 101, raw
        data = b"LAST%03d" % attempt + pattern(size - 7, seed=b"relay")[: size - 7]
        if t:
            # The records and close_notify in one write. unwrap() sends
            # close_notify, then waits for keyward's, which the memory BIO
            # does not have: the connection stays open for reading.
            t.queue(data)
            with pytest.raises(ssl.SSLWantReadError):
                t.tls.unwrap()
            s.sendall(t.wire())
        else:
            # Corked, the last bytes and the FIN leave in one segment.
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        echoed = read_to_end(c)
        c.close()
        sink = u.raw[-1]
        head_len = bytes(sink).index(b"\r\n\r\n") + 4
        deadline = time.time() + 2
        while time.time() < deadline and len(sink) < head_len + size:
            time.sleep(0.02)
        got = bytes(sink[head_len:])
        assert got == data, f"attempt {attempt}: the upstream got {len(got)} of {size} bytes"
        assert echoed == data, f"attempt {attempt}: the client got {len(echoed)} of {size} echoed bytes"
    # One result per relay, at its end (join_requests refuses a second one).
    deadline = time.time() + 5
    while time.time() < deadline and sum("result_seq" in r for r in p.requests()) < attempts:
        time.sleep(0.05)
    recs = [r for r in p.requests() if r.get("path") == "/ws"]
    assert len(recs) == attempts, recs
    assert all(r["status"] == 101 and r["decision"] == "allow" and "result_seq" in r for r in recs), recs
    assert all(r["bytes_in"] >= size for r in recs), recs


class ByeUpstream(Upstream):
    """Answers an upgrade to /ws/bye with 101, then `size` bytes and its end
    in one go (one write, then close)."""

    size = 0

    def _respond(self, c, f, req):
        if req.target.split("?")[0].endswith("/ws/bye"):
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                      + pattern(self.size, seed=b"bye"))
            return False
        return super()._respond(c, f, req)


@pytest.mark.parametrize("scheme", ["https", "http"])
@pytest.mark.parametrize("size", [8, 1000000])
def test_relay_last_bytes_with_the_upstreams_end_reach_the_client(proxy_factory, certs, scheme, size):
    # The other way round: the upstream's last bytes and its end arrive
    # together; the client gets every byte before keyward closes, and the
    # relay has one result.
    u = ByeUpstream(tls=certs if scheme == "https" else None)
    u.size = size
    try:
        p = proxy_factory(policy_for(u, paths=ALL_PATHS))
        attempts = 3
        for attempt in range(attempts):
            c = connect(p, u)
            c.send(get(u, "/ws/bye", extra=WS_HEAD))
            status, _, raw = c.read_head()
            assert status == 101, raw
            body = read_to_end(c)
            c.close()
            assert len(body) == size and body == pattern(size, seed=b"bye"), f"attempt {attempt}: {len(body)}"
        deadline = time.time() + 5
        while time.time() < deadline and sum("result_seq" in r for r in p.requests()) < attempts:
            time.sleep(0.05)
        recs = [r for r in p.requests() if r.get("path") == "/ws/bye"]
        assert len(recs) == attempts and all(r["status"] == 101 and "result_seq" in r for r in recs), recs
    finally:
        u.close()


class DeafUpstream(Upstream):
    """Answers an upgrade to /ws/deaf with 101, records what comes, and
    neither answers nor ends when the client's end comes."""

    def _respond(self, c, f, req):
        if req.target.split("?")[0].endswith("/ws/deaf"):
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            while True:
                data = c.recv(65536)
                if not data:
                    break
                f.sink += data
            time.sleep(15)
            return False
        return super()._respond(c, f, req)


def test_relay_after_the_clients_end_is_bounded(proxy_factory):
    # An upstream that takes the client's last bytes and end but never
    # ends itself: keyward closes the half-closed client about 5 s later,
    # and the relay still has its one result.
    u = DeafUpstream(record=True)
    try:
        p = proxy_factory(policy_for(u, paths=ALL_PATHS))
        c = connect(p, u)
        c.send(get(u, "/ws/deaf", extra=WS_HEAD))
        status, _, raw = c.read_head()
        assert status == 101, raw
        c.send(b"last words")
        c.s.shutdown(socket.SHUT_WR)
        t0 = time.time()
        assert c.closed_by_peer(10), "keyward must close the relay after a bounded wait"
        waited = time.time() - t0
        c.close()
        assert 4 < waited < 8, waited
        sink = bytes(u.raw[-1])
        assert sink.endswith(b"\r\n\r\nlast words"), sink
        deadline = time.time() + 5
        while time.time() < deadline and "result_seq" not in (p.requests() or [{}])[-1]:
            time.sleep(0.05)
        recs = [r for r in p.requests() if r.get("path") == "/ws/deaf"]
        assert len(recs) == 1 and recs[0]["status"] == 101 and "result_seq" in recs[0], recs
    finally:
        u.close()


class DrippingUpstream(Upstream):
    """Answers an upgrade to /ws/drip with 101; after the client's end, sends
    a byte every 1.5 s for 9 s, then ends."""

    def _respond(self, c, f, req):
        if req.target.split("?")[0].endswith("/ws/drip"):
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            while c.recv(65536):
                pass
            for i in range(6):
                time.sleep(1.5)
                c.sendall(b"%d" % i)
            return False
        return super()._respond(c, f, req)


def test_relay_after_the_clients_end_lasts_while_the_upstream_answers(proxy_factory):
    # The bound after the client's end is on silence, not on the whole
    # answer: an upstream that answers a half-closed client slowly, for
    # longer than that bound, is relayed to its end.
    u = DrippingUpstream()
    try:
        p = proxy_factory(policy_for(u, paths=ALL_PATHS))
        c = connect(p, u)
        c.send(get(u, "/ws/drip", extra=WS_HEAD))
        status, _, raw = c.read_head()
        assert status == 101, raw
        c.s.shutdown(socket.SHUT_WR)
        c.s.settimeout(20)
        got = read_to_end(c)
        c.close()
        assert got == b"012345", got
    finally:
        u.close()


def test_upgrade_to_denied_path(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u))  # only /api/**
    c = connect(p, u)
    c.send(get(u, "/ws", extra=WS_HEAD))
    status, _, body, raw = c.read_response()
    assert status == 403, raw
    assert json.loads(body)["check"] == "path"
    c.close()
    assert u.requests == []
    assert p.requests()[-1]["reason"] == "path"


# ---- limits ----

def test_body_limit_content_length(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u, route_extra="\n    max_body: 1KiB"))
    c = connect(p, u)
    # Head only: keyward must answer from the Content-Length alone.
    c.send(get(u, "/api/up", "POST", "Content-Length: 2048\r\n"))
    status, _, body, raw = c.read_response()
    assert status == 413, raw
    assert json.loads(body)["check"] == "limit"
    c.close()
    assert u.requests == [] and u.connections == 0
    rec = p.requests()[-1]
    assert rec["decision"] == "deny" and rec["reason"] == "limit"
    # At the limit is fine.
    c = connect(p, u)
    c.send(get(u, "/api/up", "POST", "Content-Length: 1024\r\n") + b"a" * 1024)
    assert c.read_response()[0] == 200
    c.close()


def test_body_limit_chunked(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u, route_extra="\n    max_body: 1KiB"))
    c = connect(p, u)
    # Exactly the limit first, then one chunk more, then wait for the answer
    # (sending more after the refusal would only race keyward's close).
    c.send(get(u, "/api/up", "POST", "Transfer-Encoding: chunked\r\n") + (b"200\r\n" + b"b" * 512 + b"\r\n") * 2)
    time.sleep(0.3)
    c.send(b"200\r\n" + b"b" * 512 + b"\r\n")
    status, _, body, raw = c.read_response()
    assert status == 413, raw
    assert json.loads(body)["check"] == "limit"
    assert c.closed_by_peer(5)
    c.close()
    rec = p.requests()[-1]
    assert rec["decision"] == "deny" and rec["reason"] == "limit" and rec["status"] == 413, rec
    # The upstream saw a head and at most the allowed bytes, never a complete request.
    time.sleep(0.2)
    assert u.requests == []


LIMITS = "limits:\n  header_timeout: 1s\n  idle_timeout: 1s\n"


def test_header_timeout(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u) + LIMITS)
    c = connect(p, u)
    c.send(get(u, "/api/x")[:-4])  # no blank line: the head never ends
    t0 = time.monotonic()
    c.s.settimeout(10)
    status, _, body, raw = c.read_response()
    dt = time.monotonic() - t0
    assert status == 408, raw
    assert 0.5 < dt < 5, dt
    assert c.closed_by_peer(5)
    c.close()
    rec = p.requests()[-1]
    assert rec["reason"] == "timeout" and rec["status"] == 408
    assert u.requests == []


def test_idle_keep_alive_connection_closed(proxy_factory, any_upstream):
    u = any_upstream
    p = proxy_factory(policy_for(u) + LIMITS)
    c = connect(p, u)
    c.send(get(u, "/api/x"))
    assert c.read_response()[0] == 200
    t0 = time.monotonic()
    assert c.closed_by_peer(8), "idle connection was not closed"
    dt = time.monotonic() - t0
    assert 0.5 < dt < 5, dt
    c.close()
    # A connection that never sends anything is closed too.
    s = socket.create_connection(("127.0.0.1", p.port), timeout=8)
    t0 = time.monotonic()
    assert s.recv(100) == b""
    assert time.monotonic() - t0 < 5
    s.close()


def test_idle_timeout_counts_from_the_last_response(proxy_factory, any_upstream):
    """keyward keeps the idle timer of a kept-alive connection pending while
    requests are served: it must neither cut a connection that was never
    idle for idle_timeout, nor a response slower than idle_timeout, nor
    forget to close the connection idle_timeout after its last response."""
    u = any_upstream
    p = proxy_factory(policy_for(u) + LIMITS)
    c = connect(p, u)
    # Requests 0.4 s apart for 2.4 s: the wait between two is never 1 s.
    t_end = time.monotonic() + 2.4
    n = 0
    while time.monotonic() < t_end:
        c.send(get(u, "/api/x"))
        assert c.read_response()[0] == 200, f"request {n} failed"
        n += 1
        time.sleep(0.4)
    # A response that takes longer than idle_timeout is not cut.
    c.send(get(u, "/api/stall/1.6"))
    assert c.read_response()[0] == 200
    # Then it is idle: closed about a second after the next response.
    c.send(get(u, "/api/x"))
    assert c.read_response()[0] == 200
    t0 = time.monotonic()
    assert c.closed_by_peer(8), "idle connection was not closed"
    dt = time.monotonic() - t0
    assert 0.8 < dt < 3, dt
    c.close()
    recs = p.requests()
    assert len(recs) == n + 2, recs
    assert all(r["decision"] == "allow" and r["status"] == 200 for r in recs), recs
