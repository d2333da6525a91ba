"""Rotation without a restart: a secret changed at its source (`keyward
secret set`, a new file) is used from the next request on, by a running
`keyward proxy` and by a running `keyward run`, with no signal, over the
connection the client already has open. A source that breaks makes only
the routes that need it answer 503. The placeholder never changes, and
neither made-up secret appears in any output, log or audit record (the
fixtures search them)."""

import os
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

def test_vault_rotation_in_running_sandbox(sandbox_factory, upstream):
    sb = sandbox_factory(vault_policy(upstream))
    assert run_kw(sb.home, "secret", "set", "test", input=SECRET).returncode == 0
    url = f"https://api.test:{upstream.port}/api/x"
    curl = f'curl -sS -o /dev/null -w "%{{http_code}}\\n" -H "Authorization: Bearer $TEST_TOKEN" {url}'
    # the sandbox asks once, waits for the test to rotate the secret
    # outside, then asks again
    script = f'{curl} && touch first && while [ ! -e go ]; do sleep 0.05; done && {curl}'
    proc = subprocess.Popen(sb.argv(["sh", "-c", script]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=sb.env, cwd=sb.tmp)
    try:
        wait_for(lambda: (sb.workspace / "first").exists() or proc.poll() is not None, timeout=30,
                 what="the sandbox's first request")
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")
        assert auth_of_last(upstream) == f"Bearer {SECRET}"
        assert run_kw(sb.home, "secret", "set", "test", input=SECRET2).returncode == 0
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
    assert auth_of_last(upstream) == f"Bearer {SECRET2}"
    sb.check_clean(out, err)
