"""`keyward secret set/list/rm` and `from: vault:NAME` through the real binary.

The made-up secrets go in on standard input only; every command's argv,
stdout and stderr is searched for them, and so is the vault file. A proxy
whose policy names a vault secret attaches it; a corrupt vault is reported
with the entry it concerns, and only the routes that need it get 503."""

import os
import stat
import subprocess

import pytest
import requests

from conftest import KEYWARD, policy_for
from kwtest import PLACEHOLDER, SECRET, SECRET2

SECRETS = (SECRET, SECRET2)


def run_kw(home, *args, input=None, env=None):
    """Runs keyward with this state directory; checks that no secret is in
    its argv, stdout or stderr, and that no sanitizer complained."""
    argv = [KEYWARD, *args]
    e = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KEYWARD_HOME": str(home),
        "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "detect_leaks=1"),
        "UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"),
    }
    e.update(env or {})
    r = subprocess.run(argv, input=input.encode() if isinstance(input, str) else input,
                       capture_output=True, env=e, timeout=60)
    r.out = r.stdout.decode(errors="replace")
    r.err = r.stderr.decode(errors="replace")
    for s in SECRETS:
        assert all(s not in a for a in argv), "secret in argv"
        assert s not in r.out, f"secret on stdout of {args}"
        assert s not in r.err, f"secret on stderr of {args}"
    assert "ERROR: AddressSanitizer" not in r.err, r.err
    assert "ERROR: LeakSanitizer" not in r.err, r.err
    assert "runtime error:" not in r.err, r.err
    return r


def vault_bytes(home):
    return (home / "vault").read_bytes()


def assert_sealed(home):
    data = vault_bytes(home)
    for s in SECRETS:
        assert s.encode() not in data, "secret in plain text in the vault"
        assert s.encode()[:12] not in data


# ---- refusals first ----

def test_usage_errors_and_help(tmp_path):
    home = tmp_path / "home"
    for args in (["secret"], ["secret", "get", "x"], ["secret", "set"], ["secret", "set", "a", "b"],
                 ["secret", "rm"], ["secret", "list", "x"], ["secret", "set", "a/b"], ["secret", "rm", "../x"]):
        r = run_kw(home, *args, input="v\n")
        assert r.returncode == 2, (args, r.out, r.err)
    for args in (["secret", "--help"], ["secret", "set", "--help"], ["secret", "list", "--help"],
                 ["secret", "rm", "--help"]):
        r = run_kw(home, *args)
        assert r.returncode == 0 and "Usage: keyward secret" in r.out, (args, r.err)
    assert "standard input" in run_kw(home, "secret", "set", "--help").out
    top = run_kw(home, "--help").out
    for line in ("secret set NAME", "secret list", "secret rm NAME"):
        assert line in top
    # no value was taken from the command line, and nothing was stored
    assert not (home / "vault").exists()


@pytest.mark.parametrize("value, why", [
    (b"", "is empty"),
    (b"\n", "is empty"),
    (SECRET.encode() + b"\r\n", f"control byte at offset {len(SECRET)}"),
    (SECRET.encode() + b"\n\n", f"control byte at offset {len(SECRET)}"),
    (b"a\0" + SECRET.encode(), "control byte at offset 1"),
    (SECRET.encode() + b"\x7f", "control byte"),
    (b"\x1b[31m" + SECRET.encode(), "control byte at offset 0"),
    (b"x" * 65537, "longer than 65536 bytes"),
])
def test_set_refuses_bad_values(tmp_path, value, why):
    home = tmp_path / "home"
    r = run_kw(home, "secret", "set", "bad", input=value)
    assert r.returncode == 1, r.err
    assert why in r.err and "nothing was stored" in r.err
    assert not (home / "vault").exists()


def test_rm_missing_is_an_error(tmp_path):
    home = tmp_path / "home"
    r = run_kw(home, "secret", "rm", "nope")
    assert r.returncode == 1 and 'no secret "nope"' in r.err


