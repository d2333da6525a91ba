"""Fixtures for end-to-end tests: the real keyward binary, real TLS upstreams on
loopback that record exactly what they receive, and a check that no made-up
secret ever shows up in keyward's output or audit log."""

import os
import pathlib
import signal
import subprocess
import tempfile
import time

import pytest

from kwtest import Upstream, join_requests, make_certs, unfinished, SECRET, SECRET2, PLACEHOLDER, PLACEHOLDER2

# The tests choose their own CA bundles and proxies; variables of the
# machine running them (requests lets REQUESTS_CA_BUNDLE override a
# session's verify=) must not decide.
for _v in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY",
           "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy", "no_proxy"):
    os.environ.pop(_v, None)

KEYWARD = os.environ.get("KEYWARD_BIN") or str(
    pathlib.Path(__file__).resolve().parents[2] / "build" / "keyward")

# KEYWARD_WRAPPER runs every keyward the tests start under a command, e.g.
# "valgrind --error-exitcode=99 --leak-check=full" (make test-valgrind). A
# small script that execs the wrapper takes the binary's place, so the
# process id the tests see is keyward's (the wrapper's, for valgrind, which
# runs the program in its own process) and every call goes through it.
WRAPPED = bool(os.environ.get("KEYWARD_WRAPPER"))
if WRAPPED:
    import shlex
    _wrap_dir = tempfile.mkdtemp(prefix="kw-wrapper-")
    os.chmod(_wrap_dir, 0o755)
    _script = pathlib.Path(_wrap_dir) / "keyward"
    _script.write_text(f"#!/bin/sh\nexec {os.environ['KEYWARD_WRAPPER']} {shlex.quote(KEYWARD)} \"$@\"\n")
    _script.chmod(0o755)
    KEYWARD = str(_script)
# Start-up and shutdown take longer under a wrapper such as valgrind.
SLOW = float(os.environ.get("KEYWARD_TIMEOUT_SCALE", "10" if WRAPPED else "1"))


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def upstream(certs):
    """An HTTPS upstream on 127.0.0.1 whose certificate names api.test."""
    u = Upstream(tls=certs)
    yield u
    u.close()


@pytest.fixture
def plain_upstream():
    u = Upstream(tls=None)
    yield u
    u.close()


