"""Rotation without a restart: a secret changed at its source (`keyward
secret set`, a new file) is used from the next request on, by a running
`keyward proxy` and by a running `keyward run`, with no signal, over the
connection the client already has open. A source that breaks makes only
the routes that need it answer 503. The placeholder never changes, and
neither made-up secret appears in any output, log or audit record (the
fixtures search them)."""

import json
import os
import secrets
import signal
import subprocess
import time

from conftest import policy_for
from kwtest import PLACEHOLDER, SECRET, SECRET2
from test_secrets import run_kw, session, vault_policy


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rotations(records, decision=None):
    return [r for r in records if r["event"] == "rotate" and (decision is None or r["decision"] == decision)]


def auth_of_last(upstream):
    return upstream.requests[-1].header("Authorization")


# ---- refusals first: a source that breaks is not papered over ----

def test_removed_vault_secret_gives_503_until_set_again(proxy_factory, upstream, tmp_path):
    home = tmp_path / "vault-home"
    assert run_kw(home, "secret", "set", "test", input=SECRET).returncode == 0
    p = proxy_factory(vault_policy(upstream), env={"KEYWARD_HOME": str(home)})
    s = session(p)
    api, open_ = f"https://api.test:{upstream.port}/api/x", f"https://api.test:{upstream.port}/open/x"
    hdr = {"Authorization": f"Bearer {PLACEHOLDER}"}
    assert s.get(api, headers=hdr, timeout=20).status_code == 200

    assert run_kw(home, "secret", "rm", "test").returncode == 0
    wait_for(lambda: rotations(p.records(), "error"), what="the rotate record of the removal")
    n = len(upstream.requests)
    resp = s.get(api, headers=hdr, timeout=20)
    assert resp.status_code == 503, resp.text
    assert len(upstream.requests) == n, "the old secret was still sent"
    assert s.get(open_, timeout=20).status_code == 200  # routes without it go on

    assert run_kw(home, "secret", "set", "test", input=SECRET2).returncode == 0
    wait_for(lambda: rotations(p.records(), "allow"), what="the rotate record of the new secret")
    assert s.get(api, headers=hdr, timeout=20).status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET2}"
    rec = rotations(p.records())
    assert [r["credential"] for r in rec] == ["test", "test"]
    assert 'no secret "test"' in rec[0]["detail"]


# ---- keyward proxy ----

def test_vault_rotation_in_running_proxy_keeps_the_connection(proxy_factory, upstream, tmp_path):
    home = tmp_path / "vault-home"
    assert run_kw(home, "secret", "set", "test", input=SECRET).returncode == 0
    assert run_kw(home, "secret", "set", "unrelated", input="x1").returncode == 0
    p = proxy_factory(vault_policy(upstream), env={"KEYWARD_HOME": str(home)})
    s = session(p)
    api = f"https://api.test:{upstream.port}/api/x"
    hdr = {"Authorization": f"Bearer {PLACEHOLDER}"}
    assert s.get(api, headers=hdr, timeout=20).status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET}"

    # another entry of the vault changes: the file changed, this secret did not
    assert run_kw(home, "secret", "set", "unrelated", input="x2").returncode == 0
    time.sleep(1.5)
    assert not rotations(p.records())

    assert run_kw(home, "secret", "set", "test", input=SECRET2).returncode == 0
    wait_for(lambda: rotations(p.records()), what="a rotate record")
    assert s.get(api, headers=hdr, timeout=20).status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET2}"

    reqs = [r for r in p.requests() if r.get("credential") == "test"]
    assert len(reqs) == 2
    assert reqs[0]["client"] == reqs[1]["client"], "the client's connection was not kept"
    rec = rotations(p.records())
    assert len(rec) == 1 and rec[0]["credential"] == "test" and rec[0]["decision"] == "allow"
    assert "reload" not in [r["event"] for r in p.records()]
    shown = run_kw(home, "audit", "show", str(p.audit)).out
    line = next(l for l in shown.splitlines() if "rotate" in l)
    assert "credential test" in line and "decision allow" in line, line