def test_loose_permissions_are_refused_with_the_fix(tmp_path):
    home = tmp_path / "home"
    assert run_kw(home, "secret", "set", "gh", input=SECRET).returncode == 0
    os.chmod(home / "vault", 0o644)
    r = run_kw(home, "secret", "list")
    assert r.returncode == 1 and f"fix with: chmod 600 {home / 'vault'}" in r.err
    os.chmod(home / "vault", 0o600)
    os.chmod(home, 0o755)
    r = run_kw(home, "secret", "set", "gh", input=SECRET2)
    assert r.returncode == 1 and f"fix with: chmod 700 {home}" in r.err
    os.chmod(home, 0o700)


# ---- what works ----

def test_set_list_rotate_rm(tmp_path):
    home = tmp_path / "home"
    r = run_kw(home, "secret", "list")
    assert r.returncode == 0 and "no secrets" in r.err

    assert run_kw(home, "secret", "set", "github", input=SECRET + "\n").returncode == 0
    assert run_kw(home, "secret", "set", "npm.registry", input=SECRET2).returncode == 0
    for f in ("vault", "vault.key"):
        assert stat.S_IMODE((home / f).stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert_sealed(home)

    lines = run_kw(home, "secret", "list").out.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "(UTC)", "ROTATED", "(UTC)"]
    rows = {l.split()[0]: l.split()[1:] for l in lines[1:]}
    assert set(rows) == {"github", "npm.registry"}
    created, rotated = rows["github"]
    assert created.endswith("Z") and rotated == "-"

    # setting it again rotates: creation time kept, rotation time shown
    assert run_kw(home, "secret", "set", "github", input=SECRET2 + "\n").returncode == 0
    rows = {l.split()[0]: l.split()[1:] for l in run_kw(home, "secret", "list").out.splitlines()[1:]}
    assert rows["github"][0] == created and rows["github"][1].endswith("Z")
    assert_sealed(home)

    r = run_kw(home, "secret", "rm", "github")
    assert r.returncode == 0
    out = run_kw(home, "secret", "list").out
    assert "github" not in out and "npm.registry" in out
    assert run_kw(home, "secret", "rm", "github").returncode == 1