class Proxy:
    """A running `keyward proxy` with its own state directory and audit log."""

    def __init__(self, tmp, policy_text, env=None, args=(), resolve=("api.test:127.0.0.1",)):
        self.tmp = pathlib.Path(tmp)
        self.home = self.tmp / "home"
        self.policy = self.tmp / "policy.yaml"
        self.policy.write_text(policy_text)
        self.audit = self.tmp / "audit.jsonl"
        self.stderr_path = self.tmp / "proxy.stderr"
        e = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KEYWARD_HOME": str(self.home),
            "TEST_TOKEN": SECRET,
            "TEST_TOKEN2": SECRET2,
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1"),
            "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
        }
        e.update(env or {})
        cmd = [KEYWARD, "proxy", "--policy", str(self.policy), "--listen", "127.0.0.1:0",
               "--audit", str(self.audit), "--workers", "2"]
        for r in resolve:
            cmd += ["--resolve", r]
        cmd += list(args)
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, env=e, cwd=self.tmp)
        self.port = self._wait_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ca = self.tmp / "keyward-ca.pem"
        self.ca.write_bytes(subprocess.run([KEYWARD, "ca", "export"], env=e, check=True,
                                           capture_output=True).stdout)

    def _wait_port(self):
        deadline = time.time() + 20 * SLOW
        while time.time() < deadline:
            text = self.stderr_path.read_text(errors="replace")
            for line in text.splitlines():
                if "listening on 127.0.0.1:" in line:
                    return int(line.rsplit(":", 1)[1])
            if self.proc.poll() is not None:
                raise AssertionError(f"keyward exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.02)
        raise AssertionError("keyward did not start listening:\n" + self.stderr_path.read_text())

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def records(self):
        import json
        return [json.loads(l) for l in self.audit.read_text().splitlines() if l.strip()]

    def requests(self, settle=3.0):
        """One dict per request, decision and result joined (kwtest.join_requests).
        A result is written at the end of the event-loop pass in which its
        request ended, which may be a moment after the client read the last
        byte: wait up to settle seconds for every allowed request to have one."""
        deadline = time.time() + settle
        while True:
            recs = join_requests(self.records())
            if not unfinished(recs) or time.time() >= deadline:
                return recs
            time.sleep(0.01)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        timeout *= SLOW
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("keyward did not exit on SIGTERM")
        out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
        self.stderr_file.close()
        return out

    def check_clean(self):
        """No sanitizer report, no secret anywhere in what keyward wrote."""
        out = self.stop()
        err = self.stderr
        assert "ERROR: AddressSanitizer" not in err, err
        assert "ERROR: LeakSanitizer" not in err, err
        assert "runtime error:" not in err, err
        blobs = {"stdout": out, "stderr": err,
                 "audit": self.audit.read_text() if self.audit.exists() else ""}
        for name, blob in blobs.items():
            for s in (SECRET, SECRET2):
                assert s not in blob, f"secret found in {name}"
        if self.audit.exists() and self.audit.stat().st_size:
            v = subprocess.run([KEYWARD, "audit", "verify", str(self.audit)], capture_output=True, text=True)
            assert v.returncode == 0, v.stdout + v.stderr
        assert self.proc.returncode == 0, f"keyward exit status {self.proc.returncode}\n{err}"


@pytest.fixture
def proxy_factory(tmp_path):
    started = []

    def start(policy_text, **kw):
        d = tmp_path / f"p{len(started)}"
        d.mkdir()
        p = Proxy(d, policy_text, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.check_clean()


def policy_for(upstream, extra_routes="", route_extra="", inject="bearer", paths='["/api/**"]',
               methods=None, credential=True):
    """A policy with one credentialed route to the test upstream."""
    m = f"\n    methods: {methods}" if methods else ""
    cred = f"\n    credential: test\n    inject: {inject}" if credential else ""
    scheme = "" if upstream.tls else "\n    scheme: http"
    ca = f"\n    upstream_ca: {upstream.ca_file}" if upstream.tls else ""
    return f"""version: 1
credentials:
  test:
    from: env:TEST_TOKEN
    env: TEST_TOKEN
    placeholder: {PLACEHOLDER}
  other:
    from: env:TEST_TOKEN2
    env: OTHER_TOKEN
    placeholder: {PLACEHOLDER2}
routes:
  - host: {upstream.host}
    port: {upstream.port}{scheme}{m}
    paths: {paths}{cred}{ca}
    allow_private: true{route_extra}
{extra_routes}"""


class Sandbox:
    """Runs `keyward run` with its own state directory, policy and audit log,
    and checks afterwards that no made-up secret reached its output."""

    def __init__(self, tmp, policy_text=None, resolve=("api.test:127.0.0.1",)):
        self.tmp = pathlib.Path(tmp)
        self.home = self.tmp / "state"
        self.workspace = self.tmp / "ws"
        self.workspace.mkdir(exist_ok=True)
        self.policy = None
        if policy_text is not None:
            self.policy = self.tmp / "policy.yaml"
            self.policy.write_text(policy_text)
        self.audit = self.tmp / "audit.jsonl"
        self.resolve = resolve
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KEYWARD_HOME": str(self.home),
            "TEST_TOKEN": SECRET,
            "TEST_TOKEN2": SECRET2,
            "TERM": "dumb",
            "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1"),
            "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
        }

    def argv(self, cmd, args=()):
        a = [KEYWARD, "run", "--audit", str(self.audit), "--workspace", str(self.workspace)]
        if self.policy:
            a += ["--policy", str(self.policy)]
        for r in self.resolve:
            a += ["--resolve", r]
        return a + list(args) + ["--"] + list(cmd)

    def run(self, cmd, args=(), timeout=60, input=None, check_clean=True, env=None):
        e = dict(self.env)
        e.update(env or {})
        p = subprocess.run(self.argv(cmd, args), capture_output=True, timeout=timeout, env=e,
                           input=input, cwd=self.tmp)
        p.out = p.stdout.decode(errors="replace")
        p.err = p.stderr.decode(errors="replace")
        if check_clean:
            self.check_clean(p.out, p.err)
        return p

    def records(self):
        import json
        if not self.audit.exists():
            return []
        return [json.loads(l) for l in self.audit.read_text().splitlines() if l.strip()]

    def requests(self):
        return [r for r in self.records() if r["event"] == "request"]

    def check_clean(self, out, err):
        assert "ERROR: AddressSanitizer" not in err, err
        assert "ERROR: LeakSanitizer" not in err, err
        assert "runtime error:" not in err, err
        audit = self.audit.read_text() if self.audit.exists() else ""
        for name, blob in {"stdout": out, "stderr": err, "audit": audit}.items():
            for s in (SECRET, SECRET2):
                assert s not in blob, f"secret found in {name}"
        if audit:
            v = subprocess.run([KEYWARD, "audit", "verify", str(self.audit)], capture_output=True, text=True)
            assert v.returncode == 0, v.stdout + v.stderr