def test_file_rotation_in_running_proxy(proxy_factory, upstream, tmp_path):
    token = tmp_path / "token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, SECRET.encode() + b"\n")
    os.close(fd)
    text = policy_for(upstream).replace("from: env:TEST_TOKEN\n", f"from: file:{token}\n")
    p = proxy_factory(text)
    s = session(p)
    api = f"https://api.test:{upstream.port}/api/x"
    hdr = {"Authorization": f"Bearer {PLACEHOLDER}"}
    assert s.get(api, headers=hdr, timeout=20).status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET}"

    # replaced the way secret managers do it: a new file renamed over the old
    new = tmp_path / "token.new"
    fd = os.open(new, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, SECRET2.encode() + b"\n")
    os.close(fd)
    os.rename(new, token)
    wait_for(lambda: rotations(p.records()), what="a rotate record")
    assert s.get(api, headers=hdr, timeout=20).status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET2}"

    # rewritten in place
    with open(token, "r+b") as f:
        f.truncate(0)
        f.write(SECRET.encode())
    wait_for(lambda: len(rotations(p.records())) == 2, what="a second rotate record")
    assert s.get(api, headers=hdr, timeout=20).status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET}"


# ---- keyward run ----

def requests_around(sb, upstream, rotate):
    """`keyward run` asks the upstream once, waits while rotate() changes
    the secret outside and keyward writes its rotate record, then asks
    again; both answers must be 200, and nothing may leak."""
    url = f"https://api.test:{upstream.port}/api/x"
    curl = f'curl -sS -o /dev/null -w "%{{http_code}}\\n" -H "Authorization: Bearer $TEST_TOKEN" {url}'
    script = f'{curl} && touch first && while [ ! -e go ]; do sleep 0.05; done && {curl}'
    proc = subprocess.Popen(sb.argv(["sh", "-c", script]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=sb.env, cwd=sb.tmp)
    try:
        wait_for(lambda: (sb.workspace / "first").exists() or proc.poll() is not None, timeout=30,
                 what="the sandbox's first request")
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
        rotate()
        wait_for(lambda: rotations(sb.records()), what="a rotate record")
        (sb.workspace / "go").touch()
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    assert proc.returncode == 0, err
    assert out.split() == ["200", "200"], out + err
    sb.check_clean(out, err)


def test_vault_rotation_in_running_sandbox(sandbox_factory, upstream):
    sb = sandbox_factory(vault_policy(upstream))
    assert run_kw(sb.home, "secret", "set", "test", input=SECRET).returncode == 0

    def rotate():
        assert auth_of_last(upstream) == f"Bearer {SECRET}"
        assert run_kw(sb.home, "secret", "set", "test", input=SECRET2).returncode == 0

    requests_around(sb, upstream, rotate)
    assert auth_of_last(upstream) == f"Bearer {SECRET2}"


# ---- exec: sources ----

def exec_policy(upstream, command):
    """policy_for's policy with the credential "test" from exec:command, and
    a second route, /open/**, that needs no credential."""
    text = policy_for(upstream).replace("from: env:TEST_TOKEN\n", f"from: \"exec:{command}\"\n")
    assert "exec:" in text
    return text + f"""  - host: {upstream.host}
    port: {upstream.port}
    paths: ["/open/**"]
    upstream_ca: {upstream.ca_file}
    allow_private: true
"""


def script(path, body):
    """An executable script; its text holds the made-up secret, which is
    only ever searched for in keyward's output."""
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o700)
    return path


def counter_script(tmp_path, body):
    """A script that counts its runs in a file, then runs body with $n set.
    The count is written aside and renamed into place, so that the test
    never reads it half-written (empty)."""
    count = tmp_path / "count"
    s = script(tmp_path / "cred.sh", f'n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); '
               f'echo $n > {count}.new && mv {count}.new {count}\n' + body)
    return s, count


def runs(count):
    return int(count.read_text()) if count.exists() else 0


def test_exec_command_inherits_no_descriptor_of_keyward(proxy_factory, upstream, tmp_path):
    # A credential command may run while the proxy serves (here: at a
    # reload, with a client's connection and a pooled upstream connection
    # open): it gets stdin, stdout and stderr, and none of keyward's
    # sockets, which it could read or keep open.
    fds = tmp_path / "fds"
    s = script(tmp_path / "cred.sh", f'ls -l /proc/$$/fd > {fds}.new && mv {fds}.new {fds}\n'
               f'printf "%s\\n" "{SECRET}"\n')
    p = proxy_factory(exec_policy(upstream, s))
    client = session(p)
    assert client.get(f"https://api.test:{upstream.port}/api/x", timeout=20).status_code == 200
    wait_for(fds.exists, what="the command's first run")
    fds.unlink()
    p.signal(signal.SIGHUP)
    wait_for(fds.exists, what="the command's run at the reload")
    # the shell's own (dash keeps its script and a saved stdin) and the
    # pipe keyward reads; no socket, epoll set or eventfd of keyward's
    listing = fds.read_text()
    assert "pipe:" in listing
    assert "socket:" not in listing and "anon_inode" not in listing, listing
    assert client.get(f"https://api.test:{upstream.port}/api/x", timeout=20).status_code == 200


