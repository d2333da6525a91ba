"""keyward's life as a process: SIGHUP reloads (good and broken policies,
with requests in flight), SIGTERM drains, the audit log failing closed when
it cannot be written, the command line's help and errors, and start-up
failures that say what is wrong. No secret appears in any output."""

import errno
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import KEYWARD, policy_for
from kwtest import PLACEHOLDER, PLACEHOLDER2, SECRET, SECRET2, HttpConn, join_requests, open_tunnel, unfinished

MiB = 1024 * 1024


def session(p):
    s = requests.Session()
    s.proxies = {"https": p.url, "http": p.url}
    s.verify = str(p.ca)
    return s


def base_url(u):
    return f"{'https' if u.tls else 'http'}://api.test:{u.port}"


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def kw_env(home, **extra):
    e = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KEYWARD_HOME": str(home),
        "TEST_TOKEN": SECRET,
        "TEST_TOKEN2": SECRET2,
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1"),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
    }
    e.update(extra)
    return e


def kw(args, home, timeout=30, **extra):
    """Runs keyward to completion; the secret must not be in what it prints."""
    r = subprocess.run([KEYWARD, *args], env=kw_env(home, **extra), capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    for s in (SECRET, SECRET2):
        assert s not in r.stdout and s not in r.stderr, "secret in keyward's output"
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error:" not in r.stderr, r.stderr
    return r


def assert_no_secret(*blobs):
    for b in blobs:
        for s in (SECRET, SECRET2):
            assert s not in b, "secret found in keyward's output or audit log"


# ---- SIGHUP ----

def reload_and_wait(p, count_before):
    p.signal(signal.SIGHUP)
    wait_for(lambda: len([r for r in p.records() if r["event"] == "reload"]) > count_before, 10, "reload record")


def n_reloads(p):
    return len([r for r in p.records() if r["event"] == "reload"])


def test_sighup_reloads_policy(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream))
    s = session(p)
    assert s.get(f"{base_url(upstream)}/api/x", timeout=10).status_code == 200
    p.policy.write_text(policy_for(upstream, paths='["/other/**"]'))
    p.signal(signal.SIGHUP)
    wait_for(lambda: "policy reloaded" in p.stderr, 10, "'policy reloaded' in stderr")
    # A new connection and the kept-alive one both get the new policy.
    r = s.get(f"{base_url(upstream)}/api/x", timeout=10)
    assert r.status_code == 403 and r.json()["check"] == "path"
    r = session(p).get(f"{base_url(upstream)}/api/y", timeout=10)
    assert r.status_code == 403
    assert session(p).get(f"{base_url(upstream)}/other/z", timeout=10).status_code == 200
    reloads = [r for r in p.records() if r["event"] == "reload"]
    assert len(reloads) == 1 and reloads[0]["decision"] == "allow", reloads
    assert [q.target for q in upstream.requests] == ["/api/x", "/other/z"]


@pytest.mark.parametrize("broken,where", [
    ("version: 1\nroutes:\n  - host: [unclosed\n", "syntax"),
    (None, "semantic"),
])
def test_sighup_with_broken_policy_keeps_running_one(proxy_factory, upstream, broken, where):
    p = proxy_factory(policy_for(upstream))
    if broken is None:
        broken = policy_for(upstream, inject="bearr")  # unknown inject mode
    p.policy.write_text(broken)
    p.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in p.stderr, 10, "'reload failed' in stderr")
    err = [l for l in p.stderr.splitlines() if "reload failed" in l][0]
    assert re.search(re.escape(str(p.policy)) + r":\d+:\d+: ", err), err
    if where == "semantic":
        assert "bearr" in err
    # The running policy still serves.
    assert session(p).get(f"{base_url(upstream)}/api/x", timeout=10).status_code == 200
    assert session(p).get(f"{base_url(upstream)}/elsewhere", timeout=10).status_code == 403
    reloads = [r for r in p.records() if r["event"] == "reload"]
    assert len(reloads) == 1 and reloads[0]["decision"] == "error", reloads
    assert str(p.policy) in reloads[0]["detail"]
    # Fixing the file and reloading again works.
    p.policy.write_text(policy_for(upstream, paths='["/other/**"]'))
    reload_and_wait(p, 1)
    assert [r["decision"] for r in p.records() if r["event"] == "reload"] == ["error", "allow"]
    assert session(p).get(f"{base_url(upstream)}/api/x", timeout=10).status_code == 403


