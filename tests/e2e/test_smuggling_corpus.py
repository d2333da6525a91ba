"""Runs the smuggling and confusion corpus (data/smuggling.py) against
`keyward proxy`: plain-HTTP absolute-form requests to a `scheme: http`
route, and a representative subset inside an intercepted CONNECT tunnel.

For every row the upstreams' exact received bytes are parsed strictly here
(one framing per request, nothing left over), and the rule of the corpus is
checked: each answer is either a refusal (its status and check, an audit
record, nothing more reaching an upstream, the connection closed) or one
forwarded request whose method and path are the ones in the audit record,
carrying the credential if and only if its route has one."""

import re
import socket
import ssl
import time

import pytest

from conftest import Proxy, policy_for
from data.smuggling import ROWS, TUNNEL
from kwtest import SECRET, SECRET2, Upstream, join_requests, open_tunnel, unfinished

MODES = ["http", "tunnel"]
PARAMS = [(m, n) for m in MODES for n in ROWS
          if m in ROWS[n].get("modes", MODES) and (m == "http" or n in TUNNEL)]


class Env:
    """One proxy per mode for the whole corpus, with two upstreams: api.test
    (credentialed /api/** and /ws, public /public/**) and o.api.test
    (public /public/**)."""

    def __init__(self, mode, certs, tmp):
        self.mode = mode
        tls = certs if mode == "tunnel" else None
        self.up = Upstream(tls=tls, record=True)
        self.other = Upstream(tls=tls, host="o.api.test", record=True)
        extra = route(self.up, "/public/**") + route(self.other, "/public/**")
        self.p = Proxy(tmp, policy_for(self.up, paths='["/api/**", "/ws"]', extra_routes=extra),
                       resolve=("api.test:127.0.0.1", "o.api.test:127.0.0.1"))

    def authority(self, u):
        return f"{u.host}:{u.port}"

    def expand(self, raw):
        tunnel = self.mode == "tunnel"

        def target(m):
            u = self.other if m.group(1) == b"OT" else self.up
            path = m.group(2) if m.group(2) is not None else b"/api/x"
            if tunnel and u is self.up:
                return path
            scheme = b"https" if tunnel else b"http"
            return scheme + b"://" + self.authority(u).encode() + path

        raw = re.sub(rb"\{(T|OT)(?::([^}]*))?\}", target, raw)
        return (raw.replace(b"{H}", self.authority(self.up).encode())
                .replace(b"{OH}", self.authority(self.other).encode())
                .replace(b"{PORT}", str(self.up.port).encode()))

    def connect(self):
        if self.mode != "tunnel":
            return socket.create_connection(("127.0.0.1", self.p.port), timeout=5)
        return open_tunnel(self.p.port, self.up.host, self.up.port, self.p.ca, timeout=5)

    def close(self):
        self.p.check_clean()
        self.up.close()
        self.other.close()


def route(u, paths):
    scheme = "" if u.tls else "\n    scheme: http"
    ca = f"\n    upstream_ca: {u.ca_file}" if u.tls else ""
    return f"""  - host: {u.host}
    port: {u.port}{scheme}
    paths: ["{paths}"]{ca}
    allow_private: true
"""


@pytest.fixture(scope="module")
def envs(certs, tmp_path_factory):
    made = {}

    def get(mode):
        if mode not in made:
            made[mode] = Env(mode, certs, tmp_path_factory.mktemp(f"corpus-{mode}"))
        return made[mode]

    yield get
    for e in made.values():
        e.close()


# ---- a strict reader of what the upstream received ----

class Parsed:
    def __init__(self):
        self.requests = []  # (method, target, headers, body)
        self.incomplete = False  # ends inside a request
        self.partial = None  # (method, target, headers) of a request whose body was cut
        self.opaque = b""  # bytes after a request that switched protocols