def test_exec_command_runs_in_the_root_directory(proxy_factory, upstream, tmp_path):
    # keyward's working directory is usually the workspace of `keyward
    # run`, which the sandbox writes: a command run there could load what
    # the sandbox left (python3 puts its working directory first on
    # sys.path). The command runs in "/" whatever keyward's is.
    cwd = tmp_path / "cwd"
    s = script(tmp_path / "cred.sh", f'pwd > {cwd}.new && mv {cwd}.new {cwd}\n'
               f'printf "%s\\n" "{SECRET}"\n')
    p = proxy_factory(exec_policy(upstream, s))
    wait_for(cwd.exists, what="the command's first run")
    assert cwd.read_text() == "/\n"
    assert session(p).get(f"https://api.test:{upstream.port}/api/x", timeout=20).status_code == 200
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRET}"


def test_exec_failing_command_gives_503_for_its_route_only(proxy_factory, upstream, tmp_path):
    # it prints the secret on stderr: keyward must not log it
    s = script(tmp_path / "fail.sh", f'echo "{SECRET}" >&2\nexit 3\n')
    p = proxy_factory(exec_policy(upstream, s))
    assert "the command exited with status 3" in p.stderr
    sess = session(p)
    resp = sess.get(f"https://api.test:{upstream.port}/api/x", timeout=20)
    assert resp.status_code == 503 and "exited with status 3" in resp.text
    assert sess.get(f"https://api.test:{upstream.port}/open/x", timeout=20).status_code == 200
    assert len(upstream.requests) == 1
    # not retried more than every 10 s
    assert not rotations(p.records())


def test_exec_command_line_is_not_quoted_at_run_time(proxy_factory, upstream, tmp_path):
    # A command line may carry a credential of its own (a secrets
    # manager's --token=..., a session key). A failing command's 503 went
    # to the sandbox quoting the whole line; keyward's log and audit log
    # quoted it too. At run time the command is "its exec: command"; only
    # `keyward policy check`, which the operator runs, prints it.
    tok = "kwtest-CMDLINE-TOKEN-5e1d97"
    p = proxy_factory(exec_policy(upstream, f"exit 3 # --token={tok}"))
    assert "the command exited with status 3" in p.stderr
    resp = session(p).get(f"https://api.test:{upstream.port}/api/x", timeout=20)
    assert resp.status_code == 503 and "exited with status 3" in resp.text
    assert tok not in resp.text and tok not in json.dumps(dict(resp.headers))
    out = p.stop()
    for blob in (out, p.stderr, p.audit.read_text()):
        assert tok not in blob


def test_exec_value_and_policy_check(proxy_factory, upstream, tmp_path):
    s, count = counter_script(tmp_path, f'printf "%s\\n" "{SECRET}"\n')
    policy = tmp_path / "policy.yaml"
    policy.write_text(exec_policy(upstream, s))
    r = run_kw(tmp_path / "home", "policy", "check", str(policy), env={"TEST_TOKEN2": "x"})
    assert r.returncode == 0, r.out + r.err
    assert f"exec:{s} (not run by policy check)" in r.out
    assert runs(count) == 0

    p = proxy_factory(exec_policy(upstream, s))
    assert runs(count) == 1
    resp = session(p).get(f"https://api.test:{upstream.port}/api/x",
                          headers={"Authorization": f"Bearer {PLACEHOLDER}"}, timeout=20)
    assert resp.status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET}"
    time.sleep(1.2)
    assert runs(count) == 1, "a value without expiry is not fetched again"


