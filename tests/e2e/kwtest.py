"""Helpers shared by the end-to-end tests: made-up secrets, certificates, and
an upstream HTTP(S) server that records the raw requests it receives."""

import json
import socket
import ssl
import subprocess
import threading
import time

# Made-up secrets: tests search every output for them.
SECRET = "kwtest-REAL-SECRET-7f3a9c1e5b2d"
SECRET2 = "kwtest-OTHER-SECRET-0d4e8b6a2c9f"
PLACEHOLDER = "kw_test_placeholder_0123456789abcdef"
PLACEHOLDER2 = "kw_other_placeholder_fedcba9876543210"


def join_requests(records):
    """One dict per request, in the order of the log. A request refused
    before it was allowed has one record. An allowed one has its decision
    (event "request", decision "allow", written before it was forwarded)
    and, once it ended, a "result" naming it by request_seq: the result's
    status, reason, bytes and duration (and its decision, which says how it
    ended) are merged into the decision's dict, with "result_seq" added. A
    result naming no earlier allowed decision fails the test."""
    joined, by_seq = [], {}
    for r in records:
        if r["event"] == "request":
            d = dict(r)
            joined.append(d)
            if r["decision"] == "allow" and "status" not in r:
                by_seq[r["seq"]] = d
        elif r["event"] == "result":
            d = by_seq.pop(r["request_seq"])
            for k, v in r.items():
                if k not in ("seq", "time", "event", "request_seq", "prev"):
                    d[k] = v
            d["result_seq"] = r["seq"]
    return joined


def unfinished(requests):
    """The allowed requests of join_requests whose result is not written."""
    return [r for r in requests if r["decision"] == "allow" and "result_seq" not in r]


def make_certs(d):
    """A test CA and a server certificate for api.test, localhost, 127.0.0.1, ::1."""
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=keyward test upstream CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=api.test")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:api.test,DNS:*.api.test,DNS:localhost,IP:127.0.0.1,IP:::1\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return d