def test_reload_during_download(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, paths='["/**"]'))
    n = 100_000_000
    got = 0
    bad = 0
    with session(p).get(f"{base_url(upstream)}/big/{n}", stream=True, timeout=60) as r:
        assert r.status_code == 200
        it = r.iter_content(chunk_size=MiB)
        while got < 10 * MiB:
            chunk = next(it)
            got += len(chunk)
            bad += len(chunk) - chunk.count(b"x")
        # Mid-body (the client pauses, keyward is backpressured): a reload
        # that denies this very path must not touch the request in flight.
        p.policy.write_text(policy_for(upstream, paths='["/other/**"]'))
        reload_and_wait(p, 0)
        for chunk in it:
            got += len(chunk)
            bad += len(chunk) - chunk.count(b"x")
    assert got == n and bad == 0
    rec = [r for r in p.requests() if r["path"] == f"/big/{n}"][-1]
    assert rec["decision"] == "allow" and rec["bytes_out"] == n
    assert session(p).get(f"{base_url(upstream)}/big/10", timeout=10).status_code == 403


# ---- SIGTERM ----

def probe_new_connection(port):
    """What a new client sees: 'refused', 'closed' (accepted, then closed or
    reset without an answer), 'timeout', or the answer's first bytes."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
    except ConnectionRefusedError:
        return "refused"
    try:
        s.settimeout(5)
        s.sendall(b"GET http://api.test/api/x HTTP/1.1\r\nHost: api.test\r\n\r\n")
        data = s.recv(100)
        return data if data else "closed"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        return "timeout"
    finally:
        s.close()


def test_sigterm_drains_requests_in_flight(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, paths='["/**"]'))
    s = session(p)
    assert s.get(f"{base_url(upstream)}/api/warm", timeout=10).status_code == 200
    # An idle kept-alive connection must not hold the exit up.
    idle = HttpConn(open_tunnel(p.port, "api.test", upstream.port, p.ca))
    events = []
    probe = {}
    buf = b""
    with session(p).get(f"{base_url(upstream)}/sse", stream=True, timeout=10) as r:
        assert r.status_code == 200
        for chunk in r.iter_content(chunk_size=None):
            buf += chunk
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                events.append(ev)
                if len(events) == 1:
                    p.signal(signal.SIGTERM)
                    wait_for(lambda: "finishing requests in flight" in p.stderr, 5, "drain message")
                    t = threading.Thread(target=lambda: probe.setdefault("new", probe_new_connection(p.port)))
                    t.start()
        # iter_content ends only after the terminating chunk arrived intact.
    assert events == [b"data: event 0", b"data: event 1", b"data: event 2"]
    assert p.proc.wait(timeout=20) == 0
    t.join(10)
    assert probe["new"] in ("refused", "closed"), f"a new connection after SIGTERM got {probe['new']!r}"
    assert idle.closed_by_peer(1)
    idle.close()
    recs = p.records()
    assert recs[-1]["event"] == "stop", recs[-1]
    sse = [r for r in p.requests() if r.get("path") == "/sse"]
    assert sse and sse[-1]["decision"] == "allow" and sse[-1]["status"] == 200


def test_request_still_running_after_the_drain_period_is_closed_and_audited(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream) + "limits:\n  drain_timeout: 1s\n")
    got = {}

    def slow():
        try:
            got["status"] = session(p).get(f"{base_url(upstream)}/api/stall/6", timeout=20).status_code
        except requests.RequestException as e:
            got["error"] = e
    t = threading.Thread(target=slow)
    t.start()
    wait_for(lambda: [r for r in p.records() if r["event"] == "request"], 10, "the allow record")
    p.signal(signal.SIGTERM)
    assert p.proc.wait(timeout=20) == 0
    t.join(20)
    assert "error" in got, got  # cut off, never answered
    recs = p.records()
    allow = [r for r in recs if r["event"] == "request"]
    assert len(allow) == 1 and allow[0]["decision"] == "allow"
    result = [r for r in recs if r["event"] == "result"]
    assert len(result) == 1 and result[0]["request_seq"] == allow[0]["seq"], result
    assert result[0]["decision"] == "error" and result[0]["reason"] == "stop"
    assert recs[-1]["event"] == "stop"
    assert "connections still open after the drain period" in p.stderr


def drain_behind_a_download(p, upstream):
    """SIGTERM to p while a download it serves stalls (nobody reads it), so
    that the drain goes on until the returned connection is closed."""
    c = HttpConn(open_tunnel(p.port, "api.test", upstream.port, p.ca))
    c.send(f"GET /big/100000000 HTTP/1.1\r\nHost: api.test:{upstream.port}\r\n\r\n".encode())
    assert c.read_head()[0] == 200
    p.signal(signal.SIGTERM)
    wait_for(lambda: "finishing requests in flight" in p.stderr, 5, "drain message")
    time.sleep(0.2)
    return c


def test_sigterm_refuses_new_connections_promptly(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, paths='["/**"]'))
    c = drain_behind_a_download(p, upstream)
    t0 = time.monotonic()
    result = probe_new_connection(p.port)
    dt = time.monotonic() - t0
    c.close()  # lets the drain finish
    p.proc.wait(timeout=20)
    assert result in ("refused", "closed") and dt < 2, (result, dt)


def test_drain_leaves_a_shared_unix_listener_quiet(proxy_factory, upstream, tmp_path):
    # Both workers watch the same unix listening socket, which stays open
    # until they are done. When the drain stops watching it, a connection
    # waiting in its backlog must not wake a worker again and again (a
    # registration left behind in a worker's epoll set would: the socket
    # stays readable). keyward must idle while the drain waits.
    sock = tmp_path / "k.sock"
    p = proxy_factory(policy_for(upstream, paths='["/**"]'), args=("--listen", f"unix:{sock}"))
    c = drain_behind_a_download(p, upstream)
    waiting = socket.socket(socket.AF_UNIX)
    waiting.connect(str(sock))  # into the backlog: nobody accepts it now

    def cpu():
        f = pathlib.Path(f"/proc/{p.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    before = cpu()
    time.sleep(1)
    used = cpu() - before
    c.close()  # lets the drain finish
    assert p.proc.wait(timeout=20) == 0
    waiting.close()
    assert used < 0.3, f"keyward used {used:.2f} s of CPU in 1 s of waiting"


def test_unix_listener_is_not_taken_from_a_running_proxy(proxy_factory, upstream, tmp_path):
    # A second keyward started with the same unix:PATH used to unlink the
    # first one's live socket and bind its own: the first one's clients
    # then reached the second (another policy, another audit log), and
    # whichever stopped first removed the other's socket. A socket that
    # something listens on is now left alone, and a proxy removes at exit
    # only the socket file it made.
    sock = tmp_path / "k.sock"
    p = proxy_factory(policy_for(upstream, paths='["/**"]'), args=("--listen", f"unix:{sock}"))
    ino = sock.stat().st_ino
    (tmp_path / "b").mkdir()
    pol = tmp_path / "b" / "policy.yaml"
    pol.write_text(policy_for(upstream))
    r = subprocess.run([KEYWARD, "proxy", "--policy", str(pol), "--listen", f"unix:{sock}",
                        "--audit", str(tmp_path / "b" / "audit.jsonl")],
                       env=kw_env(tmp_path / "b" / "home"), capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode != 0, r.stderr
    assert "listens on this socket already" in r.stderr, r.stderr
    assert sock.stat().st_ino == ino
    c = socket.socket(socket.AF_UNIX)
    c.connect(str(sock))
    c.close()
    # a socket file that replaced it is not removed when p stops
    sock.unlink()
    other = socket.socket(socket.AF_UNIX)
    other.bind(str(sock))
    p.stop()
    assert sock.exists()
    other.close()


# ---- audit log failing closed ----

class RawProxy:
    """keyward proxy started by the test itself, under a command prefix."""

    def __init__(self, tmp, policy_text, audit, prefix=(), home=None):
        self.tmp = pathlib.Path(tmp)
        self.home = home or self.tmp / "home"
        self.policy = self.tmp / "policy.yaml"
        self.policy.write_text(policy_text)
        self.stderr_path = self.tmp / "proxy.stderr"
        self.stderr_file = open(self.stderr_path, "wb")
        self.env = kw_env(self.home)
        cmd = [*prefix, KEYWARD, "proxy", "--policy", str(self.policy), "--listen", "127.0.0.1:0",
               "--audit", str(audit), "--workers", "2", "--resolve", "api.test:127.0.0.1"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, env=self.env, cwd=self.tmp)
        deadline = time.monotonic() + 20
        self.port = None
        while time.monotonic() < deadline and self.port is None:
            for line in self.stderr.splitlines():
                if "listening on 127.0.0.1:" in line:
                    self.port = int(line.rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if self.port is None:
            self.kill()
            raise AssertionError(f"keyward did not start:\n{self.stderr}")
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        out = self.proc.stdout.read().decode(errors="replace")
        self.stderr_file.close()
        return out

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.stderr_file.close()


def unshare_works(tmp):
    if not shutil.which("unshare") or os.geteuid() != 0:
        return False
    d = tmp / "probe"
    d.mkdir()
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs -o size=64k tmpfs "$0"', str(d)], capture_output=True, timeout=10)
    return r.returncode == 0


@pytest.fixture
def full_disk_proxy(tmp_path, plain_upstream):
    """A proxy whose audit log lives on a 64 KiB tmpfs of its own mount
    namespace; the test fills it through /proc/PID/root."""
    if not unshare_works(tmp_path):
        pytest.skip("needs root and unshare -m with tmpfs mounts")
    fs = tmp_path / "auditfs"
    fs.mkdir()
    prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c",
              'mount -t tmpfs -o size=64k tmpfs "$0" && exec "$@"', str(fs)]
    p = RawProxy(tmp_path, policy_for(plain_upstream), fs / "audit.jsonl", prefix=prefix)
    # unshare and sh exec: the pid is keyward's, and its root sees the tmpfs.
    p.fs = pathlib.Path(f"/proc/{p.proc.pid}/root") / str(fs).lstrip("/")
    p.audit = p.fs / "audit.jsonl"
    assert p.audit.exists()
    yield p
    if p.proc.poll() is None:
        out = p.stop()
    else:
        out = p.proc.stdout.read().decode(errors="replace")
    assert_no_secret(out, p.stderr)
    assert "ERROR: AddressSanitizer" not in p.stderr and "runtime error:" not in p.stderr, p.stderr


def fill(d):
    """Fills the file system of d; returns the filler's path."""
    f = d / "filler"
    with open(f, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    # Also the bytes of a partly used page.
    with open(d / "filler2", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0")
        except OSError:
            pass
    return f


def get_plain(p, u, path, timeout=10):
    return requests.get(f"http://api.test:{u.port}{path}", proxies={"http": p.url}, timeout=timeout)


def audit_lines(p):
    return p.audit.read_bytes().split(b"\n")


def audit_records(p):
    return [json.loads(l) for l in audit_lines(p) if l]


def test_audit_log_unwritable_fails_closed(full_disk_proxy, plain_upstream):
    p, u = full_disk_proxy, plain_upstream
    assert get_plain(p, u, "/api/before").status_code == 200
    assert_no_secret(p.audit.read_text())
    fill(p.fs)
    # The audit file's last page still has room for a few records (tmpfs
    # allocates by pages); after that, the first request whose record
    # cannot be written is refused (see the test below), and from then on
    # keyward must refuse.
    statuses = []
    for i in range(20):
        r = get_plain(p, u, f"/api/full{i}")
        statuses.append(r.status_code)
        if r.status_code == 503:
            break
    assert statuses[-1] == 503, statuses
    print("statuses after the disk filled:", statuses)
    body = r.json()
    assert body["check"] == "audit"
    assert "cannot write the audit record" in p.stderr
    recorded = {r.get("path") for r in audit_records(p)}
    unaudited = [q.target for q in u.requests if q.target not in recorded]
    assert unaudited == [], unaudited
    # Refusals go on while the disk stays full.
    assert get_plain(p, u, "/api/still-full").status_code == 503
    # HTTPS is refused too, at the CONNECT.
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-x", p.url, "-o", "/dev/null", "-w", "%{http_code}",
                        "https://api.test:1/"], capture_output=True, text=True, timeout=20)
    assert r.stdout.strip() == "503" or "503" in r.stderr, (r.stdout, r.stderr)
    # The file holds complete lines only.
    data = p.audit.read_bytes()
    assert data.endswith(b"\n")
    v = subprocess.run([KEYWARD, "audit", "verify", str(p.audit)], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, v.stdout + v.stderr
    # Space again: service resumes (the first write that works heals it).
    for f in ("filler", "filler2"):
        (p.fs / f).unlink()
    after = [get_plain(p, u, f"/api/after{i}").status_code for i in range(3)]
    assert after[-1] == 200 and after.count(200) >= 2, after
    v = subprocess.run([KEYWARD, "audit", "verify", str(p.audit)], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0, v.stdout + v.stderr
    # (The request whose result did not fit stays without one.)
    deadline = time.time() + 3
    while time.time() < deadline:
        recs = join_requests(audit_records(p))
        if not [r for r in unfinished(recs) if r["path"].startswith("/api/after")]:
            break
        time.sleep(0.01)
    assert [r["path"] for r in recs if r.get("path", "").startswith("/api/after") and r.get("status") == 200]
    assert_no_secret(p.audit.read_text())


def test_request_unaudited_is_never_forwarded(full_disk_proxy, plain_upstream):
    # The decision record of an allowed request is written before anything
    # is sent upstream; when it cannot be written, the request gets 503 and
    # the upstream sees nothing of it, not even a connection. Every request
    # that reached the upstream has its decision in the log.
    p, u = full_disk_proxy, plain_upstream
    assert get_plain(p, u, "/api/before").status_code == 200
    fill(p.fs)
    for i in range(50):
        path = f"/api/full{i}"
        seen, conns = len(u.requests), u.connections
        r = get_plain(p, u, path)
        decided = [x for x in join_requests(audit_records(p)) if x.get("path") == path]
        if r.status_code == 503:
            break
        assert r.status_code == 200, r.status_code
        # Served: its decision is on disk (its result may not be, if that
        # was the first write to fail; then the next request is refused).
        assert decided and decided[0]["decision"] == "allow", decided
    else:
        pytest.fail("the audit log never filled up")
    assert r.json()["check"] == "audit"
    assert len(u.requests) == seen and u.connections == conns, [q.target for q in u.requests[seen:]]
    assert path not in [q.target for q in u.requests]
    assert not [x for x in decided if x["decision"] == "allow"], decided
    # Whichever record failed first (a decision, or the result of the
    # request before), every later request is refused the same way.
    for i in range(3):
        seen = len(u.requests)
        assert get_plain(p, u, f"/api/still-full{i}").status_code == 503
        assert len(u.requests) == seen
    recorded = {x.get("path") for x in audit_records(p)}
    assert [q.target for q in u.requests if q.target not in recorded] == []
    assert_no_secret(p.audit.read_text())


# ---- the command line ----

def test_policy_check(tmp_path, upstream):
    pol = tmp_path / "policy.yaml"
    pol.write_text(policy_for(upstream))
    r = kw(["policy", "check", str(pol)], tmp_path / "home")
    assert r.returncode == 0, r.stdout + r.stderr
    assert PLACEHOLDER in r.stdout
    assert "valid policy" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nroutes:\n  - host: [unclosed\n")
    r = kw(["policy", "check", str(bad)], tmp_path / "home")
    assert r.returncode == 2
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: ", r.stderr), r.stderr
    bad.write_text(policy_for(upstream, inject="bearr"))
    r = kw(["policy", "check", str(bad)], tmp_path / "home")
    assert r.returncode == 2
    assert re.search(re.escape(str(bad)) + r":\d+:\d+: .*bearr", r.stderr), r.stderr
    # A valid policy whose credential cannot be read now: 1, and says which.
    r = subprocess.run([KEYWARD, "policy", "check", str(pol)], capture_output=True, text=True, timeout=30,
                       env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYWARD_HOME": str(tmp_path / "h")})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "TEST_TOKEN" in r.stdout + r.stderr


def test_secret_pasted_as_placeholder_is_not_shown_nor_attached(tmp_path, proxy_factory, upstream):
    # An operator who pastes the real token as placeholder: gives it to
    # every sandbox (the placeholder is the sandbox's variable) and sees
    # policy check print it (into a CI log, say). policy check says so
    # without printing it (exit 2), and the proxy refuses the credential
    # (503) instead of running with a secret the sandbox holds.
    text = policy_for(upstream).replace(f"placeholder: {PLACEHOLDER}", f"placeholder: {SECRET}")
    assert f"placeholder: {SECRET}" in text
    pol = tmp_path / "policy.yaml"
    pol.write_text(text)
    r = kw(["policy", "check", str(pol)], tmp_path / "home")  # kw asserts SECRET is in no output
    assert r.returncode == 2, r.stdout + r.stderr
    assert "holds the secret of credential test" in r.stdout + r.stderr
    assert PLACEHOLDER2 in r.stdout  # the other credential's is shown
    # a placeholder that holds a long secret inside it counts too
    pol.write_text(policy_for(upstream).replace(f"placeholder: {PLACEHOLDER}", f"placeholder: x{SECRET}x"))
    assert kw(["policy", "check", str(pol)], tmp_path / "home").returncode == 2
    p = proxy_factory(text)
    resp = session(p).get(f"{base_url(upstream)}/api/x", timeout=10)
    assert resp.status_code == 503 and resp.json()["check"] == "credential", resp.text
    assert "placeholder" in resp.json()["message"]
    assert upstream.requests == []
    out = p.stop()
    for blob in (out, p.stderr, p.audit.read_text(), resp.text):
        assert SECRET not in blob


def test_policy_check_prints_no_escape_sequences(tmp_path):
    # A policy from a repository is hostile input, and policy check is how
    # a person reviews it. YAML's "\e" puts an ESC in a string the loader
    # takes as it is (an exec: command after a shell comment, a path):
    # printed raw, "\e[8m" hides every line after it (the routes), and
    # cursor moves rewrite the lines before. Every control byte is shown
    # as "?", on stdout and in keyward's log lines on stderr alike.
    pol = tmp_path / "policy.yaml"
    pol.write_text(r"""version: 1
credentials:
  gh:
    from: "exec:printf tok # \e[8m\e]0;title\a"
    env: GH
  other:
    from: "file:/nonexistent/a\e[2Jb\u009bc"
routes:
  - host: api.test
    credential: gh
    inject: bearer
sandbox:
  workspace: "/tmp/w\e[3A\e[2K"
  read_write: ["/tmp/x\ny"]
""")
    r = subprocess.run([KEYWARD, "policy", "check", str(pol)], capture_output=True, timeout=30,
                       env=kw_env(tmp_path / "home"))
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout + r.stderr
    for ch in list(range(0x20)) + [0x7f]:
        if ch != 0x0a:
            assert bytes([ch]) not in out, (ch, out)
    assert "\u009b".encode() not in out and b"\xc2\x9b" not in out
    assert b"exec:printf tok # ?[8m?]0;title?" in r.stdout
    assert b"/tmp/x?y" in r.stdout
    assert b"api.test" in r.stdout
    # keyward run's own messages quote such paths the same way
    pol.write_text('version: 1\nroutes: []\nsandbox:\n  workspace: "/nonexistent/\\e[2Jx"\n')
    r = subprocess.run([KEYWARD, "run", "--policy", str(pol), "--", "true"], capture_output=True, timeout=30,
                       env=kw_env(tmp_path / "home"))
    assert r.returncode == 2, r.stderr
    assert b"workspace /nonexistent/?[2Jx" in r.stderr and b"\x1b" not in r.stderr, r.stderr


@pytest.mark.parametrize("args,mentions", [
    (["--help"], ["proxy", "policy check", "audit verify", "ca export"]),
    (["proxy", "--help"], ["--policy", "--listen", "--audit", "--resolve", "--workers", "SIGHUP"]),
    (["audit", "--help"], ["verify", "show"]),
    (["ca", "--help"], ["export"]),
    (["policy", "--help"], ["check"]),
])
def test_help(tmp_path, args, mentions):
    r = kw(args, tmp_path / "home")
    assert r.returncode == 0, r.stderr
    for m in mentions:
        assert m in r.stdout, f"{m!r} not in help of {args}"


@pytest.mark.parametrize("args", [["frobnicate"], ["proxy", "--no-such-option"], ["audit", "frob", "x"],
                                  ["policy"], ["ca", "import"], ["proxy", "--listen", "127.0.0.1:0"]])
def test_usage_errors_exit_2(tmp_path, args):
    r = kw(args, tmp_path / "home")
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert r.stderr.strip(), "a usage error must say something"


# ---- start-up failures ----

def proxy_cmd(policy, listen="127.0.0.1:0", *extra):
    return ["proxy", "--policy", str(policy), "--listen", listen, "--workers", "1", *extra]


def test_missing_policy_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    r = kw(proxy_cmd(missing), tmp_path / "home")
    assert r.returncode in (1, 2)
    assert str(missing) in r.stderr
    assert "listening" not in r.stderr


def test_listen_port_in_use(tmp_path, upstream):
    pol = tmp_path / "policy.yaml"
    pol.write_text(policy_for(upstream))
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = kw(proxy_cmd(pol, f"127.0.0.1:{port}", "--audit", str(tmp_path / "a.jsonl")), tmp_path / "home")
    finally:
        s.close()
    assert r.returncode != 0
    assert f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr, r.stderr


def test_ca_key_readable_by_others_is_refused(tmp_path, upstream):
    home = tmp_path / "home"
    r = kw(["ca", "export"], home)
    assert r.returncode == 0 and "BEGIN CERTIFICATE" in r.stdout
    key = home / "ca-key.pem"
    assert key.exists(), list(home.iterdir())
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    pol = tmp_path / "policy.yaml"
    pol.write_text(policy_for(upstream))
    r = kw(proxy_cmd(pol, "127.0.0.1:0", "--audit", str(tmp_path / "a.jsonl")), home)
    assert r.returncode != 0
    assert "chmod 600" in r.stderr and str(key) in r.stderr, r.stderr
    assert "listening" not in r.stderr
    r = kw(["ca", "export"], home)
    assert r.returncode != 0 and "chmod 600" in r.stderr
    assert "BEGIN CERTIFICATE" not in r.stdout


def test_self_started_proxy_leaks_no_secret(tmp_path, upstream):
    # Fixture-started proxies are checked at teardown; this one is not.
    p = RawProxy(tmp_path, policy_for(upstream), tmp_path / "audit.jsonl")
    try:
        ca = tmp_path / "ca.pem"
        ca.write_text(kw(["ca", "export"], p.home).stdout)
        s = requests.Session()
        s.proxies = {"https": p.url}
        s.verify = str(ca)
        assert s.get(f"{base_url(upstream)}/api/x", headers={"Authorization": f"Bearer {PLACEHOLDER}"},
                     timeout=10).status_code == 200
        assert s.get(f"{base_url(upstream)}/nope?t={PLACEHOLDER}", timeout=10).status_code == 403
        assert upstream.requests[0].header("Authorization") == f"Bearer {SECRET}"
    finally:
        out = p.stop()
    assert p.proc.returncode == 0
    assert_no_secret(out, p.stderr, (tmp_path / "audit.jsonl").read_text())


@pytest.mark.parametrize("command", ["verify", "show"])
def test_audit_reading_a_named_pipe_without_a_writer_does_not_hang(tmp_path, command):
    """`keyward audit verify|show` on a named pipe that no one writes to
    ends at once (no records) instead of waiting for a writer forever; a
    pipe that has a writer is read to its end."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    r = kw(["audit", command, str(fifo)], tmp_path, timeout=10)
    assert r.returncode == 0, r.stdout + r.stderr
    if command == "verify":
        assert "0 records, chain intact" in r.stdout, r.stdout
    # a writer that holds the pipe open and writes late: keyward waits for
    # the bytes (it does not take the empty pipe for the end) and reads them
    writer = os.open(fifo, os.O_RDWR)
    try:
        proc = subprocess.Popen([KEYWARD, "audit", command, str(fifo)], env=kw_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        assert proc.poll() is None, proc.communicate()
        os.write(writer, b"not a record\n")
    finally:
        os.close(writer)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode != 0, out + err
    assert ":1:" in out + err, out + err