def test_exec_json_is_run_again_before_expiry(proxy_factory, upstream, tmp_path):
    # odd runs print SECRET, even runs SECRET2, each valid for 2 s
    body = (f'if [ $((n % 2)) = 1 ]; then v="{SECRET}"; else v="{SECRET2}"; fi\n'
            'exp=$(date -u -d @$(( $(date +%s) + 2 )) +%Y-%m-%dT%H:%M:%SZ)\n'
            'printf \'{"value": "%s", "expires_at": "%s"}\\n\' "$v" "$exp"\n')
    s, count = counter_script(tmp_path, body)
    p = proxy_factory(exec_policy(upstream, s))
    sess = session(p)
    api = f"https://api.test:{upstream.port}/api/x"
    hdr = {"Authorization": f"Bearer {PLACEHOLDER}"}
    assert sess.get(api, headers=hdr, timeout=20).status_code == 200
    first = auth_of_last(upstream)
    assert first == f"Bearer {SECRET}" or runs(count) > 1
    wait_for(lambda: rotations(p.records()), timeout=6, what="a re-run of the command")
    n = runs(count)
    assert n >= 2
    assert sess.get(api, headers=hdr, timeout=20).status_code == 200
    # the value served is the latest run's (or the next one's, if a run
    # happened in between)
    assert auth_of_last(upstream) in (f"Bearer {SECRET}", f"Bearer {SECRET2}")
    assert all(r["decision"] == "allow" for r in rotations(p.records()))


def test_exec_hanging_command_is_killed_and_keyward_still_serves(proxy_factory, upstream, tmp_path):
    # the first run gives a value valid for 1-2 s (expires_at has whole
    # seconds: "+1" could be in the past by the time keyward reads it, and
    # an expired value is refused); the next run hangs, with a grandchild
    # holding its stdout open (only killing the group ends it). Its
    # duration is unique to this run, so that pgrep finds no other
    # checkout's test.
    nap = f"59.{secrets.randbelow(10**6):06d}"
    body = (f'if [ $n = 1 ]; then\n'
            f'  exp=$(date -u -d @$(( $(date +%s) + 2 )) +%Y-%m-%dT%H:%M:%SZ)\n'
            f'  printf \'{{"value": "%s", "expires_at": "%s"}}\\n\' "{SECRET}" "$exp"\n'
            f'  exit 0\nfi\n'
            f'sleep {nap} &\nwait\n')
    s, count = counter_script(tmp_path, body)
    p = proxy_factory(exec_policy(upstream, s))
    sess = session(p)
    api, open_ = f"https://api.test:{upstream.port}/api/x", f"https://api.test:{upstream.port}/open/x"
    wait_for(lambda: runs(count) >= 2, timeout=5, what="the second run")
    # keyward's main thread waits for the command; the workers serve
    t0 = time.time()
    assert sess.get(open_, timeout=5).status_code == 200
    assert time.time() - t0 < 2
    rec = wait_for(lambda: rotations(p.records(), "error"), timeout=15, what="the timeout")
    assert "did not finish within 10 s" in rec[0]["detail"]
    resp = sess.get(api, timeout=20)
    assert resp.status_code == 503, resp.text
    assert sess.get(open_, timeout=20).status_code == 200
    # the whole group was killed, the grandchild too
    assert subprocess.run(["pgrep", "-f", f"sleep {nap}"], capture_output=True).returncode == 1


def test_exec_hanging_command_does_not_hold_up_reload_or_stop(proxy_factory, upstream, tmp_path):
    # run 1: a value valid for 1-2 s (see above); run 2 (the rotation) hangs; later runs
    # (the reload) give SECRET2 at once
    body = (f'if [ $n = 1 ]; then\n'
            f'  exp=$(date -u -d @$(( $(date +%s) + 2 )) +%Y-%m-%dT%H:%M:%SZ)\n'
            f'  printf \'{{"value": "%s", "expires_at": "%s"}}\\n\' "{SECRET}" "$exp"\n'
            f'  exit 0\nfi\n'
            f'if [ $n = 2 ]; then sleep 59.5432 & wait; fi\n'
            f'printf "%s\\n" "{SECRET2}"\n')
    s, count = counter_script(tmp_path, body)
    p = proxy_factory(exec_policy(upstream, s))
    hung = lambda: subprocess.run(["pgrep", "-f", "sleep 59.5432"], capture_output=True).returncode == 0
    wait_for(lambda: runs(count) >= 2 and hung(), timeout=5, what="the hanging second run")
    # the rotation waits for its command on a thread of its own: the main
    # thread takes the reload while the command still runs (it would be
    # killed only by the 10 s timeout)
    p.signal(signal.SIGHUP)
    wait_for(lambda: [r for r in p.records() if r["event"] == "reload"], timeout=5, what="the reload")
    assert hung(), "the reload came only after the command was killed"
    resp = session(p).get(f"https://api.test:{upstream.port}/api/x", timeout=20)
    assert resp.status_code == 200
    assert auth_of_last(upstream) == f"Bearer {SECRET2}"
    # the stop kills the command still running instead of waiting for it
    p.stop()
    assert not hung()
    # the rotation that was cut short is not reported as a new secret
    assert not rotations(p.records(), "allow")