def stop_listening(sock, accept_thread):
    """Closes a test server's listening socket once its accept thread has
    ended. A thread that had read the descriptor's number just before a
    plain close() could call accept() on whatever socket reuses the number
    next, another test's server, and answer that server's connections as
    its own: a git push in test_git.py was answered by the echo server of
    an earlier test that way. shutdown() wakes a thread blocked in accept()
    (Linux); the join makes sure it is gone before the number is freed."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    accept_thread.join(10)
    sock.close()


class Request:
    def __init__(self, head, method, target, version, headers, body):
        self.head = head
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers  # list of (name, value) as received
        self.body = body

    def header(self, name):
        vals = [v for n, v in self.headers if n.lower() == name.lower()]
        return vals[0] if vals else None


class RecordingReader:
    """A reader over a socket (read, readline). With a sink (a bytearray),
    it keeps a copy of every byte the socket gave, read by the server or
    not: the exact bytes that arrived, for a test to parse strictly."""

    def __init__(self, sock, sink=None):
        self.s = sock
        self.buf = bytearray()
        self.sink = sink

    def _more(self):
        data = self.s.recv(65536)
        if data:
            if self.sink is not None:
                self.sink += data
            self.buf += data
        return bool(data)

    def _take(self, n):
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def readline(self, limit=-1):
        scanned = 0
        while True:
            i = self.buf.find(b"\n", scanned)
            if i >= 0 and (limit < 0 or i < limit):
                return self._take(i + 1)
            if limit >= 0 and len(self.buf) >= limit:
                return self._take(limit)
            scanned = len(self.buf)
            if not self._more():
                return self._take(len(self.buf))

    def read(self, n):
        while len(self.buf) < n and self._more():
            pass
        return self._take(n)


class Upstream:
    """A small HTTP/1.1 server written against raw sockets, so tests see the
    exact request keyward forwarded. Paths:
      /sse           three events, 0.3 s apart, chunked
      /big/N         N bytes of body (Content-Length)
      /chunked/N     N bytes as chunks of 1000
      /status/NNN    that status, no body for 1xx/204/304
      /close         a body delimited by closing the connection
      .../drop       answers as keep-alive, then closes the connection
      .../dropnext   answers, then reads the next request on that connection
                     and closes without answering it
      /continue      answers 100 Continue first, then 200
      /ws            answers an Upgrade with 101 and then echoes bytes
      anything else  200 with a JSON description of the request
    """

    def __init__(self, tls=None, host="api.test", record=False):
        self.host = host
        self.requests = []
        # record=True: one bytearray per connection with every byte received
        self.record = record
        self.raw = []
        self.connections = 0
        self.dropped = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        self.ca_file = None
        self.tls = tls is not None
        if tls is not None:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(str(tls / "server.pem"), str(tls / "server.key"))
            self.ctx.set_alpn_protocols(["http/1.1"])
            self.ca_file = str(tls / "ca.pem")
        self.closed = False
        self.accept_thread = threading.Thread(target=self._accept, daemon=True)
        self.accept_thread.start()

    def close(self):
        self.closed = True
        stop_listening(self.sock, self.accept_thread)

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(10)
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            sink = None
            if self.record:
                sink = bytearray()
                with self.lock:
                    self.raw.append(sink)
            f = RecordingReader(c, sink)
            drop_next = False
            while True:
                req = self._read_request(f)
                if req is None:
                    return
                if drop_next:
                    # The request arrived on a connection we decided to
                    # close: close without answering, as a server whose
                    # idle timeout fired just then would.
                    with self.lock:
                        self.dropped += 1
                    return
                with self.lock:
                    self.requests.append(req)
                drop_next = req.target.endswith("/dropnext")
                if not self._respond(c, f, req):
                    return
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            try:
                c.close()
            except OSError:
                pass

    @staticmethod
    def _read_head(f):
        """Reads a request head: (raw head, method, target, version, headers
        as received, lower-cased dict), or None at end of stream."""
        head = b""
        while True:
            line = f.readline(65537)
            if not line:
                return None
            head += line
            if line in (b"\r\n", b"\n"):
                break
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for l in lines[1:]:
            if not l:
                continue
            n, v = l.split(":", 1)
            headers.append((n, v.strip()))
        return head, method, target, version, headers, {n.lower(): v for n, v in headers}

    def _read_request(self, f):
        got = self._read_head(f)
        if got is None:
            return None
        head, method, target, version, headers, hd = got
        body = b""
        if hd.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    while f.readline() not in (b"\r\n", b""):
                        pass
                    break
                body += f.read(size)
                f.read(2)
        elif "content-length" in hd:
            body = f.read(int(hd["content-length"]))
        return Request(head, method, target, version, headers, body)

    def _respond(self, c, f, req):
        path = req.target.split("?")[0]
        if path == "/sse":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                ev = f"data: event {i}\n\n".encode()
                c.sendall(b"%x\r\n%s\r\n" % (len(ev), ev))
                time.sleep(0.3)
            c.sendall(b"0\r\n\r\n")
            return True
        if "/stall/" in path:
            # answers only after the given seconds (a slow upstream)
            time.sleep(float(path.rsplit("/", 1)[1]))
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        if path.startswith("/big/"):
            n = int(path.split("/")[2])
            block = b"x" * 65536
            # the head with the first block: a head sent alone would hold
            # the body back for keyward's delayed ACK (Nagle, ~40 ms)
            k = min(n, len(block))
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + block[:k])
            n -= k
            while n > 0:
                k = min(n, len(block))
                c.sendall(block[:k])
                n -= k
            return True
        if path.startswith("/chunked/"):
            n = int(path.split("/")[2])
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while n > 0:
                k = min(n, 1000)
                c.sendall(b"%x\r\n%s\r\n" % (k, b"y" * k))
                n -= k
            c.sendall(b"0\r\n\r\n")
            return True
        if path.startswith("/status/"):
            st = int(path.split("/")[2])
            if st in (204, 304) or st < 200:
                c.sendall(b"HTTP/1.1 %d Status\r\n\r\n" % st)
                if st < 200:
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            else:
                c.sendall(b"HTTP/1.1 %d Status\r\nContent-Length: 6\r\n\r\nstatus" % st)
            return True
        if path.endswith("/drop"):
            # Keep-alive by the headers, then closes anyway: the race a
            # connection pool must survive.
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndrop")
            return False
        if path == "/close":
            c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            return False
        if path == "/ws":
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            if f.buf:
                c.sendall(f._take(len(f.buf)))  # bytes that came with the upgrade request
            while True:
                data = c.recv(65536)
                if not data:
                    return False
                if f.sink is not None:
                    f.sink += data
                c.sendall(data)
        desc = {
            "method": req.method,
            "target": req.target,
            "headers": req.headers,
            "body_len": len(req.body),
        }
        body = json.dumps(desc).encode()
        if req.method == "HEAD":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (len(body), body))
        return True


def read_head(s, bufsize=4096):
    """Reads from socket s up to the end of an HTTP head (and whatever came
    with it); less, without the blank line, if the peer closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(bufsize)
        if not chunk:
            break
        data += chunk
    return data