def test_concurrent_sets_all_land(tmp_path):
    home = tmp_path / "home"
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYWARD_HOME": str(home)}
    procs = [subprocess.Popen([KEYWARD, "secret", "set", f"k{i}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e) for i in range(8)]
    for i, p in enumerate(procs):
        out, err = p.communicate(f"value-{i}".encode(), timeout=60)
        assert p.returncode == 0, err
    names = [l.split()[0] for l in run_kw(home, "secret", "list").out.splitlines()[1:]]
    assert names == [f"k{i}" for i in range(8)]


def test_passphrase_vault(tmp_path):
    home = tmp_path / "home"
    pf = tmp_path / "passphrase"
    pf.write_text("a long passphrase for the test\n")
    pf.chmod(0o600)
    env = {"KEYWARD_PASSPHRASE_FILE": str(pf)}
    assert run_kw(home, "secret", "set", "gh", input=SECRET, env=env).returncode == 0
    assert not (home / "vault.key").exists()
    assert_sealed(home)
    assert "gh" in run_kw(home, "secret", "list", env=env).out

    r = run_kw(home, "secret", "list")
    assert r.returncode == 1 and "sealed with a passphrase: set KEYWARD_PASSPHRASE_FILE" in r.err
    pf.write_text("the wrong passphrase\n")
    r = run_kw(home, "secret", "list", env=env)
    assert r.returncode == 1 and 'entry 1 "gh": cannot decrypt: wrong key or corrupted' in r.err


# ---- the proxy ----

def vault_policy(upstream, name="test"):
    """policy_for's policy with the credential "test" taken from the vault,
    and a second route, /open/**, that needs no credential."""
    text = policy_for(upstream).replace("from: env:TEST_TOKEN\n", f"from: vault:{name}\n")
    assert f"vault:{name}" in text
    return text + f"""  - host: {upstream.host}
    port: {upstream.port}
    paths: ["/open/**"]
    upstream_ca: {upstream.ca_file}
    allow_private: true
"""


def session(p):
    s = requests.Session()
    s.proxies = {"https": p.url, "http": p.url}
    s.verify = str(p.ca)
    return s


def test_proxy_attaches_the_vault_secret(proxy_factory, upstream, tmp_path):
    home = tmp_path / "vault-home"
    assert run_kw(home, "secret", "set", "test", input=SECRET2 + "\n").returncode == 0

    policy = tmp_path / "policy.yaml"
    policy.write_text(vault_policy(upstream))
    r = run_kw(home, "policy", "check", str(policy), env={"TEST_TOKEN2": "x"})
    assert "vault:test (readable)" in r.out, r.out

    # the environment's TEST_TOKEN is not what gets attached
    p = proxy_factory(vault_policy(upstream), env={"KEYWARD_HOME": str(home), "TEST_TOKEN": "not-this-one"})
    resp = session(p).get(f"https://api.test:{upstream.port}/api/x",
                          headers={"Authorization": f"Bearer {PLACEHOLDER}"}, timeout=20)
    assert resp.status_code == 200
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRET2}"
    assert p.requests()[-1]["credential"] == "test"


def test_missing_vault_secret(proxy_factory, upstream, tmp_path):
    home = tmp_path / "vault-home"
    assert run_kw(home, "secret", "set", "other", input=SECRET).returncode == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(vault_policy(upstream))
    r = run_kw(home, "policy", "check", str(policy), env={"TEST_TOKEN2": "x"})
    assert r.returncode == 1
    assert "vault:test (cannot be read now)" in r.out
    assert 'no secret "test"' in r.out and "keyward secret set test" in r.out


def test_corrupt_vault_gives_503_for_its_routes_only(proxy_factory, upstream, tmp_path):
    home = tmp_path / "vault-home"
    assert run_kw(home, "secret", "set", "test", input=SECRET).returncode == 0
    data = bytearray(vault_bytes(home))
    data[len(data) // 2] ^= 0x10  # inside the one entry
    (home / "vault").write_bytes(bytes(data))

    p = proxy_factory(vault_policy(upstream), env={"KEYWARD_HOME": str(home)})
    assert 'entry 1 "test": cannot decrypt: wrong key or corrupted' in p.stderr
    assert "requests that need it will get 503" in p.stderr
    s = session(p)
    resp = s.get(f"https://api.test:{upstream.port}/api/x", timeout=20)
    assert resp.status_code == 503
    assert "test" in resp.text
    n = len(upstream.requests)
    assert s.get(f"https://api.test:{upstream.port}/open/x", timeout=20).status_code == 200
    assert len(upstream.requests) == n + 1
    assert upstream.requests[-1].header("Authorization") is None


def set_at_terminal(home, name, first, second):
    """`keyward secret set NAME` with a terminal on standard input, the value
    typed twice, each after its prompt. Returns (status, stderr, what the
    terminal echoed)."""
    import pty
    import select
    import time
    master, slave = pty.openpty()
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYWARD_HOME": str(home)}
    p = subprocess.Popen([KEYWARD, "secret", "set", name], stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e)
    os.close(slave)
    err, shown = b"", b""
    for prompt, value in ((b"Value for", first), (b"Again:", second)):
        deadline = time.monotonic() + 20
        while prompt not in err:
            assert time.monotonic() < deadline, f"no prompt {prompt!r}: {err!r}"
            if select.select([p.stderr], [], [], 0.1)[0]:
                err += os.read(p.stderr.fileno(), 4096)
        os.write(master, value.encode() + b"\n")
    p.wait(timeout=30)
    err += p.stderr.read()
    try:
        while select.select([master], [], [], 0.1)[0]:
            shown += os.read(master, 4096)
    except OSError:
        pass
    os.close(master)
    p.stdout.close()
    p.stderr.close()
    return p.returncode, err.decode(errors="replace"), shown.decode(errors="replace")


def test_set_at_a_terminal_asks_twice_without_echo(tmp_path):
    home = tmp_path / "home"
    status, err, shown = set_at_terminal(home, "gh", SECRET, SECRET2)
    assert status == 1 and "the two values differ" in err
    assert not (home / "vault").exists()
    status, err, shown = set_at_terminal(home, "gh", SECRET, SECRET)
    assert status == 0, err
    assert "Value for gh:" in err and "Again:" in err
    for s in SECRETS:
        assert s not in err and s not in shown, "the value was echoed"
    assert "gh" in run_kw(home, "secret", "list").out


def test_set_at_a_terminal_refuses_a_value_a_terminal_line_cannot_hold(tmp_path):
    # A terminal passes at most 4095 bytes of a line and drops the rest
    # without a word: a long value (a PEM key, a JWT) typed twice would be
    # stored cut. keyward refuses and says to use standard input.
    home = tmp_path / "home"
    value = "kwtest-long-" + "x" * 5000  # made up
    status, err, shown = set_at_terminal(home, "long", value, value)
    assert status == 1 and "at most 4095 bytes" in err and "keyward secret set long < FILE" in err, err
    assert not (home / "vault").exists()
    assert value not in err and "x" * 100 not in shown
    assert run_kw(home, "secret", "set", "long", input=value).returncode == 0  # the way that works


def test_rotation_reaches_the_proxy_on_reload(proxy_factory, upstream, tmp_path):
    import signal
    import time
    home = tmp_path / "vault-home"
    assert run_kw(home, "secret", "set", "test", input=SECRET).returncode == 0
    p = proxy_factory(vault_policy(upstream), env={"KEYWARD_HOME": str(home)})
    url = f"https://api.test:{upstream.port}/api/x"
    assert session(p).get(url, timeout=20).status_code == 200
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRET}"

    assert run_kw(home, "secret", "set", "test", input=SECRET2).returncode == 0
    p.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "policy reloaded" not in p.stderr:
        assert time.monotonic() < deadline, p.stderr
        time.sleep(0.02)
    assert session(p).get(url, timeout=20).status_code == 200
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRET2}"


def test_sandbox_uses_the_vault_and_cannot_read_it(sandbox_factory, upstream):
    """keyward run with a passphrase vault whose state directory and
    passphrase file both lie inside the workspace: the credential is
    attached, and the sandbox reads neither the vault, its key, nor the
    passphrase."""
    sb = sandbox_factory(vault_policy(upstream))
    state = sb.workspace / ".keyward"
    pf = sb.workspace / "passphrase"
    pf.write_text("the passphrase of this test\n")
    pf.chmod(0o600)
    sb.env.update({"KEYWARD_HOME": str(state), "KEYWARD_PASSPHRASE_FILE": str(pf)})
    assert run_kw(state, "secret", "set", "test", input=SECRET2,
                  env={"KEYWARD_PASSPHRASE_FILE": str(pf)}).returncode == 0
    url = f"https://api.test:{upstream.port}/api/hello"
    p = sb.run(["sh", "-c", f'curl -sS -o /dev/null -w "%{{http_code}}" {url}; echo; '
                            f'for f in {pf} {state}/vault {state}/vault.key; do wc -c < $f; done 2>&1; '
                            f'ls -A {state} | wc -l'])
    assert p.returncode == 0, p.err
    lines = p.out.splitlines()
    assert lines[0] == "200", p.out
    assert upstream.requests[-1].header("Authorization") == f"Bearer {SECRET2}"
    # the passphrase file is covered (by /dev/null on a nodev mount); the
    # state directory is an empty directory in the sandbox, so the vault
    # and its key are not there
    assert lines[1] == "0" or "Permission denied" in lines[1], p.out
    assert "No such file" in lines[2] and "No such file" in lines[3], p.out
    assert lines[4] == "0", p.out


def test_interrupted_prompt_gives_the_terminal_its_echo_back(tmp_path):
    import pty
    import select
    import signal
    import termios
    import time
    master, slave = pty.openpty()
    e = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYWARD_HOME": str(tmp_path / "home")}
    p = subprocess.Popen([KEYWARD, "secret", "set", "gh"], stdin=slave, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=e)
    err = b""
    deadline = time.monotonic() + 20
    while b"Value for" not in err:
        assert time.monotonic() < deadline, err
        if select.select([p.stderr], [], [], 0.1)[0]:
            err += os.read(p.stderr.fileno(), 4096)
    assert not termios.tcgetattr(slave)[3] & termios.ECHO
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=20) == -signal.SIGINT
    assert termios.tcgetattr(slave)[3] & termios.ECHO
    for fd in (master, slave):
        os.close(fd)
    p.stdout.close()
    p.stderr.close()
    assert not (tmp_path / "home" / "vault").exists()