def parse_strict(data, switched=lambda method, target: False):
    """Requests in keyward's own framing: CRLF lines only, single spaces,
    token names, one of Content-Length or 'chunked' (plain hex sizes, no
    extension, no trailer), nothing else. Fails the test on anything else."""
    out = Parsed()
    i = 0
    while i < len(data):
        end = data.find(b"\r\n\r\n", i)
        if end < 0:
            out.incomplete = True
            return out
        head = data[i:end].decode("latin-1")
        i = end + 4
        assert "\n" not in head.replace("\r\n", "") and "\r" not in head.replace("\r\n", ""), head
        lines = head.split("\r\n")
        m = re.fullmatch(r"([A-Z]+) (/[!-~]*) HTTP/1\.1", lines[0])
        assert m, f"request line not in canonical form: {lines[0]!r}"
        headers = []
        for l in lines[1:]:
            hm = re.fullmatch(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+): ?([\t -~\x80-\xff]*)", l)
            assert hm, f"header line not canonical: {l!r}"
            headers.append((hm.group(1).lower(), hm.group(2)))
        names = [n for n, _ in headers]
        assert names.count("host") == 1, headers
        assert names.count("content-length") + names.count("transfer-encoding") <= 1, headers
        body = b""
        out.partial = (m.group(1), m.group(2), headers)
        if "transfer-encoding" in names:
            assert dict(headers)["transfer-encoding"] == "chunked", headers
            while True:
                e = data.find(b"\r\n", i)
                if e < 0:
                    out.incomplete = True
                    return out
                size_line = data[i:e]
                assert re.fullmatch(rb"[0-9a-f]+", size_line), size_line[:80]
                size = int(size_line, 16)
                i = e + 2
                if size == 0:
                    if data[i:i + 2] != b"\r\n":
                        assert len(data) - i < 2, "trailer or junk after the last chunk"
                        out.incomplete = True
                        return out
                    i += 2
                    break
                if len(data) < i + size + 2:
                    out.incomplete = True
                    return out
                body += data[i:i + size]
                assert data[i + size:i + size + 2] == b"\r\n"
                i += size + 2
        elif "content-length" in names:
            n = int(dict(headers)["content-length"])
            if len(data) < i + n:
                out.incomplete = True
                return out
            body = data[i:i + n]
            i += n
        out.partial = None
        out.requests.append((m.group(1), m.group(2), headers, body))
        if switched(m.group(1), m.group(2)):
            out.opaque = data[i:]
            return out
    return out


def snapshot(u):
    with u.lock:
        return [len(b) for b in u.raw]


def new_bytes(u, before):
    with u.lock:
        return [bytes(b[before[k]:] if k < len(before) else b) for k, b in enumerate(u.raw)]


def exchange(env, data, eof, opaque):
    """Sends data on one client connection; returns what came back before the
    proxy closed it (or it went quiet), and whether it closed."""
    s = env.connect()
    s.sendall(data)
    if eof:
        if isinstance(s, ssl.SSLSocket):
            s = s.unwrap()  # close_notify, then the TCP half-close
        s.shutdown(socket.SHUT_WR)
    s.settimeout(1.5 if opaque else 5)
    out, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            out += chunk
            if opaque and out.endswith(opaque):
                break
    except socket.timeout:
        closed = False  # went quiet with the connection open
    except (ssl.SSLError, ConnectionResetError):
        closed = True  # a reset (or a TLS close without close_notify) ends it too
    s.close()
    return out, closed


# A status line at the start of the stream or right after a JSON answer or
# a head without body (keyward's refusals are JSON; the upstream's too).
STATUS_LINE = re.compile(rb"(?:^|(?<=\r\n\r\n)|(?<=}))HTTP/1\.1 (\d{3}) ")


def statuses_of(resp):
    return [int(m.group(1)) for m in STATUS_LINE.finditer(resp)]