def connect_head(s, authority):
    """Sends CONNECT authority on socket s and returns keyward's answer head
    (or what came before the connection closed)."""
    s.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
    return read_head(s)


def raw_request(port, data, timeout=5, tls_host=None, ca=None, read_all=True):
    """Sends raw bytes to the proxy (optionally inside a CONNECT tunnel) and
    returns everything it answers until it closes or goes quiet."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls_host:
        host, p = tls_host
        resp = connect_head(s, f"{host}:{p}")
        if not resp.startswith(b"HTTP/1.1 200"):
            return resp
        ctx = ssl.create_default_context(cafile=ca)
        s = ctx.wrap_socket(s, server_hostname=host)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_all:
                break
    except (socket.timeout, ssl.SSLError, ConnectionResetError):
        pass
    s.close()
    return out


def status_of(resp):
    try:
        return int(resp.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


# ---- helpers for streaming and lifecycle tests ----

def open_tunnel(port, host, uport, ca, timeout=10):
    """A TLS socket to host:uport through keyward's CONNECT on port, or raises."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    resp = connect_head(s, f"{host}:{uport}")
    if not resp.startswith(b"HTTP/1.1 200"):
        s.close()
        raise AssertionError(f"CONNECT refused: {resp!r}")
    ctx = ssl.create_default_context(cafile=str(ca))
    return ctx.wrap_socket(s, server_hostname=host)


class HttpConn:
    """A buffered HTTP/1.1 client over a raw (or TLS) socket, for tests that
    need to see exactly what comes back on one connection."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def _more(self):
        data = self.s.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def read_until(self, sep):
        while sep not in self.buf:
            self._more()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n):
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        """(status, {lower-case name: value}, raw head) of the next response head."""
        raw = self.read_until(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for l in lines[1:]:
            if l:
                n, v = l.split(":", 1)
                headers[n.strip().lower()] = v.strip()
        return status, headers, raw

    def read_response(self, method="GET", skip_interim=True):
        """(status, headers, body, raw head); 1xx heads are skipped unless asked."""
        while True:
            status, headers, raw = self.read_head()
            if status >= 200 or status == 101 or not skip_interim:
                break
        if method == "HEAD" or status in (204, 304) or status < 200:
            return status, headers, b"", raw
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self.read_exact(size)
                self.read_exact(2)
            return status, headers, bytes(body), raw
        if "content-length" in headers:
            return status, headers, self.read_exact(int(headers["content-length"])), raw
        body = self.buf
        self.buf = b""
        while True:
            try:
                data = self.s.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not data:
                break
            body += data
        return status, headers, body, raw

    def closed_by_peer(self, timeout):
        """True if the peer closes within timeout with nothing more to say."""
        self.s.settimeout(timeout)
        try:
            data = self.s.recv(65536)
        except socket.timeout:
            return False
        except (ssl.SSLError, ConnectionResetError):
            return True
        if data:
            self.buf += data
            return False
        return True

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def vmrss_kib(pid):
    """Resident set size of a process in KiB, from /proc/PID/status."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


class RssSampler:
    """Samples a process's VmRSS in a thread; .peak is the largest seen (KiB)."""

    def __init__(self, pid, interval=0.01):
        self.pid = pid
        self.interval = interval
        self.peak = vmrss_kib(pid)
        self.samples = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, vmrss_kib(self.pid))
                self.samples += 1
            except (OSError, AssertionError):
                return
            time.sleep(self.interval)

    def stop(self):
        self._stop.set()
        self._t.join(5)
        return self.peak
