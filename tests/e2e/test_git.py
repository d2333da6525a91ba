"""git over HTTPS through keyward, holding only a placeholder: clone and
push to `git http-backend` behind Basic auth, which only the real secret
opens. keyward attaches it ({basic: x-access-token}); git never sees it."""

import base64
import os
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kwtest import PLACEHOLDER, SECRET

REPO = "acme/app.git"
GOOD_AUTH = "Basic " + base64.b64encode(f"x-access-token:{SECRET}".encode()).decode()


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.serve_git()

    do_POST = do_GET

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return body
                body += self.rfile.read(size)
                self.rfile.read(2)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def reply(self, status, headers, body):
        self.send_response(status)
        for n, v in headers:
            self.send_header(n, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def serve_git(self):
        srv = self.server
        body = self.read_body()
        auth = self.headers.get("Authorization")
        with srv.lock:
            srv.seen.append((self.command, self.path, auth))
        if auth != GOOD_AUTH:
            self.reply(401, [("WWW-Authenticate", 'Basic realm="git"')], b"authentication required\n")
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(srv.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": "x-access-token",
            "REMOTE_ADDR": self.client_address[0],
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HOME": str(srv.root),
        }
        for name in ("Content-Encoding", "Git-Protocol", "Accept"):
            if self.headers.get(name):
                env["HTTP_" + name.upper().replace("-", "_")] = self.headers[name]
        r = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        out = r.stdout
        sep = out.find(b"\r\n\r\n")
        head, rest = (out[:sep], out[sep + 4:]) if sep >= 0 else out.split(b"\n\n", 1)
        status, headers = 200, []
        for line in head.replace(b"\r\n", b"\n").split(b"\n"):
            if not line:
                continue
            n, _, v = line.decode("latin-1").partition(":")
            if n.lower() == "status":
                status = int(v.strip().split()[0])
            else:
                headers.append((n, v.strip()))
        self.reply(status, headers, rest)


class GitServer:
    def __init__(self, root, certs):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), GitHandler)
        self.httpd.daemon_threads = True
        self.httpd.root = root
        self.httpd.seen = []
        self.httpd.lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.ca_file = str(certs / "ca.pem")
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def seen(self):
        with self.httpd.lock:
            return list(self.httpd.seen)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def git(*args, env=None, cwd=None, check=True):
    r = subprocess.run(["git", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"git {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


def base_env(home):
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Sandbox", "GIT_AUTHOR_EMAIL": "sandbox@example.invalid",
        "GIT_COMMITTER_NAME": "Sandbox", "GIT_COMMITTER_EMAIL": "sandbox@example.invalid",
        "LC_ALL": "C",
    }


@pytest.fixture
def git_server(tmp_path, certs):
    root = tmp_path / "srv"
    bare = root / REPO
    bare.parent.mkdir(parents=True)
    env = base_env(tmp_path)
    git("init", "-q", "--bare", "-b", "main", str(bare), env=env)
    seed = tmp_path / "seed"
    git("init", "-q", "-b", "main", str(seed), env=env)
    (seed / "README").write_text("seed\n")
    git("add", "README", env=env, cwd=seed)
    git("commit", "-q", "-m", "seed", env=env, cwd=seed)
    git("push", "-q", str(bare), "main", env=env, cwd=seed)
    s = GitServer(root, certs)
    s.bare = bare
    yield s
    s.close()


def git_policy(server):
    return f"""version: 1
credentials:
  test:
    from: env:TEST_TOKEN
    env: TEST_TOKEN
    placeholder: {PLACEHOLDER}
routes:
  - host: api.test
    port: {server.port}
    paths: ["/{REPO}/**"]
    credential: test
    inject: {{basic: x-access-token}}
    upstream_ca: {server.ca_file}
    allow_private: true
"""


def sandbox_env(tmp_path, proxy):
    home = tmp_path / "home-sandbox"
    home.mkdir(exist_ok=True)
    env = base_env(home)
    env.update({
        "HTTPS_PROXY": proxy.url, "https_proxy": proxy.url,
        "GIT_SSL_CAINFO": str(proxy.ca),
        "TEST_TOKEN": PLACEHOLDER,  # what a sandbox holds
    })
    return env


def assert_no_secret(*texts):
    for t in texts:
        assert SECRET not in t
        assert base64.b64encode(f"x-access-token:{SECRET}".encode()).decode() not in t


def test_git_direct_without_secret_is_refused(git_server, tmp_path):
    # Control: the server really wants the secret. The placeholder alone,
    # straight to the server, gets 401.
    env = base_env(tmp_path)
    env["GIT_SSL_CAINFO"] = git_server.ca_file
    url = f"https://x-access-token:{PLACEHOLDER}@127.0.0.1:{git_server.port}/{REPO}"
    r = git("clone", "-q", url, str(tmp_path / "direct"), env=env, check=False)
    assert r.returncode != 0
    assert "401" in r.stderr or "Authentication failed" in r.stderr, r.stderr
    assert all(auth != GOOD_AUTH for _, _, auth in git_server.seen)


def test_git_clone_outside_route_is_refused(proxy_factory, git_server, tmp_path):
    p = proxy_factory(git_policy(git_server))
    env = sandbox_env(tmp_path, p)
    url = f"https://x-access-token:{PLACEHOLDER}@api.test:{git_server.port}/other/repo.git"
    r = git("clone", "-q", url, str(tmp_path / "other"), env=env, check=False)
    assert r.returncode != 0
    assert "403" in r.stderr, r.stderr
    assert git_server.seen == []
    denies = [x for x in p.requests() if x["decision"] == "deny"]
    assert denies and all(x["reason"] == "path" for x in denies), denies
    assert denies[0]["path"] == "/other/repo.git/info/refs"
    assert_no_secret(r.stdout, r.stderr)


def clone_commit_push(p, git_server, tmp_path, url, name):
    env = sandbox_env(tmp_path, p)
    work = tmp_path / name
    outs = []
    r = git("clone", url, str(work), env=env)
    outs += [r.stdout, r.stderr]
    assert (work / "README").read_text() == "seed\n"
    (work / f"{name}.txt").write_text(f"written by {name}\n")
    git("add", f"{name}.txt", env=env, cwd=work)
    git("commit", "-q", "-m", f"add {name}", env=env, cwd=work)
    r = git("push", "origin", "main", env=env, cwd=work, check=False)
    if r.returncode != 0:
        # What keyward decided and what the server got (whether each request
        # carried the real credential, never the header itself), to tell a
        # keyward fault from a server one.
        seen = [(m, path, auth == GOOD_AUTH) for m, path, auth in git_server.seen]
        pytest.fail(f"git push failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n"
                    f"keyward's records: {p.requests()}\nkeyward's stderr: {p.stderr}\nthe server saw: {seen}")
    outs += [r.stdout, r.stderr]
    head = git("rev-parse", "HEAD", env=env, cwd=work).stdout.strip()
    log = git("--git-dir", str(git_server.bare), "log", "--format=%H %s", "main", env=env).stdout
    assert log.splitlines()[0] == f"{head} add {name}"
    shown = git("--git-dir", str(git_server.bare), "show", f"main:{name}.txt", env=env).stdout
    assert shown == f"written by {name}\n"
    config = (work / ".git" / "config").read_text()
    assert_no_secret(*outs, config)
    for f in (work / ".git").rglob("*"):
        if f.is_file() and f.stat().st_size < 1 << 20:
            assert SECRET.encode() not in f.read_bytes(), f
    # Every request reached the server with the real credential, none with
    # the placeholder or without one (no 401 round trip).
    seen = git_server.seen
    assert seen and all(auth == GOOD_AUTH for _, _, auth in seen), seen
    assert any(m == "POST" and path.endswith("/git-receive-pack") for m, path, _ in seen)
    recs = p.requests()
    assert recs and all(x["decision"] == "allow" and x["credential"] == "test" for x in recs), recs
    assert all(x["path"].startswith(f"/{REPO}/") for x in recs)
    return config


def test_git_clone_and_push_with_placeholder(proxy_factory, git_server, tmp_path):
    p = proxy_factory(git_policy(git_server))
    url = f"https://x-access-token:{PLACEHOLDER}@api.test:{git_server.port}/{REPO}"
    config = clone_commit_push(p, git_server, tmp_path, url, "withplaceholder")
    assert PLACEHOLDER in config  # the sandbox's copy holds only the stand-in


def test_git_clone_and_push_without_credentials(proxy_factory, git_server, tmp_path):
    p = proxy_factory(git_policy(git_server))
    url = f"https://api.test:{git_server.port}/{REPO}"
    config = clone_commit_push(p, git_server, tmp_path, url, "nocreds")
    assert PLACEHOLDER not in config