@pytest.mark.parametrize("mode,name", PARAMS, ids=[f"{m}-{n}" for m, n in PARAMS])
def test_corpus_row(envs, mode, name):
    env = envs(mode)
    row = dict(ROWS[name])
    if mode == "tunnel":
        row.update(row.get("tunnel", {}))
    raw = env.expand(row["raw"])
    opaque = env.expand(row["opaque"]) if "opaque" in row else None
    p = env.p
    n_records = len(p.records())
    before = {"up": snapshot(env.up), "other": snapshot(env.other)}

    resp, closed = exchange(env, raw, row.get("eof", False), opaque)

    # Answers: each expected status in order (None: the request was cut by
    # the client, any or no answer).
    want = row["statuses"]
    got = statuses_of(resp)
    if want != [None]:
        assert got == want, resp[:600]
        if want[-1] >= 400:
            assert closed, "a refusal must close the connection"
            last_head = resp[list(STATUS_LINE.finditer(resp))[-1].start():].partition(b"\r\n\r\n")[0]
            assert b"Connection: close" in last_head
            assert f'"check":"{row["check"]}"'.encode() in resp.replace(b" ", b""), resp[-400:]

    # Audit: wait until every allowed request has its result, then one record
    # per answer, in order, that says what the policy decided.
    deadline = time.time() + 5
    while True:
        recs = [r for r in join_requests(p.records()) if r["seq"] >= n_records]
        if not unfinished(recs) or time.time() > deadline:
            break
        time.sleep(0.02)
    time.sleep(0.1)  # anything still on its way upstream arrives
    recs = [r for r in join_requests(p.records()) if r["seq"] >= n_records and r["event"] == "request"]
    if want != [None]:
        assert [r.get("status") for r in recs] == want, recs
        for r, st in zip(recs, want):
            assert r["decision"] == ("allow" if st < 400 else "deny"), r
        if want[-1] >= 400:
            assert recs[-1]["reason"] == row["check"], recs[-1]
    else:
        # The client left mid-request: no record says it ended well.
        assert not [r for r in recs if r["decision"] == "allow" and r.get("status") == 200], recs

    # Upstreams: strictly parsed, exactly the forwarded requests.
    switched = lambda m, t: t == "/ws"
    forwarded_up, forwarded_other, partials, opaques = [], [], 0, b""
    for key, u, into in (("up", env.up, forwarded_up), ("other", env.other, forwarded_other)):
        for chunk in new_bytes(u, before[key]):
            parsed = parse_strict(chunk, switched)
            into += parsed.requests
            partials += parsed.incomplete
            opaques += parsed.opaque
            heads = [(m, t, h) for m, t, h, _ in parsed.requests] + ([parsed.partial] if parsed.partial else [])
            credentialed = 0
            for (method, target, headers) in heads:
                auth = [v for n, v in headers if n == "authorization"]
                if u is env.up and target.startswith(("/api/", "/ws")):
                    assert auth == [f"Bearer {SECRET}"], headers
                    credentialed += 1
                else:
                    assert auth == [], headers
            # The credential is in those heads only: not in a body, not in
            # relayed WebSocket bytes, not in a request of another route.
            assert chunk.count(SECRET.encode()) == credentialed, "credential where the policy does not put it"
            assert SECRET2.encode() not in chunk
    got_fw = [(m, t, b) for m, t, _, b in forwarded_up] + [(m, "o.api.test" + t, b) for m, t, _, b in forwarded_other]
    assert got_fw == [tuple(f) for f in row["forwarded"]], got_fw
    assert partials <= (1 if row.get("partial") else 0), "an incomplete request reached the upstream"
    assert opaques == (opaque or b""), opaques[:200]

    # What the audit says the policy checked is what the upstreams got.
    checked = [(r["method"], ("o.api.test" if r["host"] == "o.api.test" else "") + r["path"]) for r in recs
               if r["decision"] == "allow"]
    if want != [None]:
        assert checked == [(m, t) for m, t, _ in got_fw], (checked, got_fw)