def userns_problem():
    """Why this machine cannot create user namespaces, or None."""
    p = subprocess.run(["unshare", "--user", "--map-root-user", "--net", "--mount", "true"],
                       capture_output=True, text=True)
    return None if p.returncode == 0 else (p.stderr.strip() or f"unshare exited {p.returncode}")


def skip_sandbox_when_wrapped():
    # valgrind cannot run a program through keyward run's namespaces,
    # seccomp filter and Landlock rules (docs/testing.md).
    if WRAPPED:
        pytest.skip("keyward run is not tested under KEYWARD_WRAPPER (docs/testing.md)")


@pytest.fixture
def sandbox_factory(tmp_path):
    skip_sandbox_when_wrapped()
    problem = userns_problem()
    if problem:
        pytest.skip(f"this kernel does not let us create user namespaces: {problem}")
    n = [0]

    def make(policy_text=None, **kw):
        d = tmp_path / f"s{n[0]}"
        n[0] += 1
        d.mkdir()
        return Sandbox(d, policy_text, **kw)

    return make


def run_as_nobody(cmd, policy_text=None, timeout=60, args=(), cgroup=None):
    """`keyward run [args] -- cmd` started by an ordinary user (nobody,
    through setpriv; the tests run as root), in a fresh world-traversable
    folder with a workspace and a 0700 state directory of nobody's; in the
    cgroup v2 directory `cgroup` when given (moved there before setpriv).
    Skips when that cannot be arranged. Returns the CompletedProcess (text)
    with .workspace, read before the folder is removed, holding the names
    of the files CMD left there."""
    import shutil
    import tempfile

    skip_sandbox_when_wrapped()
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to become an ordinary user")
    top = tempfile.mkdtemp(prefix="kw-nobody-")
    try:
        os.chmod(top, 0o755)
        ws, state = os.path.join(top, "ws"), os.path.join(top, "state")
        os.mkdir(ws)
        os.mkdir(state, 0o700)
        for d in (ws, state):
            os.chown(d, 65534, 65534)
        argv = [KEYWARD, "run", "--workspace", ws, *args]
        if policy_text is not None:
            path = os.path.join(top, "policy.yaml")
            with open(path, "w") as f:
                f.write(policy_text)
            argv += ["--policy", path]
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + argv + ["--"] + cmd
        if cgroup:
            argv = ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup] + argv
        p = subprocess.run(argv,
                           capture_output=True, text=True, timeout=timeout, cwd=ws,
                           env={"PATH": os.environ["PATH"], "KEYWARD_HOME": state, "HOME": top,
                                "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "")})
        p.workspace = {n: os.stat(os.path.join(ws, n)).st_uid for n in os.listdir(ws)}
    finally:
        shutil.rmtree(top, ignore_errors=True)
    if p.returncode == 126 and "Permission denied" in p.stderr:
        pytest.skip(f"the keyward binary is not reachable by nobody: {p.stderr.strip()}")
    return p
