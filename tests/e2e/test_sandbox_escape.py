"""Escape attempts from inside `keyward run`.

Each test runs a real attack from inside the sandbox (a shell, `python3 -c`,
or a small C program built on the host into the workspace) and checks the
exact outcome: the errno, the exit status, what the host side saw. Each
would fail if the defence it names were missing (docs/sandbox.md, "The
fences"; docs/threat-model.md). A test that cannot mean anything on this
kernel or as this user skips and says why."""

import ctypes
import errno
import json
import os
import platform
import pty
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import tty

import pytest

from conftest import KEYWARD, policy_for
from kwtest import SECRET, SECRET2

X86_64 = platform.machine() == "x86_64"
needs_x86_64 = pytest.mark.skipif(not X86_64, reason="the attacks call system calls by their x86_64 numbers")

# Run inside the sandbox before each python attack: probe(key, fn) records
# "OK" or the errno's name under key; done() prints everything as JSON.
PRELUDE = r'''
import ctypes, errno, json, os, signal, socket, sys, time
libc = ctypes.CDLL(None, use_errno=True)
out = {}
def ename(e):
    return errno.errorcode.get(e, str(e))
def probe(key, fn):
    try:
        fn()
    except OSError as e:
        out[key] = ename(e.errno)
    else:
        out[key] = "OK"
def arg(a):
    if isinstance(a, int):
        return ctypes.c_long(a)
    if isinstance(a, bytes):
        return ctypes.c_char_p(a)
    return a
def sysc(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[arg(a) for a in args])
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    if r == 0 and nr == NR["clone"]:  # a clone that was not refused: the child leaves at once
        os._exit(0)
    return r
def done(**extra):
    out.update(extra)
    print(json.dumps(out, sort_keys=True))
'''

# x86_64 system call numbers the attacks use where Python has no wrapper.
NR = dict(ioctl=16, socket=41, clone=56, ptrace=101, personality=135, pivot_root=155, chroot=161, mount=165,
          umount2=166, add_key=248, request_key=249, keyctl=250, unshare=272, perf_event_open=298,
          name_to_handle_at=303, open_by_handle_at=304, setns=308, process_vm_readv=310, bpf=321,
          userfaultfd=323, io_uring_setup=425, open_tree=428, move_mount=429, fsopen=430, fspick=433,
          pidfd_open=434, clone3=435, pidfd_getfd=438, mount_setattr=442)
NR_PRELUDE = PRELUDE + "NR = " + repr(NR) + "\n"


def py(code):
    """argv running python code (with the prelude) inside the sandbox."""
    return ["python3", "-c", NR_PRELUDE + code]


def result(p):
    """The JSON the inside script printed last."""
    assert p.out.strip(), f"no output; status {p.returncode}\n{p.err}"
    return json.loads(p.out.strip().splitlines()[-1])


def landlock_abi():
    """The host kernel's Landlock ABI (0 without Landlock). The syscall is
    number 444 on every architecture."""
    libc = ctypes.CDLL(None, use_errno=True)
    r = libc.syscall(ctypes.c_long(444), None, ctypes.c_long(0), ctypes.c_long(1))
    return r if r > 0 else 0


def popen(sb, cmd, args=(), env=None, **kw):
    """Starts `keyward run` like Sandbox.run, without waiting for it."""
    e = dict(sb.env)
    e.update(env or {})
    return subprocess.Popen(sb.argv(cmd, args), env=e, cwd=sb.tmp, **kw)


def finish(sb, proc, timeout=20):
    """Waits for a Popen'd run, returns it with .out/.err, and checks that no
    secret leaked into its output."""
    out, err = proc.communicate(timeout=timeout)
    proc.out = out.decode(errors="replace") if out else ""
    proc.err = err.decode(errors="replace") if err else ""
    sb.check_clean(proc.out, proc.err)
    return proc


def skip_if_limits_unavailable(p):
    """keyward refuses to run (125) a policy with cgroup limits where no
    cgroup is writable: the test cannot mean anything then."""
    if p.returncode == 125 and "cgroup" in p.err:
        pytest.skip(f"cgroup limits cannot be applied here: {p.err.strip()}")


def compile_c(sb, name, source):
    """Builds a C program on the host into the workspace (visible inside at
    the same path)."""
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed to build the attack program")
    src = sb.workspace / f"{name}.c"
    src.write_text(source)
    exe = sb.workspace / name
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(src)], check=True, capture_output=True)
    return exe


def host_pids_running(*argv):
    """Host processes whose argument vector is exactly argv."""
    want = b"".join(a.encode() + b"\0" for a in argv)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                if f.read() == want:
                    found.append(int(d))
        except OSError:
            continue
    return found


# ---- other processes: keyward, PID 1, siblings ----


def test_keyward_is_not_in_the_sandbox_pid_namespace(sandbox_factory, upstream):
    """keyward's proxy holds the secrets; the sandbox's /proc shows only
    its own processes (a tree under its PID 1, which has no parent inside)
    and keyward's host PID names no process at all."""
    sb = sandbox_factory(policy_for(upstream))
    code = r'''
ws = os.getcwd()
deadline = time.time() + 10
while not os.path.exists("hostpid") and time.time() < deadline:
    time.sleep(0.01)
kw = int(open("hostpid").read())
procs = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        procs[d] = [int(stat.rsplit(")", 1)[1].split()[1]), cmd.replace(b"\0", b" ").decode(errors="replace")]
probe("kill keyward 0", lambda: os.kill(kw, 0))
probe("kill keyward KILL", lambda: os.kill(kw, signal.SIGKILL))
probe("environ of keyward", lambda: open(f"/proc/{kw}/environ", "rb"))
probe("mem of keyward", lambda: open(f"/proc/{kw}/mem", "rb"))
probe("fd of keyward", lambda: os.listdir(f"/proc/{kw}/fd"))
done(procs=procs, kw=kw)
'''
    proc = popen(sb, py(code), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    (sb.workspace / "hostpid").write_text(str(proc.pid))
    p = finish(sb, proc)
    assert p.returncode == 0, p.err
    r = result(p)
    assert r["kw"] == proc.pid
    assert r["kill keyward 0"] == "ESRCH"
    assert r["kill keyward KILL"] == "ESRCH"
    assert r["environ of keyward"] == "ENOENT"
    assert r["mem of keyward"] == "ENOENT"
    assert r["fd of keyward"] == "ENOENT"
    procs = {int(k): v for k, v in r["procs"].items()}
    # PID 1 (keyward's forked init) and the python above, nothing else
    assert set(procs) == {1, 2}, procs
    assert procs[1][0] == 0, "PID 1 must have no parent inside"
    assert procs[2][0] == 1
    assert procs[1][1].strip() == "keyward-init"
    for pid, (_, cmd) in procs.items():
        assert "keyward run" not in cmd and "--policy" not in cmd and str(sb.policy) not in cmd, (pid, cmd)
    # still serving: keyward was never hit
    assert proc.returncode == 0


def test_pid1_environ_mem_and_fds_unreadable(sandbox_factory, upstream):
    """PID 1 is a fork of keyward: not dumpable, so its memory, environment
    and descriptors are closed to CMD (same uid), and its argument area was
    wiped to "keyward-init" (no policy path, no secret). /proc/self of CMD
    stays readable, so the refusals are about PID 1."""
    sb = sandbox_factory(policy_for(upstream))
    code = r'''
probe("environ", lambda: open("/proc/1/environ", "rb").read())
probe("mem", lambda: open("/proc/1/mem", "rb"))
probe("maps", lambda: open("/proc/1/maps").read())
probe("auxv", lambda: open("/proc/1/auxv", "rb").read())
probe("readlink fd/0", lambda: os.readlink("/proc/1/fd/0"))
probe("open fd/1", lambda: open("/proc/1/fd/1", "wb"))
probe("readlink root", lambda: os.readlink("/proc/1/root"))
probe("readlink cwd", lambda: os.readlink("/proc/1/cwd"))
probe("self environ", lambda: open("/proc/self/environ", "rb").read())
probe("self mem", lambda: open("/proc/self/mem", "rb"))
cmdline = open("/proc/1/cmdline", "rb").read()
status = dict(l.split(":", 1) for l in open("/proc/1/status").read().splitlines())
done(cmdline=cmdline.rstrip(b"\0").decode(errors="replace"), nuls=set(cmdline[len(b"keyward-init"):]) <= {0},
     uid=status["Uid"].split())
'''
    p = sb.run(py(code))
    assert p.returncode == 0, p.err
    r = result(p)
    for k in ("environ", "mem", "maps", "auxv", "readlink fd/0", "open fd/1", "readlink root", "readlink cwd"):
        assert r[k] == "EACCES", (k, r[k])
    assert r["self environ"] == "OK" and r["self mem"] == "OK"
    assert r["cmdline"] == "keyward-init" and r["nuls"] is True
    assert r["uid"] == ["1000"] * 4  # the same user as CMD: only non-dumpability stops it


@needs_x86_64
def test_ptrace_process_vm_readv_pidfd_getfd_refused(sandbox_factory):
    """ptrace, process_vm_readv and pidfd_getfd answer EPERM whatever the
    target: PID 1, a sibling (sleep started by the same shell), a child of
    our own and ourselves (the last two would be allowed by the kernel's
    own permission checks: only seccomp refuses them)."""
    sb = sandbox_factory()
    code = r'''
sib = int(sys.argv[1])
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
buf = ctypes.create_string_buffer(64)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.addressof(buf), 64)
remote = iovec(ctypes.addressof(buf), 64)  # same layout in a fork
for name, pid in (("pid1", 1), ("sibling", sib), ("child", child), ("self", os.getpid())):
    probe(f"ptrace attach {name}", lambda: sysc(NR["ptrace"], 16, pid, 0, 0))
    probe(f"ptrace seize {name}", lambda: sysc(NR["ptrace"], 0x4206, pid, 0, 0))
    probe(f"process_vm_readv {name}", lambda: sysc(NR["process_vm_readv"], pid, ctypes.byref(local), 1,
                                                   ctypes.byref(remote), 1, 0))
    try:
        pidfd = sysc(NR["pidfd_open"], pid, 0)
    except OSError as e:
        out[f"pidfd_open {name}"] = ename(e.errno)
    else:
        probe(f"pidfd_getfd {name}", lambda: sysc(NR["pidfd_getfd"], pidfd, 0, 0))
probe("ptrace traceme", lambda: sysc(NR["ptrace"], 0, 0, 0, 0))
os.kill(child, 9)
done()
'''
    p = sb.run(["sh", "-c", 'sleep 30 & exec python3 -c "$1" $!', "sh", NR_PRELUDE + code])
    assert p.returncode == 0, p.err
    r = result(p)
    for who in ("pid1", "sibling", "child", "self"):
        assert r[f"ptrace attach {who}"] == "EPERM", who
        assert r[f"ptrace seize {who}"] == "EPERM", who
        assert r[f"process_vm_readv {who}"] == "EPERM", who
        assert r[f"pidfd_getfd {who}"] == "EPERM", who
    assert r["ptrace traceme"] == "EPERM"


def test_kill_from_inside_cannot_stop_the_proxy(sandbox_factory, upstream):
    """kill(1, SIGKILL) is ignored (PID 1 of a namespace), kill(-1, SIGKILL)
    reaches only the sandbox's own processes, the test runner's PID (the
    parent of keyward) does not exist inside; afterwards the proxy still
    serves an allowed request with the real credential and the run returns
    CMD's status."""
    sb = sandbox_factory(policy_for(upstream))
    url = f"https://api.test:{upstream.port}/api/after-kill"
    code = r"""
import subprocess
victim = os.fork()
if victim == 0:
    signal.pause()
    os._exit(0)
probe("kill 1", lambda: os.kill(1, signal.SIGKILL))
probe("kill -1", lambda: os.kill(-1, signal.SIGKILL))
_, st = os.waitpid(victim, 0)
probe("kill runner", lambda: os.kill(int(sys.argv[1]), signal.SIGKILL))
curl = 'curl -sS -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $TEST_TOKEN" "$0"'
status = subprocess.run(["sh", "-c", curl, sys.argv[2]], capture_output=True, text=True).stdout
done(victim=os.WTERMSIG(st) if os.WIFSIGNALED(st) else -1, status=status)
sys.exit(42)
"""
    p = sb.run(py(code) + [str(os.getpid()), url])
    assert p.returncode == 42, p.out + p.err
    r = result(p)
    assert r["kill 1"] == "OK"  # accepted, and ignored: PID 1 reported our status
    assert r["kill -1"] == "OK" and r["victim"] == signal.SIGKILL
    assert r["kill runner"] == "ESRCH"
    assert r["status"] == "200"
    assert upstream.requests[-1].target == "/api/after-kill"
    assert upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"


def test_group_signals_from_inside_stay_inside_without_a_terminal(sandbox_factory):
    """Started without a terminal (as a CI script runs it), the sandbox is
    a process group of its own (PID 1 leads one, and CMD one inside it:
    groups whose leaders are in the sandbox), so kill(0, SIGTERM) from CMD
    reaches the sandbox's processes only, not
    keyward, the script that started it or the script's other children,
    whether or not the kernel's Landlock scopes signals (ABI 6)."""
    sb = sandbox_factory()
    code = r"""
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pg = os.getpgrp()
probe("kill 0", lambda: os.kill(0, signal.SIGTERM))
time.sleep(0.3)
done(leads_its_group=pg == os.getpid(), pid1_group=os.getpgid(1))
"""
    script = 'sleep 30 & sib=$!; "$@"; rc=$?; kill -0 $sib && echo sibling-alive; kill $sib; echo "caller rc=$rc"'
    proc = subprocess.run(["sh", "-c", script, "sh"] + sb.argv(py(code)), capture_output=True, text=True,
                          env=sb.env, cwd=sb.tmp, timeout=60, start_new_session=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == ["sibling-alive", "caller rc=0"], proc.stdout + proc.stderr
    assert json.loads(lines[-3]) == {"kill 0": "OK", "leads_its_group": True, "pid1_group": 1}, proc.stdout


def test_group_sigint_from_outside_reaches_cmd_and_its_children(sandbox_factory):
    """Without a terminal the sandbox is a group of its own, and CMD leads
    one inside it: a SIGINT sent to keyward's process group (a CI job
    cancelled, `timeout -s INT`) is passed on to CMD's whole group, so the
    child a shell waits for is interrupted too, and the run ends with
    128+2 at once instead of carrying on."""
    sb = sandbox_factory()
    proc = subprocess.Popen(sb.argv(["bash", "-c", "echo ready; sleep 20; echo CONTINUED"]), env=sb.env,
                            cwd=sb.tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"ready\n"
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert b"CONTINUED" not in out and time.monotonic() - t0 < 10
    sb.check_clean(out.decode(errors="replace"), err.decode(errors="replace"))


# ---- the network ----


def _host_listeners():
    """TCP listeners on the host's 127.0.0.1 and ::1 (same port) and a UDP
    socket on 127.0.0.1 of that port, all non-blocking."""
    t4 = socket.socket(socket.AF_INET)
    t4.bind(("127.0.0.1", 0))
    port = t4.getsockname()[1]
    t4.listen()
    socks = [t4]
    try:
        t6 = socket.socket(socket.AF_INET6)
        t6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        t6.bind(("::1", port))
        t6.listen()
        socks.append(t6)
    except OSError:
        pass  # no IPv6 on this host: only the IPv4 listener
    u4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u4.bind(("127.0.0.1", port))
    socks.append(u4)
    for s in socks:
        s.setblocking(False)
    return port, socks


def _host_saw_nothing(socks):
    for s in socks:
        try:
            if s.type == socket.SOCK_DGRAM:
                data = s.recv(100)
                raise AssertionError(f"the host UDP socket received {data!r}")
            s.accept()
            raise AssertionError(f"the host listener {s.getsockname()} accepted a connection")
        except BlockingIOError:
            pass
        finally:
            s.close()


HOST_LOOPBACK = r'''
port = int(sys.argv[1])
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(addr)
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"from the sandbox", ("127.0.0.1", port))
probe("tcp4", lambda: tcp(socket.AF_INET, ("127.0.0.1", port)))
probe("tcp6", lambda: tcp(socket.AF_INET6, ("::1", port)))
probe("udp4", udp)
done()
'''


def test_host_loopback_services_unreachable(sandbox_factory):
    """A service on the host's 127.0.0.1 / ::1: the sandbox's lo is its own,
    so even with Landlock letting the port through (sandbox.ports) the
    connection is refused, and UDP lands in the sandbox's own lo. Without
    sandbox.ports, Landlock (ABI 4+) refuses the connect first."""
    port, socks = _host_listeners()
    try:
        sb = sandbox_factory(f"version: 1\nsandbox:\n  ports: [{port}]\n")
        p = sb.run(py(HOST_LOOPBACK) + [str(port)])
        assert p.returncode == 0, p.err
        r = result(p)
        assert r["tcp4"] == "ECONNREFUSED"
        if len(socks) == 3:  # the host has ::1
            assert r["tcp6"] == "ECONNREFUSED"
        assert r["udp4"] == "OK"  # sent, into the sandbox's own loopback

        sb2 = sandbox_factory()
        p = sb2.run(py(HOST_LOOPBACK) + [str(port)])
        r = result(p)
        expect = "EACCES" if landlock_abi() >= 4 else "ECONNREFUSED"
        assert r["tcp4"] == expect, r
        if len(socks) == 3:
            assert r["tcp6"] == expect, r
    finally:
        _host_saw_nothing(socks)


def test_host_abstract_unix_socket_unreachable(sandbox_factory):
    """An abstract unix socket of the host (D-Bus, X11 and many agents use
    them): abstract names belong to the network namespace, so connecting
    from inside is refused and the host never sees a connection."""
    name = f"keyward-test-{os.getpid()}-{random.getrandbits(32):08x}"
    host = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    host.bind("\0" + name)
    host.listen()
    host.setblocking(False)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind("\0" + name + "-dgram")
    dgram.setblocking(False)
    try:
        sb = sandbox_factory()
        code = r'''
name = sys.argv[1]
def stream():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + name)
def dgram():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"x", "\0" + name + "-dgram")
probe("stream", stream)
probe("dgram", dgram)
done()
'''
        p = sb.run(py(code) + [name])
        assert p.returncode == 0, p.err
        r = result(p)
        assert r["stream"] == "ECONNREFUSED"
        assert r["dgram"] == "ECONNREFUSED"
        with pytest.raises(BlockingIOError):
            host.accept()
        with pytest.raises(BlockingIOError):
            dgram.recv(10)
    finally:
        host.close()
        dgram.close()


def test_host_unix_sockets_outside_the_workspace_invisible(sandbox_factory, tmp_path):
    """Host sockets elsewhere (a fake /run/docker.sock and an ssh-agent
    socket, in a host directory outside the workspace) do not exist inside,
    and SSH_AUTH_SOCK does not pass."""
    run = tmp_path / "hostrun"
    (run / "ssh-agent").mkdir(parents=True)
    paths = [run / "docker.sock", run / "ssh-agent" / "agent.sock"]
    socks = []
    for path in paths:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.listen()
        s.setblocking(False)
        socks.append(s)
    try:
        sb = sandbox_factory()
        code = r'''
def conn(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
for i, path in enumerate(sys.argv[1:]):
    probe(f"connect {i}", lambda: conn(path))
    probe(f"stat {i}", lambda: os.stat(path))
probe("docker", lambda: conn("/run/docker.sock"))
probe("dbus", lambda: conn("/run/dbus/system_bus_socket"))
done(ssh_auth_sock=os.environ.get("SSH_AUTH_SOCK"), run=os.listdir("/run"))
'''
        p = sb.run(py(code) + [str(x) for x in paths], env={"SSH_AUTH_SOCK": str(paths[1])})
        assert p.returncode == 0, p.err
        r = result(p)
        for i in range(len(paths)):
            assert r[f"connect {i}"] == "ENOENT" and r[f"stat {i}"] == "ENOENT", r
        assert r["docker"] == "ENOENT" and r["dbus"] == "ENOENT"
        assert r["ssh_auth_sock"] is None
        assert r["run"] == []
        for s in socks:
            with pytest.raises(BlockingIOError):
                s.accept()
    finally:
        for s in socks:
            s.close()


def test_host_unix_socket_inside_the_workspace_is_reachable(sandbox_factory):
    """The documented limit (threat-model.md, "Anything the workspace
    already holds"): the workspace is the host's directory, bound as it is,
    so a socket a host process binds there is reachable from inside. Keep
    sockets out of the workspace."""
    sb = sandbox_factory()
    path = sb.workspace / "host.sock"
    host = socket.socket(socket.AF_UNIX)
    host.bind(str(path))
    host.listen()
    host.settimeout(10)
    try:
        code = r'''
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"hello from the sandbox")
done(connected=True)
'''
        proc = popen(sb, py(code) + [str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        conn, _ = host.accept()
        conn.settimeout(10)
        assert conn.recv(100) == b"hello from the sandbox"
        conn.close()
        p = finish(sb, proc)
        assert p.returncode == 0, p.err
        assert result(p) == {"connected": True}
    finally:
        host.close()


def test_name_resolution_fails(sandbox_factory):
    """No resolver inside: names resolve only from the sandbox's /etc/hosts,
    and a DNS query sent by hand has no route."""
    sb = sandbox_factory()
    code = r'''
try:
    socket.getaddrinfo("example.com", 443)
    gai = "OK"
except socket.gaierror as e:
    gai = e.errno
def dns(addr, fam):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01", (addr, 53))
probe("dns 8.8.8.8", lambda: dns("8.8.8.8", socket.AF_INET))
probe("dns 2001:4860:4860::8888", lambda: dns("2001:4860:4860::8888", socket.AF_INET6))
resolv = [l for l in open("/etc/resolv.conf").read().splitlines() if l and not l.startswith("#")]
done(gai=gai, resolv=resolv, localhost=socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4][0])
'''
    p = sb.run(["sh", "-c", 'getent hosts example.com; echo "getent=$?"; exec python3 -c "$1"', "sh",
                NR_PRELUDE + code])
    assert p.returncode == 0, p.err
    assert p.out.splitlines()[0] == "getent=2"  # "key not found"
    r = result(p)
    assert r["gai"] == socket.EAI_NONAME
    assert r["dns 8.8.8.8"] == "ENETUNREACH"
    assert r["dns 2001:4860:4860::8888"] == "ENETUNREACH"
    assert r["resolv"] == []  # no nameserver line
    assert r["localhost"] == "127.0.0.1"


PUBLIC = r'''
def tcp(fam, addr):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(3)
    s.connect(addr)
def udp(fam, addr):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.sendto(b"x", addr)
probe("tcp 8.8.8.8:443", lambda: tcp(socket.AF_INET, ("8.8.8.8", 443)))
probe("tcp [2606:4700:4700::1111]:443", lambda: tcp(socket.AF_INET6, ("2606:4700:4700::1111", 443)))
probe("udp 1.1.1.1:53", lambda: udp(socket.AF_INET, ("1.1.1.1", 53)))
probe("udp [2606:4700:4700::1111]:53", lambda: udp(socket.AF_INET6, ("2606:4700:4700::1111", 53)))
probe("udp 255.255.255.255:67", lambda: udp(socket.AF_INET, ("255.255.255.255", 67)))
ifaces = [l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]]
routes = open("/proc/net/route").read().splitlines()[1:]
done(ifaces=ifaces, routes=routes)
'''


def test_public_addresses_have_no_route(sandbox_factory):
    """TCP and UDP to public addresses never leave: the namespace holds only
    lo and no route (ENETUNREACH), even for a port Landlock lets through.
    Without sandbox.ports, Landlock refuses the TCP connect first."""
    sb = sandbox_factory("version: 1\nsandbox:\n  ports: [443]\n")
    p = sb.run(py(PUBLIC))
    assert p.returncode == 0, p.err
    r = result(p)
    assert r["ifaces"] == ["lo"]
    assert r["routes"] == []
    for k in ("tcp 8.8.8.8:443", "tcp [2606:4700:4700::1111]:443", "udp 1.1.1.1:53",
              "udp [2606:4700:4700::1111]:53"):
        assert r[k] == "ENETUNREACH", (k, r[k])
    assert r["udp 255.255.255.255:67"] in ("EACCES", "ENETUNREACH")  # no SO_BROADCAST; no route anyway

    p = sandbox_factory().run(py(PUBLIC))
    r = result(p)
    tcp = "EACCES" if landlock_abi() >= 4 else "ENETUNREACH"
    assert r["tcp 8.8.8.8:443"] == tcp and r["tcp [2606:4700:4700::1111]:443"] == tcp
    assert r["udp 1.1.1.1:53"] == "ENETUNREACH"


@needs_x86_64
def test_raw_packet_netlink_vsock_sockets_refused(sandbox_factory):
    """Raw and packet inet sockets answer EPERM, every family but unix and
    inet(6) EAFNOSUPPORT (seccomp), also with junk in the upper half of the
    family register; so `ip` cannot even talk to the kernel, and lo stays
    up (the SIOCSIFFLAGS ioctl is refused for want of CAP_NET_ADMIN)."""
    sb = sandbox_factory()
    code = r'''
import fcntl, struct
probe("inet raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
probe("inet6 raw", lambda: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6))
probe("inet raw nonblock", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 255))
probe("inet packet", lambda: socket.socket(socket.AF_INET, 10, 0))
probe("packet", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0))
probe("packet dgram", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0))
probe("netlink route", lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0))
probe("vsock", lambda: socket.socket(40, socket.SOCK_STREAM, 0))
probe("alg", lambda: socket.socket(38, socket.SOCK_SEQPACKET, 0))
probe("bluetooth", lambda: socket.socket(31, socket.SOCK_STREAM, 0))
probe("xdp", lambda: socket.socket(44, socket.SOCK_RAW, 0))
probe("netlink high bits", lambda: sysc(NR["socket"], (1 << 32) | socket.AF_NETLINK, socket.SOCK_RAW, 0))
probe("socketpair netlink", lambda: socket.socketpair(socket.AF_NETLINK, socket.SOCK_RAW, 0))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]  # SIOCGIFFLAGS
probe("lo down", lambda: fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags & ~1)))  # SIOCSIFFLAGS
flags_after = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0)))[1]
done(lo_up=bool(flags_after & 1))
'''
    ip = shutil.which("ip", path="/usr/sbin:/usr/bin:/sbin:/bin")  # the sandbox sees the host's /usr
    script = 'exec python3 -c "$1"'
    if ip:
        script = f'{ip} route add 10.0.0.0/8 dev lo; echo "route=$?"; {ip} link set lo down; echo "link=$?"; ' + script
    p = sb.run(["sh", "-c", script, "sh", NR_PRELUDE + code])
    assert p.returncode == 0, p.err
    if ip:  # iproute2 cannot even open its netlink socket
        assert p.out.splitlines()[:2] == ["route=1", "link=1"], p.out + p.err
        assert p.err.count("Cannot open netlink socket: Address family not supported by protocol") == 2, p.err
    r = result(p)
    for k in ("inet raw", "inet6 raw", "inet raw nonblock", "inet packet"):
        assert r[k] == "EPERM", (k, r[k])
    for k in ("packet", "packet dgram", "netlink route", "vsock", "alg", "bluetooth", "xdp", "netlink high bits",
              "socketpair netlink"):
        assert r[k] == "EAFNOSUPPORT", (k, r[k])
    assert r["lo down"] == "EPERM"
    assert r["lo_up"] is True


# ---- privileges ----


@needs_x86_64
def test_namespaces_and_mounts_refused(sandbox_factory):
    """New namespaces (a nested user namespace would hand out a full
    capability set), setns, and every way to mount or change the root
    answer EPERM; clone3 answers ENOSYS so that libc falls back to clone,
    whose flags the filter reads."""
    sb = sandbox_factory()
    code = r'''
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
for name, flag in (("user", CLONE_NEWUSER), ("mnt", CLONE_NEWNS), ("net", CLONE_NEWNET), ("pid", CLONE_NEWPID),
                   ("user+mnt", CLONE_NEWUSER | CLONE_NEWNS)):
    probe(f"unshare {name}", lambda: sysc(NR["unshare"], flag))
    probe(f"clone {name}", lambda: sysc(NR["clone"], flag | signal.SIGCHLD, 0, 0, 0, 0))
probe("clone3", lambda: sysc(NR["clone3"], 0, 0))
for ns in ("user", "net", "mnt"):
    fd = os.open(f"/proc/self/ns/{ns}", os.O_RDONLY)
    probe(f"setns {ns}", lambda: sysc(NR["setns"], fd, 0))
probe("open /proc/1/ns/net", lambda: os.open("/proc/1/ns/net", os.O_RDONLY))
probe("mount tmpfs", lambda: sysc(NR["mount"], b"none", b"/tmp", b"tmpfs", 0, 0))
probe("remount / rw", lambda: sysc(NR["mount"], b"none", b"/", b"none", 0x20 | 0x1000, 0))  # MS_REMOUNT|MS_BIND
probe("umount2 /usr", lambda: sysc(NR["umount2"], b"/usr", 2))
probe("pivot_root", lambda: sysc(NR["pivot_root"], b"/tmp", b"/tmp"))
probe("chroot", lambda: os.chroot("/tmp"))
probe("open_tree", lambda: sysc(NR["open_tree"], -100, b"/usr", 1))
probe("fsopen", lambda: sysc(NR["fsopen"], b"tmpfs", 0))
probe("fspick", lambda: sysc(NR["fspick"], -100, b"/", 0))
probe("move_mount", lambda: sysc(NR["move_mount"], -100, b"/usr", -100, b"/tmp", 0))
probe("mount_setattr", lambda: sysc(NR["mount_setattr"], -100, b"/", 0, 0, 0))
handle = ctypes.create_string_buffer(136)
ctypes.c_uint.from_buffer(handle).value = 128
mnt = ctypes.c_int()
probe("name_to_handle_at", lambda: sysc(NR["name_to_handle_at"], -100, b"/etc", handle, ctypes.byref(mnt), 0))
probe("open_by_handle_at", lambda: sysc(NR["open_by_handle_at"], os.open("/", os.O_RDONLY), handle, 0))
done()
'''
    p = sb.run(["sh", "-c", 'unshare -r true; echo "unshare=$?"; exec python3 -c "$1"', "sh", NR_PRELUDE + code])
    assert p.returncode == 0, p.err
    assert p.out.splitlines()[0] == "unshare=1"
    assert "unshare failed: Operation not permitted" in p.err
    r = result(p)
    assert r.pop("clone3") == "ENOSYS"
    assert r.pop("open /proc/1/ns/net") == "EACCES"  # PID 1 is not dumpable
    assert r == {k: "EPERM" for k in r}, r
    assert len(r) == 10 + 3 + 12


SETUID_PROG = r"""
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
int main(void)
{
	uid_t r, e, s;
	gid_t gr, ge, gs;
	getresuid(&r, &e, &s);
	getresgid(&gr, &ge, &gs);
	char line[256], caps[512] = "";
	FILE *f = fopen("/proc/self/status", "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "Cap", 3)) {
			line[strcspn(line, "\n")] = ' ';
			strcat(caps, line);
		}
	printf("uid=%u,%u,%u gid=%u,%u,%u nnp=%d %s\n", r, e, s, gr, ge, gs, prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), caps);
	return 0;
}
"""


def test_setuid_and_file_capabilities_gain_nothing(sandbox_factory):
    """A set-uid/set-gid program and (as root) one with file capabilities
    (cap_sys_admin, cap_net_raw, cap_setuid: host root's file capabilities
    apply in a child user namespace, so without no_new_privs, nosuid and
    the empty bounding set this one would run with them inside) run with
    nothing more: same ids, empty capability sets. The host's own su
    fails; the sandbox's status shows NoNewPrivs 1 and every capability set
    empty; /usr and the workspace are nosuid. (Set-uid alone gains nothing
    by construction: only one uid is mapped.)"""
    sb = sandbox_factory()
    exe = compile_c(sb, "whoami", SETUID_PROG)
    suid = sb.workspace / "whoami-suid"
    shutil.copy(exe, suid)
    os.chmod(suid, 0o6755)
    fcap = None
    if os.geteuid() == 0 and shutil.which("setcap"):
        fcap = sb.workspace / "whoami-fcap"
        shutil.copy(exe, fcap)
        subprocess.run(["setcap", "cap_sys_admin,cap_net_raw,cap_setuid+ep", str(fcap)], check=True)
    su = "su -c id root </dev/null" if os.path.exists("/usr/bin/su") else "false"
    script = (f'{suid}; {fcap or suid}; {su}; echo "su=$?"; id -u; '
              f'grep -E "^(NoNewPrivs|Cap(Inh|Prm|Eff|Bnd|Amb))" /proc/self/status; '
              f'grep -E " (/usr|{sb.workspace}) " /proc/self/mountinfo')
    p = sb.run(["sh", "-c", script])
    assert p.returncode == 0, p.err
    lines = p.out.splitlines()
    zero = "0000000000000000"
    nothing = (f"uid=1000,1000,1000 gid=1000,1000,1000 nnp=1 CapInh:\t{zero} CapPrm:\t{zero} CapEff:\t{zero} "
               f"CapBnd:\t{zero} CapAmb:\t{zero} ")
    assert lines[0] == nothing, lines[0]
    assert lines[1] == nothing, lines[1]
    assert "uid=0" not in p.out
    assert lines[2] == "su=1"
    assert lines[3] == "1000"
    status = dict(l.split(":\t") for l in lines[4:10])
    assert status == {"NoNewPrivs": "1", "CapInh": zero, "CapPrm": zero, "CapEff": zero, "CapBnd": zero,
                      "CapAmb": zero}
    mounts = lines[10:]
    assert len(mounts) == 2, mounts
    for m in mounts:
        assert "nosuid" in m.split()[5].split(","), m


SETID_ATTACKS = r'''
import stat
x86_64 = sys.argv[1] == "x86_64"
NR_FCHMODAT2 = 452
AT_FDCWD = -100
dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY)
for name, bit in (("suid", stat.S_ISUID), ("sgid", stat.S_ISGID)):
    for how in ("chmod", "fchmod", "fchmodat", "fchmodat2"):
        os.close(os.open(f"{how}-{name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755))
    def fchmod():
        fd = os.open(f"fchmod-{name}", os.O_RDONLY)
        try:
            os.fchmod(fd, 0o755 | bit)
        finally:
            os.close(fd)
    def tmpfile():
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o755 | bit)
        os.link(f"/proc/self/fd/{fd}", f"tmpfile-{name}")
    probe(f"chmod {name}", lambda: os.chmod(f"chmod-{name}", 0o755 | bit))
    probe(f"fchmod {name}", fchmod)
    probe(f"fchmodat {name}", lambda: os.chmod(f"fchmodat-{name}", 0o755 | bit, dir_fd=dfd))
    if x86_64:  # raw: Debian 12's glibc has no wrapper
        probe(f"fchmodat2 {name}", lambda: sysc(NR_FCHMODAT2, AT_FDCWD, f"fchmodat2-{name}".encode(), 0o755 | bit, 0))
    probe(f"open {name}", lambda: os.close(os.open(f"open-{name}", os.O_WRONLY | os.O_CREAT, 0o755 | bit)))
    probe(f"O_TMPFILE {name}", tmpfile)
    probe(f"mknod {name}", lambda: os.mknod(f"mknod-{name}", stat.S_IFREG | 0o755 | bit))
# what builds and installs do stays allowed
os.close(os.open("plain", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
probe("ok chmod 0755", lambda: os.chmod("plain", 0o755))
probe("ok chmod 0644", lambda: os.chmod("plain", 0o644, dir_fd=dfd))
probe("ok open O_CREAT 0644", lambda: os.close(os.open("created", os.O_WRONLY | os.O_CREAT, 0o644)))
# without O_CREAT the mode argument means nothing, whatever bits it holds
probe("ok open O_RDONLY 04755", lambda: os.close(os.open("plain", os.O_RDONLY, 0o4755)))
probe("ok mkdir", lambda: os.mkdir("dir", 0o755))
def fchmod_plain():
    fd = os.open("created", os.O_RDONLY)
    os.fchmod(fd, 0o600)
    os.close(fd)
probe("ok fchmod 0600", fchmod_plain)
done(modes={n: os.lstat(n).st_mode for n in sorted(os.listdir("."))})
'''


def test_setuid_and_setgid_bits_refused(sandbox_factory):
    """The sandbox's user is the caller on the host (root, when root started
    keyward): a set-uid program it left in the workspace would run as the
    caller for any local user once the sandbox is gone (nosuid holds only
    inside). chmod, fchmod, fchmodat, fchmodat2, a creating open (O_CREAT,
    O_TMPFILE) and mknod with S_ISUID or S_ISGID answer EPERM and leave no
    such bit on the host; the same calls with ordinary modes, and an open
    without O_CREAT whose mode argument holds the bits, still work."""
    sb = sandbox_factory()
    p = sb.run(py(SETID_ATTACKS) + [platform.machine()])
    assert p.returncode == 0, p.err
    r = result(p)
    modes = r.pop("modes")
    ok = {k: r.pop(k) for k in list(r) if k.startswith("ok ")}
    assert ok == {k: "OK" for k in ok} and len(ok) == 6, ok
    assert r == {k: "EPERM" for k in r}, r
    assert len(r) == 2 * (7 if X86_64 else 6), r
    for name in os.listdir(sb.workspace):
        mode = os.lstat(sb.workspace / name).st_mode
        assert not mode & (stat.S_ISUID | stat.S_ISGID), f"{name}: {oct(mode)} on the host"
    # the refused creations created nothing; the refused chmods left 0755
    for name in modes:
        assert not name.startswith(("open-", "tmpfile-", "mknod-")), name
    for how in ("chmod", "fchmod", "fchmodat", "fchmodat2"):
        for bits in ("suid", "sgid"):
            assert stat.S_IMODE(os.lstat(sb.workspace / f"{how}-{bits}").st_mode) == 0o755
    assert stat.S_IMODE(os.lstat(sb.workspace / "plain").st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(sb.workspace / "created").st_mode) == 0o600


def test_setuid_refused_for_an_ordinary_caller():
    """Started by an ordinary user, the sandbox would leave set-uid-caller
    programs, letting other users act as the caller (and read the caller's
    vault): refused the same way."""
    from conftest import run_as_nobody
    p = run_as_nobody(["sh", "-c", "cp /bin/true t && chmod 4755 t; echo chmod=$?; "
                       "chmod 2755 t; echo chmod=$?; stat -c %a t"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["chmod=1", "chmod=1", "755"], p.stdout
    assert "Operation not permitted" in p.stderr
    assert p.workspace == {"t": 65534}


@needs_x86_64
def test_keyrings_refused(sandbox_factory, tmp_path):
    """Keyrings are not namespaced: a key in the session keyring keyward
    was started with is possessed by the sandbox too. keyctl, add_key and
    request_key answer EPERM, so its payload cannot be read (the kernel
    would let a possessor read it), and /proc/keys, which would list it
    with its description, is covered."""
    payload = f"keyring-payload-{random.getrandbits(48):012x}"
    desc = f"keyward-test-{os.getpid()}-{random.getrandbits(24):06x}"
    sb = sandbox_factory()
    launcher = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def sysc(nr, *a):
    r = libc.syscall(ctypes.c_long(nr), *a)
    if r < 0:
        sys.exit(f"keyring setup: {os.strerror(ctypes.get_errno())}")
    return r
sysc(250, ctypes.c_long(1), None)  # KEYCTL_JOIN_SESSION_KEYRING: a fresh anonymous one
p = sys.argv[2].encode()
serial = sysc(248, b"user", sys.argv[1].encode(), p, ctypes.c_size_t(len(p)), ctypes.c_long(-3))
open(sys.argv[3], "w").write(str(serial))
os.execv(sys.argv[4], sys.argv[4:])
'''
    code = r'''
serial = int(open("serial").read())
buf = ctypes.create_string_buffer(256)
probe("keyctl read", lambda: sysc(NR["keyctl"], 11, serial, buf, 256))                 # KEYCTL_READ
probe("keyctl describe", lambda: sysc(NR["keyctl"], 6, serial, buf, 256))             # KEYCTL_DESCRIBE
probe("keyctl get session", lambda: sysc(NR["keyctl"], 0, -3, 0))                     # KEYCTL_GET_KEYRING_ID
probe("keyctl search", lambda: sysc(NR["keyctl"], 10, -3, b"user", sys.argv[1].encode(), 0))
probe("request_key", lambda: sysc(NR["request_key"], b"user", sys.argv[1].encode(), 0, 0))
probe("add_key", lambda: sysc(NR["add_key"], b"user", b"planted", b"x", 1, -3))
try:
    keys = open("/proc/keys").read()
except OSError:
    keys = ""
done(listed=sys.argv[1] in keys, payload_in_proc=sys.argv[2] in keys,
     leaked=sys.argv[2].encode() in buf.raw)
'''
    argv = sb.argv(py(code) + [desc, payload])
    e = dict(sb.env)
    p = subprocess.run(["/usr/bin/python3", "-c", launcher, desc, payload, str(sb.workspace / "serial")] + argv,
                       capture_output=True, env=e, cwd=sb.tmp, timeout=30)
    p.out, p.err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    if "keyring setup" in p.err:
        pytest.skip(f"cannot create a session keyring here: {p.err.strip()}")
    sb.check_clean(p.out, p.err)
    assert p.returncode == 0, p.err
    r = result(p)
    for k in ("keyctl read", "keyctl describe", "keyctl get session", "keyctl search", "request_key", "add_key"):
        assert r[k] == "EPERM", (k, r[k])
    assert r["listed"] is False, "/proc/keys lists the caller's keys"
    assert r["payload_in_proc"] is False and r["leaked"] is False
    assert payload not in p.out


@needs_x86_64
def test_other_abis_and_kernel_attack_surface(sandbox_factory):
    """A 32-bit (int 0x80) or x32 system call kills the process (SIGSYS,
    status 159); bpf, perf_event_open, userfaultfd, io_uring_setup and a
    personality that turns off ASLR answer EPERM."""
    sb = sandbox_factory()
    compile_c(sb, "abi", r"""
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv)
{
	long r;
	if (argv[1][0] == '3')
		__asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory"); /* i386 getpid */
	else
		r = syscall(0x40000000L | SYS_getpid); /* x32 getpid */
	printf("survived %ld\n", r);
	return 0;
}
""")
    code = r'''
probe("bpf", lambda: sysc(NR["bpf"], 0, 0, 0))
probe("perf_event_open", lambda: sysc(NR["perf_event_open"], 0, 0, -1, -1, 0))
probe("userfaultfd", lambda: sysc(NR["userfaultfd"], 0))
params = ctypes.create_string_buffer(120)
probe("io_uring_setup", lambda: sysc(NR["io_uring_setup"], 1, params))
probe("personality ADDR_NO_RANDOMIZE", lambda: sysc(NR["personality"], 0x0040000))
probe("personality READ_IMPLIES_EXEC", lambda: sysc(NR["personality"], 0x0400000))
done(persona=libc.personality(ctypes.c_ulong(0xffffffff)))
'''
    p = sb.run(["sh", "-c", './abi 3; echo "i386=$?"; ./abi x; echo "x32=$?"; exec python3 -c "$1"', "sh",
                NR_PRELUDE + code])
    assert p.returncode == 0, p.err
    lines = p.out.splitlines()
    assert lines[:2] == ["i386=159", "x32=159"], p.out
    assert "survived" not in p.out
    r = result(p)
    assert r.pop("persona") == 0
    assert r == {k: "EPERM" for k in ("bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
                                      "personality ADDR_NO_RANDOMIZE", "personality READ_IMPLIES_EXEC")}


@needs_x86_64
def test_tiocsti_injection_refused(sandbox_factory):
    """CMD shares the caller's terminal (here a pty that is the controlling
    terminal of keyward's session). Pushing keystrokes into it with TIOCSTI
    answers EPERM, also with bits set above the low 32 of the request
    (CVE-2019-10063), and TIOCLINUX too; nothing reaches the terminal's
    input queue."""
    import fcntl
    import termios

    sb = sandbox_factory()
    master, slave = pty.openpty()
    tty.setraw(slave)
    code = r'''
import fcntl, termios
probe("open /dev/tty", lambda: os.close(os.open("/dev/tty", os.O_RDWR)))  # 0 is our controlling terminal
probe("TIOCSTI", lambda: fcntl.ioctl(0, termios.TIOCSTI, b"X"))
c = ctypes.c_char(b"Y")
probe("TIOCSTI high bits", lambda: sysc(NR["ioctl"], 0, (1 << 32) | termios.TIOCSTI, ctypes.byref(c)))
probe("TIOCSTI via /dev/tty", lambda: fcntl.ioctl(os.open("/dev/tty", os.O_RDWR), termios.TIOCSTI, b"Z"))
probe("TIOCLINUX", lambda: fcntl.ioctl(0, 0x541C, b"\x06"))
done()
'''

    def controlling_tty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = popen(sb, py(code), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     preexec_fn=controlling_tty)
        p = finish(sb, proc)
        assert p.returncode == 0, p.err
        r = result(p)
        assert r["open /dev/tty"] == "OK"
        for k in ("TIOCSTI", "TIOCSTI high bits", "TIOCSTI via /dev/tty", "TIOCLINUX"):
            assert r[k] == "EPERM", (k, r[k])
        os.set_blocking(slave, False)
        with pytest.raises(BlockingIOError):
            injected = os.read(slave, 100)
            raise AssertionError(f"keystrokes reached the terminal: {injected!r}")
    finally:
        os.close(master)
        os.close(slave)


# ---- files ----


def test_writes_outside_the_workspace_refused(sandbox_factory, tmp_path):
    """/usr, /etc, the root, /proc/sys and a policy read_only path are
    read-only (EROFS; started by root, the host's files are the sandbox
    user's, so nothing else would stop the write); the workspace, /tmp
    and $HOME are writable."""
    ro = tmp_path / "ro-tree"
    ro.mkdir()
    (ro / "f").write_text("host file\n")
    sb = sandbox_factory(f"version: 1\nsandbox:\n  read_only: [{ro}]\n")
    code = r'''
ro = sys.argv[1]
def create(path):
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
def write(path):
    os.close(os.open(path, os.O_WRONLY))
for path in ("/usr/kw-x", "/usr/bin/kw-x", "/etc/kw-x", "/kw-x", "/etc/keyward/kw-x", ro + "/kw-x"):
    probe("create " + path.replace(ro, "RO"), lambda: create(path))
for path in ("/etc/passwd", "/etc/hosts", "/etc/keyward/ca-bundle.pem", "/proc/sys/kernel/hostname",
             "/usr/bin/env", ro + "/f"):
    probe("write " + path.replace(ro, "RO"), lambda: write(path))
probe("mkdir /opt", lambda: os.mkdir("/opt"))
probe("rename /etc/hosts", lambda: os.rename("/etc/hosts", "/etc/hosts2"))
probe("unlink RO/f", lambda: os.unlink(ro + "/f"))
probe("chmod /usr/bin/env", lambda: os.chmod("/usr/bin/env", 0o777))
for path in ("ws-file", "/tmp/x", os.environ["HOME"] + "/x"):
    probe("ok " + path.split("/")[1] if "/" in path else "ok ws", lambda: create(path))
done(ro=open(ro + "/f").read())
'''
    p = sb.run(py(code) + [str(ro)])
    assert p.returncode == 0, p.err
    r = result(p)
    assert r.pop("ro") == "host file\n"
    assert r.pop("ok ws") == "OK" and r.pop("ok tmp") == "OK" and r.pop("ok home") == "OK"
    if os.geteuid() == 0:  # the host's files are the caller's: only the read-only mounts refuse
        assert r == {k: "EROFS" for k in r}, r
    else:  # an ordinary caller may meet the host's permissions first
        assert all(v in ("EROFS", "EACCES") for v in r.values()), r
    assert len(r) == 6 + 6 + 4
    assert (sb.workspace / "ws-file").exists()
    assert sorted(os.listdir(ro)) == ["f"]


def test_host_home_shadow_and_outside_symlinks_invisible(sandbox_factory, tmp_path):
    """The caller's ~/.ssh (HOME pointed at a fake host home), /etc/shadow,
    and workspace symlinks to /etc/shadow, to a host directory with a
    secret and to that home resolve inside the sandbox, where none of them
    exists. / holds only what docs/sandbox.md lists."""
    home = tmp_path / "hosthome"
    (home / ".ssh").mkdir(parents=True)
    key = f"-----BEGIN OPENSSH PRIVATE KEY----- fake {random.getrandbits(64):016x}"
    (home / ".ssh" / "id_ed25519").write_text(key + "\n")
    secret_dir = tmp_path / "hostsecret"
    secret_dir.mkdir()
    (secret_dir / "secret.txt").write_text(key + "\n")
    sb = sandbox_factory()
    (sb.workspace / "link").symlink_to("/etc/shadow")
    (sb.workspace / "link2").symlink_to(secret_dir)
    (sb.workspace / "link3").symlink_to(home / ".ssh")
    code = r'''
home, needle = sys.argv[1], sys.argv[2].encode()
def read(p):
    open(p, "rb").read()
probe("host key", lambda: read(home + "/.ssh/id_ed25519"))
probe("own ~/.ssh", lambda: os.listdir(os.path.expanduser("~/.ssh")))
probe("/etc/shadow", lambda: read("/etc/shadow"))
probe("/etc/gshadow", lambda: read("/etc/gshadow"))
probe("/etc/sudoers", lambda: read("/etc/sudoers"))
probe("/etc/ssh", lambda: os.listdir("/etc/ssh"))
probe("/etc/ssl/private", lambda: os.listdir("/etc/ssl/private"))
probe("/root", lambda: os.listdir("/root"))
probe("link", lambda: read("link"))
probe("link2", lambda: read("link2/secret.txt"))
probe("link3", lambda: read("link3/id_ed25519"))
hits = []
for top in ("/etc", "/tmp", "/home", "/dev/shm", "/run", "/var", os.getcwd()):
    for d, dirs, files in os.walk(top):
        for f in files:
            try:
                if needle in open(os.path.join(d, f), "rb").read(1 << 20):
                    hits.append(os.path.join(d, f))
            except OSError:
                pass
done(home=os.environ["HOME"], root=sorted(os.listdir("/")), hits=hits, homes=os.listdir("/home"))
'''
    p = sb.run(py(code) + [str(home), key.split()[-1]], env={"HOME": str(home)})
    assert p.returncode == 0, p.err
    r = result(p)
    for k in ("host key", "own ~/.ssh", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh",
              "/etc/ssl/private", "/root", "link", "link2", "link3"):
        assert r[k] == "ENOENT", (k, r[k])
    assert r["hits"] == []
    assert r["home"] == "/home/sandbox" and r["homes"] == ["sandbox"]
    top = str(sb.workspace).split("/")[1]
    allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "dev", "proc", "tmp", "home", "var",
               "run", top}
    assert set(r["root"]) <= allowed, r["root"]
    assert "root" not in r["root"] and "sys" not in r["root"]


def test_state_dir_and_audit_log_in_the_workspace_hidden(sandbox_factory):
    """keyward's state directory (KEYWARD_HOME) and the audit log, both
    inside the workspace: the sandbox sees an empty read-only directory and
    an unreadable, unwritable file (a nodev /dev/null) it cannot remove,
    replace or truncate, while the proxy records to the real log (a denied
    request made from inside is there afterwards, and the chain verifies)."""
    sb = sandbox_factory()
    state = sb.workspace / ".keyward"
    state.mkdir(mode=0o700)
    marker = f"vault-content-{random.getrandbits(48):012x}"
    (state / "vault.db").write_text(marker)
    audit = sb.workspace / "audit.jsonl"
    audit.touch(mode=0o600)
    sb.audit = audit  # check_clean verifies this log
    (sb.workspace / "ws-file").write_text("{}\n")
    code = r"""
import subprocess
subprocess.run(["curl", "-s", "-o", "/dev/null", "http://denied.example/"])
def create(p):
    os.close(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600))
probe("read vault", lambda: open(".keyward/vault.db").read())
probe("create in state", lambda: create(".keyward/planted"))
probe("remove state", lambda: os.rmdir(".keyward"))
probe("rename state", lambda: os.rename(".keyward", "state2"))
probe("read audit", lambda: open("audit.jsonl").read())
probe("append audit", lambda: os.open("audit.jsonl", os.O_WRONLY | os.O_APPEND))
probe("truncate audit", lambda: os.truncate("audit.jsonl", 0))
probe("remove audit", lambda: os.unlink("audit.jsonl"))
probe("replace audit", lambda: os.rename("ws-file", "audit.jsonl"))
probe("chmod audit", lambda: os.chmod("audit.jsonl", 0o666))
probe("link audit", lambda: os.link("audit.jsonl", "audit-link"))
done(state=os.listdir(".keyward"), audit_size=os.stat("audit.jsonl").st_size)
"""
    p = sb.run(py(code), args=["--audit", str(audit)], env={"KEYWARD_HOME": str(state)})
    assert p.returncode == 0, p.err
    r = result(p)
    assert r == {"read vault": "ENOENT", "create in state": "EROFS", "remove state": "EBUSY",
                 "rename state": "EBUSY", "read audit": "EACCES", "append audit": "EACCES",
                 "truncate audit": "EINVAL", "remove audit": "EBUSY", "replace audit": "EBUSY",
                 "chmod audit": "EROFS", "link audit": "EXDEV", "state": [], "audit_size": 0}, r
    # the sandbox changed nothing there; keyward noted where it could write
    assert (state / "vault.db").read_text() == marker
    assert sorted(os.listdir(state)) == ["sandbox-trail", "vault.db"]
    reqs = sb.requests()
    assert [(q["decision"], q.get("host")) for q in reqs] == [("deny", "denied.example")], reqs


def test_state_dir_named_relatively_hidden(sandbox_factory):
    """The state directory is hidden by its real path: named relatively
    (KEYWARD_HOME=.keyward, keyward started in the workspace), the vault
    stays covered in the sandbox."""
    sb = sandbox_factory()
    marker = f"vault-content-{random.getrandbits(48):012x}"
    rel = sb.workspace / ".keyward"
    rel.mkdir(mode=0o700)
    (rel / "vault.db").write_text(marker)
    code = r"""
probe("read", lambda: open(".keyward/vault.db").read())
done(listed=os.listdir(".keyward"))
"""
    e = dict(sb.env, KEYWARD_HOME=".keyward")
    p = subprocess.run(sb.argv(py(code)), capture_output=True, text=True, env=e, cwd=sb.workspace, timeout=60)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"read": "ENOENT", "listed": []}
    assert (rel / "vault.db").read_text() == marker


def test_state_dir_behind_the_sandboxs_own_link_runs(sandbox_factory):
    """A state directory under the host's /var/tmp: in the sandbox /var/tmp
    is a link of its own root to its private /tmp, so the host folder is
    not visible there and nothing needs covering; the run goes ahead (a
    link on the way that the sandbox's root did not make refuses it)."""
    import tempfile
    sb = sandbox_factory()
    home = tempfile.mkdtemp(prefix="kw-state-", dir="/var/tmp")
    try:
        p = sb.run(["sh", "-c", f"test ! -e {home} && echo not-there"], env={"KEYWARD_HOME": home})
        assert p.returncode == 0 and p.out.strip() == "not-there", p.err
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_secrets_behind_a_link_planted_in_the_workspace_refused(sandbox_factory):
    """A run can leave a link in its workspace (.cache replaced with a
    link to .cache2, or one credential's folder with a link to another's):
    a later run whose state directory or file: credential would be read
    through it refuses to start (exit 2) and names the link, instead of
    reading the file the earlier run chose."""
    sb = sandbox_factory()
    ws = sb.workspace
    (ws / ".cache2" / "keyward").mkdir(parents=True, mode=0o700)
    (ws / ".cache").symlink_to(ws / ".cache2")
    e = dict(sb.env, KEYWARD_HOME=str(ws / ".cache" / "keyward"))
    p = subprocess.run(sb.argv(["true"]), capture_output=True, text=True, env=e, cwd=sb.tmp, timeout=60)
    assert p.returncode == 2 and f"symbolic link {ws / '.cache'}," in p.stderr, p.stderr
    for d in ("a", "b"):
        (ws / "secrets" / d).mkdir(parents=True)
        (ws / "secrets" / d / "token").write_text(f"made-up-{d}-{random.getrandbits(32):08x}\n")
        (ws / "secrets" / d / "token").chmod(0o600)
    os.rename(ws / "secrets" / "a", ws / "secrets" / "a-moved")
    (ws / "secrets" / "a").symlink_to(ws / "secrets" / "b")
    sb.policy = sb.tmp / "policy.yaml"
    sb.policy.write_text(f"version: 1\ncredentials:\n  a:\n    from: file:{ws}/secrets/a/token\n")
    p = sb.run(["true"])
    assert p.returncode == 2 and f"symbolic link {ws / 'secrets' / 'a'}," in p.err, p.err


def test_device_nodes_work_but_cannot_be_changed(sandbox_factory):
    """/dev/null, zero, full, random and urandom are the host's nodes,
    bound read-only: they read and write as usual, but chmod, chown and
    utimes fail with EROFS (a root caller's sandbox owns them, and would
    otherwise change the host's /dev/null for everyone)."""
    before = {n: os.stat(f"/dev/{n}") for n in ("null", "full", "urandom")}
    sb = sandbox_factory()
    code = r"""
def write(p):
    with open(p, "wb", buffering=0) as f:
        f.write(b"x")
probe("write null", lambda: write("/dev/null"))
probe("write urandom", lambda: write("/dev/urandom"))
probe("write full", lambda: write("/dev/full"))
probe("read zero", lambda: open("/dev/zero", "rb").read(4) == bytes(4) or 1 / 0)
probe("chmod null", lambda: os.chmod("/dev/null", 0o600))
probe("chmod full", lambda: os.chmod("/dev/full", 0))
probe("chown urandom", lambda: os.chown("/dev/urandom", os.getuid(), os.getgid()))
probe("utime null", lambda: os.utime("/dev/null", (0, 0)))
done()
"""
    changed = []
    try:
        p = sb.run(py(code))
    finally:
        # were the defence missing, the host's nodes are put back first
        for n, st in before.items():
            now = os.stat(f"/dev/{n}")
            if (now.st_mode, now.st_uid, now.st_mtime_ns) != (st.st_mode, st.st_uid, st.st_mtime_ns):
                changed.append(n)
                if os.geteuid() == 0:
                    os.chmod(f"/dev/{n}", st.st_mode & 0o7777)
                    os.chown(f"/dev/{n}", st.st_uid, st.st_gid)
                    os.utime(f"/dev/{n}", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.returncode == 0, p.err
    r = result(p)
    assert r == {"write null": "OK", "write urandom": "OK", "write full": "ENOSPC", "read zero": "OK",
                 "chmod null": "EROFS", "chmod full": "EROFS", "chown urandom": "EROFS",
                 "utime null": "EROFS"}, r
    assert not changed, f"the host's nodes changed: {changed}"


def test_root_only_kernel_files_in_proc_covered(sandbox_factory):
    """When root starts keyward, the sandbox's user owns what root owns,
    /proc's root-only views of kernel memory among them: each is covered
    (a mount point in the sandbox's mount table) and cannot be opened.
    (For an ordinary caller they stay unreadable as they are.)"""
    if os.geteuid() != 0:
        pytest.skip("the sandbox's user is root's only when root starts keyward")
    names = [n for n in ("kpageflags", "kpagecount", "kpagecgroup", "slabinfo", "vmallocinfo", "pagetypeinfo")
             if os.path.exists(f"/proc/{n}")]
    if not names:
        pytest.skip("this kernel has none of them")
    sb = sandbox_factory()
    code = r"""
for n in sys.argv[1:]:
    probe(n, lambda: open("/proc/" + n, "rb").read(64))
done(mounts=[l.split()[4] for l in open("/proc/self/mountinfo")])
"""
    p = sb.run(py(code) + names)
    assert p.returncode == 0, p.err
    r = result(p)
    assert {n: r[n] for n in names} == {n: "EACCES" for n in names}, r
    assert {f"/proc/{n}" for n in names} <= set(r["mounts"]), r["mounts"]


@pytest.mark.parametrize("where", ["/proc", "/sys/kernel", "//dev/./shm"])
def test_kernel_file_systems_refused_as_workspace_or_sandbox_path(sandbox_factory, where):
    """The host's /proc, /sys and /dev, or anything in them, as the
    workspace or a `sandbox:` path: keyward refuses to start (exit 2) and
    says why; a read-write host /proc would let a root caller's sandbox
    write /proc/sys/kernel/core_pattern."""
    sb = sandbox_factory()
    p = subprocess.run([KEYWARD, "run", "--workspace", where, "--", "true"], capture_output=True, text=True,
                       env=sb.env, cwd=sb.tmp, timeout=60)
    fs = "/" + where.strip("/").split("/")[0]
    assert p.returncode == 2 and f"is in the host's {fs}" in p.stderr, p.stderr
    for key in ("read_only", "read_write"):
        policy = sb.tmp / f"{key}.yaml"
        policy.write_text(f"version: 1\nsandbox:\n  {key}: [{where}]\n")
        for argv in ([KEYWARD, "run", "--policy", str(policy), "--workspace", str(sb.workspace), "--", "true"],
                     [KEYWARD, "policy", "check", str(policy)]):
            p = subprocess.run(argv, capture_output=True, text=True, env=sb.env, cwd=sb.tmp, timeout=60)
            assert p.returncode == 2, (argv, p.stdout, p.stderr)
            assert f"{policy}:3:" in p.stderr + p.stdout and f"is in the host's {fs}" in p.stderr + p.stdout, \
                p.stdout + p.stderr


def test_audit_log_created_during_the_run_is_hidden(sandbox_factory):
    """The docs' example (audit: keyward-audit.jsonl next to a policy in the
    workspace) on its first run: the log does not exist yet when keyward
    starts. It must be as hidden as one that existed: not readable, not
    writable from inside."""
    sb = sandbox_factory()
    audit = sb.workspace / "keyward-audit.jsonl"
    sb.audit = audit
    code = r"""
import subprocess
subprocess.run(["curl", "-s", "-o", "/dev/null", "http://denied.example/"])
try:
    seen = open("keyward-audit.jsonl").read()
except OSError as e:
    seen = ename(e.errno)
def append():
    with open("keyward-audit.jsonl", "a") as f:
        f.write('{"forged": true}\n')
probe("append", append)
done(seen=seen)
"""
    p = sb.run(py(code), args=["--audit", str(audit)], check_clean=False)
    assert p.returncode == 0, p.err
    r = result(p)
    assert "denied.example" not in r["seen"], "the sandbox read its own audit log"
    assert r["seen"] in ("EACCES", "ENOENT", ""), r
    assert r["append"] in ("EACCES", "EROFS", "ENOENT", "EPERM"), "the sandbox wrote into its own audit log"
    sb.check_clean(p.out, p.err)  # the chain verifies


def test_no_ca_key_anywhere_in_the_sandbox(sandbox_factory, upstream):
    """keyward run's CA is ephemeral and its key stays in keyward's memory:
    nothing readable inside (nor in the state directory on the host) holds
    a private key, while the CA certificate is there and works (an HTTPS
    request through the proxy verifies)."""
    sb = sandbox_factory(policy_for(upstream))
    url = f"https://api.test:{upstream.port}/api/ca"
    code = r'''
import subprocess
status = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", sys.argv[1]],
                        capture_output=True, text=True).stdout
hits, files = [], 0
for top in ("/etc", "/tmp", "/home", "/dev/shm", "/var", "/run", os.getcwd()):
    for d, dirs, fs in os.walk(top):
        for f in fs:
            try:
                data = open(os.path.join(d, f), "rb").read(1 << 22)
            except OSError:
                continue
            files += 1
            if b"PRIVATE KEY" in data:
                hits.append(os.path.join(d, f))
env_hit = any("PRIVATE KEY" in v for v in os.environ.values())
done(status=status, hits=hits, files=files, env_hit=env_hit, ca=open("/etc/keyward/ca.pem").read())
'''
    p = sb.run(py(code) + [url])
    assert p.returncode == 0, p.err
    r = result(p)
    assert r["status"] == "200"
    assert r["hits"] == [] and r["env_hit"] is False
    assert r["files"] > 10  # the walk did read files
    assert r["ca"].startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE" not in r["ca"]
    # nor was it saved in the state directory on the host
    for d, _, fs in os.walk(sb.home):
        for f in fs:
            with open(os.path.join(d, f), "rb") as fh:
                assert b"PRIVATE KEY" not in fh.read(), os.path.join(d, f)


# ---- descriptors, lifetime, signals ----


def test_inherited_descriptors_do_not_pass(sandbox_factory, tmp_path):
    """A host file keyward inherits as descriptor 5 (and at its own number)
    is closed in the sandbox: only 0, 1 and 2 are open in CMD."""
    host_file = tmp_path / "host-secret.txt"
    host_file.write_text("host descriptor content\n")
    fd = os.open(host_file, os.O_RDONLY)
    sb = sandbox_factory()
    code = r'''
import fcntl
for n in sys.argv[1:]:
    probe(f"fd {n}", lambda: fcntl.fcntl(int(n), fcntl.F_GETFD))
probe("/dev/fd/5", lambda: open("/dev/fd/5").read())
done(open=sorted(int(x) for x in os.listdir("/proc/self/fd")))
'''
    try:
        proc = popen(sb, ["sh", "-c", 'ls /proc/self/fd | tr "\\n" " "; echo; exec python3 -c "$1" "$2" "$3"', "sh",
                          NR_PRELUDE + code, "5", str(fd)],
                     pass_fds=(fd,), preexec_fn=lambda: os.dup2(fd, 5),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p = finish(sb, proc)
    finally:
        os.close(fd)
    assert p.returncode == 0, p.err
    assert p.out.splitlines()[0].split() == ["0", "1", "2", "3"]  # 3: ls's own directory
    r = result(p)
    assert r["fd 5"] == "EBADF" and r[f"fd {fd}"] == "EBADF"
    assert r["/dev/fd/5"] == "ENOENT"
    assert r["open"] == [0, 1, 2, 3]  # 3: listdir's own
    assert "host descriptor content" not in p.out


def _cgroups_of(pid):
    """The cgroup directories of a host process (to remove the sandbox's
    after keyward was killed and could not)."""
    dirs = []
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                _, ctl, path = line.rstrip("\n").split(":", 2)
                if ctl == "":
                    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                        dirs.append(base + path)
                else:
                    dirs.append(f"/sys/fs/cgroup/{ctl.split(',')[0].replace('name=', '')}{path}")
    except OSError:
        pass
    return [d for d in dirs if os.path.basename(d) == f"keyward-{pid}"]


def test_sandbox_dies_with_keyward(sandbox_factory):
    """CMD daemonises a child (setsid, in the background) and keyward is
    killed with SIGKILL: within seconds no process of the sandbox is left
    on the host (PID 1 dies with keyward, and the kernel kills the rest of
    its PID namespace)."""
    sb = sandbox_factory()
    tag = random.getrandbits(40)
    marks = [f"299.{tag}1", f"299.{tag}2"]  # valid intervals, unique to this run
    proc = popen(sb, ["sh", "-c", f"setsid sleep {marks[0]} </dev/null >/dev/null 2>&1 & echo started; "
                                  f"exec sleep {marks[1]}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    def sleeps():
        return [pid for m in marks for pid in host_pids_running("sleep", m)]

    cgroups = []
    try:
        assert proc.stdout.readline().strip() == b"started"
        deadline = time.time() + 5
        while time.time() < deadline and len(sleeps()) < 2:
            time.sleep(0.02)
        assert len(sleeps()) == 2, "the sandbox's two sleeps should be running"
        kids = [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid(int(d)) == proc.pid]
        assert len(kids) == 1, kids  # the sandbox's PID 1
        cgroups = _cgroups_of(kids[0])
        proc.kill()
        proc.wait()
        deadline = time.time() + 5
        while sleeps() and time.time() < deadline:
            time.sleep(0.05)
        assert sleeps() == [], "sandbox processes outlived keyward"
    finally:
        for pid in sleeps():
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        for d in cgroups:  # keyward, killed, could not remove them
            try:
                os.rmdir(d)
            except OSError:
                pass


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def test_sigterm_to_keyward_reaches_cmd(sandbox_factory):
    """SIGTERM sent to keyward is passed to CMD: its trap runs (writes a
    file in the workspace) and its exit code is the run's; without a trap,
    CMD dies of it and the status is 128+15. (CMD first makes a request, so
    that the proxy is known to be serving; see the next test for a signal
    sent earlier.)"""
    sb = sandbox_factory()
    served = 'curl -s -o /dev/null -w "%{http_code}" http://denied.example/; echo " ready"; '
    proc = popen(sb, ["sh", "-c", "trap 'echo term > trapped; exit 42' TERM; " + served +
                      "while :; do sleep 0.05; done"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"403 ready"
    proc.send_signal(signal.SIGTERM)
    p = finish(sb, proc, timeout=10)
    assert p.returncode == 42, p.err
    assert (sb.workspace / "trapped").read_text() == "term\n"

    proc = popen(sb, ["sh", "-c", served + "exec sleep 30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"403 ready"
    proc.send_signal(signal.SIGTERM)
    p = finish(sb, proc, timeout=10)
    assert p.returncode == 128 + signal.SIGTERM, p.err


def test_sigterm_while_the_proxy_starts_reaches_cmd(sandbox_factory, tmp_path):
    """The same SIGTERM, sent while CMD runs and the proxy is still starting.
    The proxy is held at a known point: it runs the exec: source of a
    credential while it builds its first generation (after CMD started),
    and that command waits until the test creates a file, which it does only
    after the signal was sent. The signal must wait for the proxy and then
    reach CMD, as it does once the proxy serves."""
    import select
    import threading

    trigger = tmp_path / "go"
    sb = sandbox_factory("version: 1\ncredentials:\n  held:\n"
                         f"    from: \"exec:while [ ! -e {trigger} ]; do sleep 0.01; done; "
                         "printf kwtest-held-value-0123456789\"\n")
    signalled = threading.Event()
    stop = threading.Event()

    def feed_ca():
        # after the signal (or after a while, so that the run goes on)
        signalled.wait(3)
        if not stop.is_set():
            trigger.write_text("go\n")

    feeder = threading.Thread(target=feed_ca, daemon=True)
    feeder.start()
    proc = popen(sb, ["sh", "-c", "trap 'echo term > trapped; exit 42' TERM; echo ready; "
                                  "while :; do sleep 0.05; done"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    cgroups = []
    try:
        assert select.select([proc.stdout], [], [], 15)[0], "CMD did not start"
        assert proc.stdout.readline().strip() == b"ready"
        cgroups = [d for k in os.listdir("/proc") if k.isdigit() and _ppid(int(k)) == proc.pid
                   for d in _cgroups_of(int(k))]
        proc.send_signal(signal.SIGTERM)
        signalled.set()
        p = finish(sb, proc, timeout=15)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        feeder.join(5)
        for d in cgroups:  # left behind when keyward is killed
            try:
                os.rmdir(d)
            except OSError:
                pass
    assert p.returncode == 42, (p.returncode, p.err)
    assert (sb.workspace / "trapped").read_text() == "term\n"


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGHUP])
def test_exit_status_is_128_plus_signal(sandbox_factory, sig):
    sb = sandbox_factory()
    p = sb.run(["python3", "-c", f"import os; os.kill(os.getpid(), {int(sig)})"])
    assert p.returncode == 128 + sig, p.err


# ---- resources ----


FORK_LOOP = r'''
kids, err = [], None
for i in range(500):
    try:
        pid = os.fork()
    except OSError as e:
        err = ename(e.errno)
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, signal.SIGKILL)
for k in kids:
    os.waitpid(k, 0)
done(forked=len(kids), err=err)
sys.exit(3)
'''


def test_fork_bomb_capped_by_pids_limit(sandbox_factory):
    """sandbox.limits.pids: 64. A fork loop gets EAGAIN before 64 processes
    (PID 1 and the loop itself count), and the run ends with CMD's status.
    As root this is the only thing that stops it: the kernel exempts root
    from RLIMIT_NPROC."""
    sb = sandbox_factory("version: 1\nsandbox:\n  limits:\n    pids: 64\n")
    p = sb.run(py(FORK_LOOP))
    skip_if_limits_unavailable(p)
    assert p.returncode == 3, p.err
    r = result(p)
    assert r["err"] == "EAGAIN"
    assert 50 <= r["forked"] <= 62, r  # 64 minus PID 1 and the loop


def test_sandbox_is_cloned_into_its_cgroup_v2(sandbox_factory):
    """Where the sandbox's limits go through cgroup v2 (a hierarchy with the
    pids controller that keyward may write to), PID 1 is cloned into its
    cgroup (clone3's CLONE_INTO_CGROUP) rather than moved into it, which
    waits for an RCU grace period: the sandbox's cgroup namespace then has
    that cgroup as its root, and the cgroup is gone when the run has ended,
    and when a run stopped before CMD. Skips where keyward uses cgroup v1
    or none (the move is what happens there)."""
    sb = sandbox_factory()
    p = sb.run(["cat", "/proc/self/cgroup"], args=["-v"])
    assert p.returncode == 0, p.err
    limits = [l for l in p.err.splitlines() if "limits: " in l]
    assert len(limits) == 1, p.err
    if "through cgroup v2 " not in limits[0]:
        pytest.skip(f"keyward uses no cgroup v2 here: {limits[0]}")
    assert limits[0].endswith("(PID 1 was cloned into it)"), limits[0]
    born = limits[0].split("through cgroup v2 ", 1)[1].split(" ")[0]
    assert "0::/" in p.out.splitlines(), p.out
    assert not os.path.exists(born)
    # a run that stops before CMD removes it too: keyward-<its pid>-*
    base = os.path.dirname(born)
    proc = subprocess.Popen(sb.argv(["true"], ["--help"]), env=sb.env, stdout=subprocess.DEVNULL)
    assert proc.wait(timeout=20) == 0
    assert not [d for d in os.listdir(base) if d.startswith(f"keyward-{proc.pid}-")]


def test_sandbox_moves_itself_into_its_cgroup_v1(sandbox_factory):
    """Where the sandbox's limits go through cgroup v1, PID 1 moves itself
    into each hierarchy's new cgroup by writing "0" to its `tasks` file
    (which keyward opened) before CMD starts: CMD is in them, with every
    limit the policy sets, and they are gone after the run. Moving a
    process by its PID would wait for an RCU grace period. Skips where
    keyward uses cgroup v2 or none."""
    sb = sandbox_factory("version: 1\nsandbox:\n  limits:\n    pids: 50\n    memory: 300MiB\n    cpu: 150%\n")
    p = sb.run(["cat", "/proc/self/cgroup"], args=["-v"])
    skip_if_limits_unavailable(p)
    assert p.returncode == 0, p.err
    limits = [l for l in p.err.splitlines() if "limits: " in l]
    assert len(limits) == 1, p.err
    if "through cgroup v1 " not in limits[0]:
        pytest.skip(f"keyward uses no cgroup v1 here: {limits[0]}")
    made = dict(re.findall(r"cgroup v1 /sys/fs/cgroup/(\w+)(/\S*?)(?:,|$)", limits[0]))
    assert set(made) == {"pids", "memory", "cpu"}, limits[0]
    seen = {}
    for line in p.out.splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            seen[c] = path
    for controller, path in made.items():
        # the sandbox's cgroup namespace is rooted where keyward was
        assert seen[controller].endswith("/" + os.path.basename(path)), (controller, p.out)
        assert not os.path.exists(f"/sys/fs/cgroup/{controller}{path}")
    assert "pids 50, memory 314572800, cpu quota 150000" in limits[0], limits[0]


def _cgroup2_mount():
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt, fstype = line.split()[1:3]
            if fstype == "cgroup2" and mnt in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                return mnt
    return None


def test_limits_in_a_cgroup_delegated_to_an_ordinary_user():
    """An ordinary user who starts keyward alone in a cgroup v2 delegated to
    them (what `systemd-run --user --scope -p Delegate=yes` makes: the
    directory and its cgroup.procs, cgroup.subtree_control and
    cgroup.threads are theirs) gets the policy's pids limit: keyward moves
    PID 1 into the sandbox's new cgroup and itself into a leaf of its own,
    enables pids for the children, and a fork loop stops at the limit. The
    sandbox's cgroup is removed after the run; keyward's leaf is left for a
    later run to remove (keyward is in it until it exits). Needs root to
    make the delegated cgroup, and a cgroup v2 whose root enables pids for
    its children."""
    if os.geteuid() != 0:
        pytest.skip("needs root to delegate a cgroup to an ordinary user")
    mnt = _cgroup2_mount()
    if not mnt:
        pytest.skip("no cgroup v2 hierarchy")
    with open(os.path.join(mnt, "cgroup.subtree_control")) as f:
        if "pids" not in f.read().split():
            pytest.skip(f"the cgroup v2 root ({mnt}) does not enable pids for its children")
    from conftest import run_as_nobody
    d = os.path.join(mnt, f"kw-test-delegated-{os.getpid()}-{random.randrange(1 << 30):x}")
    os.mkdir(d)
    try:
        for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
            os.chown(os.path.join(d, name) if name else d, 65534, 65534)
        code = FORK_LOOP.replace("for i in range(500)", "for i in range(200)")
        p = run_as_nobody(py(code), "version: 1\nsandbox:\n  limits:\n    pids: 64\n", args=["-v"], cgroup=d)
        limits = [l for l in p.stderr.splitlines() if "limits: " in l]
        assert limits and limits[0].endswith("(delegated to keyward)"), p.stderr
        assert p.returncode == 3, p.stderr
        r = json.loads(p.stdout.strip().splitlines()[-1])
        assert r["err"] == "EAGAIN"
        assert 50 <= r["forked"] <= 62, r
        left = [n for n in os.listdir(d) if n.startswith("keyward-")]
        assert left and all(n.endswith("-self") for n in left), left
    finally:
        for name in os.listdir(d):
            if os.path.isdir(os.path.join(d, name)):
                os.rmdir(os.path.join(d, name))
        os.rmdir(d)


NPROC_LOOP = r"""
kids, err = [], None
for i in range(200):
    try:
        pid = os.fork()
    except OSError as e:
        err = ename(e.errno)
        break
    if pid == 0:
        signal.pause()
        os._exit(0)
    kids.append(pid)
for k in kids:
    os.kill(k, signal.SIGKILL)
done(forked=len(kids), err=err)
"""


def test_fork_bomb_capped_by_rlimit_nproc_for_an_ordinary_user(sandbox_factory):
    """sandbox.limits.processes: 16 (RLIMIT_NPROC) stops a fork loop with
    EAGAIN when keyward runs as an ordinary user (the caller itself, or,
    when the tests run as root, nobody through setpriv: the kernel exempts
    root from RLIMIT_NPROC)."""
    policy = "version: 1\nsandbox:\n  limits:\n    processes: 16\n"
    if os.geteuid() != 0:
        p = sandbox_factory(policy).run(py(NPROC_LOOP))
        out, err = p.out, p.err
    else:
        from conftest import run_as_nobody
        p = run_as_nobody(py(NPROC_LOOP), policy)
        out, err = p.stdout, p.stderr
    assert p.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["err"] == "EAGAIN"
    assert r["forked"] < 16, r


def test_memory_hog_is_killed(sandbox_factory):
    """sandbox.limits.memory: 64MiB; touching 200 MB gets CMD killed by the
    OOM killer inside its cgroup (status 137), or a MemoryError."""
    sb = sandbox_factory("version: 1\nsandbox:\n  limits:\n    memory: 64MiB\n")
    p = sb.run(["python3", "-c", "x = b'\\1' * (200 << 20); print('allocated', len(x))"])
    skip_if_limits_unavailable(p)
    assert "allocated" not in p.out
    assert p.returncode == 137 or (p.returncode == 1 and "MemoryError" in p.err), (p.returncode, p.err)


def test_disk_fill_gets_enospc_and_efbig(sandbox_factory):
    """sandbox.limits.tmp_size: 4MiB caps /tmp and $HOME (ENOSPC at 4 MiB,
    not the 512 MiB default); file_size: 1MiB caps any file, the
    workspace's too (EFBIG)."""
    sb = sandbox_factory("version: 1\nsandbox:\n  limits:\n    tmp_size: 4MiB\n    file_size: 1MiB\n")
    code = r'''
def fill(path, total):
    written = 0
    try:
        with open(path, "wb", buffering=0) as f:
            while written < total:
                written += f.write(b"x" * 65536)
    except OSError as e:
        return ename(e.errno), written
    return "OK", written
res = {}
for d in ("/tmp", os.environ["HOME"]):
    names = []
    for i in range(8):   # 1 MiB files, under file_size, until the tmpfs is full
        r = fill(f"{d}/fill{i}", (1 << 20) - 65536)
        names.append(r[0])
        if r[0] != "OK":
            break
    res[d] = names
res["ws"] = fill("big", 8 << 20)
done(**res)
'''
    p = sb.run(py(code))
    assert p.returncode == 0, p.err
    r = result(p)
    for d in ("/tmp", "/home/sandbox"):
        assert r[d][-1] == "ENOSPC" and 3 <= len(r[d]) <= 5, (d, r[d])
    assert r["ws"] == ["EFBIG", 1 << 20]
    assert (sb.workspace / "big").stat().st_size == 1 << 20


# ---- the secret ----


def test_secret_is_nowhere_in_the_sandbox(sandbox_factory, upstream):
    """While an allowed request through the proxy carries the real secret
    (the upstream got Bearer SECRET), nothing in the sandbox holds it: no
    file under /etc, /tmp, /home, /dev/shm, /run or the workspace, no
    environment or command line of any process in /proc, nothing readable
    under /proc/1 or /proc/self. The script carries the secret only
    hex-encoded, so that its own argv does not count."""
    sb = sandbox_factory(policy_for(upstream))
    url = f"https://api.test:{upstream.port}/api/secret"
    code = r'''
import subprocess
needles = [bytes.fromhex(h) for h in sys.argv[2:]]
curl = 'curl -sS -o /dev/null -w "%{http_code}" -H "Authorization: Bearer $TEST_TOKEN" "$0"; sleep 5'
bg = subprocess.Popen(["sh", "-c", curl, sys.argv[1]], stdout=subprocess.PIPE)
status = bg.stdout.read(3).decode()
hits, files = [], 0
def check(path, data):
    for n in needles:
        if n in data:
            hits.append(path)
for top in ("/etc", "/tmp", "/home", "/dev/shm", "/run", "/var", os.getcwd()):
    for d, dirs, fs in os.walk(top):
        for f in fs:
            try:
                data = open(os.path.join(d, f), "rb").read(1 << 22)
            except OSError:
                continue
            files += 1
            check(os.path.join(d, f), data)
skip = {"mem", "pagemap", "clear_refs", "kpageflags", "kpagecount", "kpagecgroup"}
pids = [d for d in os.listdir("/proc") if d.isdigit()]
for d in pids + ["self"]:
    for f in os.listdir(f"/proc/{d}"):
        if f in skip:
            continue
        try:
            data = open(f"/proc/{d}/{f}", "rb").read(1 << 20)
        except OSError:
            continue
        files += 1
        check(f"/proc/{d}/{f}", data)
envs = {}
for d in pids:
    try:
        envs[d] = open(f"/proc/{d}/environ", "rb").read().count(b"TEST_TOKEN=")
    except OSError:
        envs[d] = None
bg.kill()
done(status=status, hits=hits, files=files, envs=envs)
'''
    p = sb.run(py(code) + [url, SECRET.encode().hex(), SECRET2.encode().hex()])
    assert p.returncode == 0, p.err
    r = result(p)
    assert r["status"] == "200"
    assert upstream.requests[-1].target == "/api/secret"
    assert upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"
    assert r["hits"] == [], r["hits"]
    assert r["files"] > 100
    # the scan did see the other processes' environments (placeholder, not secret), PID 1's was refused
    assert r["envs"]["1"] is None
    assert sum(1 for v in r["envs"].values() if v) >= 2, r["envs"]


def test_credential_command_never_runs_what_the_sandbox_left_on_path(sandbox_factory, upstream, tmp_path):
    # keyward's PATH often holds a folder of the workspace (an activated
    # virtualenv, a project's bin/). A credential command (exec:) runs
    # outside the sandbox with keyward's rights, at every start and again
    # while the sandbox runs: looked up there, it was whatever an earlier
    # run (or this one) had put in that folder. PYTHONPATH, NODE_OPTIONS,
    # AWS_CONFIG_FILE and the like open the same door. Commands now run
    # without the PATH entries and the variables that name a place the
    # sandbox writes.
    tools = tmp_path / "tools"
    tools.mkdir()
    real = tools / "kwcred"
    real.write_text(f"#!/bin/sh\nenv > {tools}/env\nprintf '%s\\n' '{SECRET}'\n")
    real.chmod(0o755)
    planted_ran = tmp_path / "planted-ran"
    text = policy_for(upstream).replace("from: env:TEST_TOKEN\n", 'from: "exec:kwcred"\n')
    assert "exec:kwcred" in text
    sb = sandbox_factory(text)
    venv = sb.workspace / ".venv" / "bin"
    venv.mkdir(parents=True)
    planted = venv / "kwcred"
    planted.write_text(f"#!/bin/sh\ntouch {planted_ran}\nprintf 'planted-value\\n'\n")
    planted.chmod(0o755)
    # spelt another way, and not made yet: the sandbox could make it
    later = f"{sb.workspace.parent}/./{sb.workspace.name}/later/bin"
    path = f"{venv}:{later}:{tools}:/usr/local/bin:/usr/bin:/bin"
    # a variable that names the workspace through a link outside it, as one
    # option among others
    link = tmp_path / "ws-link"
    link.symlink_to(sb.workspace)
    r = sb.run(["true"], env={"PATH": path, "PYTHONPATH": f"{sb.workspace}/lib",
                              "AWS_CONFIG_FILE": f"{sb.workspace}/.aws/config", "KW_UNRELATED": "kept",
                              "NODE_OPTIONS": f"--max-old-space-size=512 --require={link}/hook.js",
                              "PERL5OPT": f"-w -I{link}/lib", "PWD": str(sb.workspace)})
    assert r.returncode == 0, r.err
    assert not planted_ran.exists(), "a program the sandbox could write ran outside it"
    assert (tools / "env").exists(), r.err
    env = dict(l.split("=", 1) for l in (tools / "env").read_text().splitlines() if "=" in l)
    assert str(sb.workspace) not in env.get("PATH", "") and str(tools) in env["PATH"]
    assert "later" not in env["PATH"], env["PATH"]
    assert "PYTHONPATH" not in env and "AWS_CONFIG_FILE" not in env and "NODE_OPTIONS" not in env
    assert "PERL5OPT" not in env
    assert env.get("KW_UNRELATED") == "kept"
    warning = [l for l in r.err.splitlines() if "credential commands run without" in l]
    assert len(warning) == 1 and "PYTHONPATH" in warning[0] and "AWS_CONFIG_FILE" in warning[0], r.err
    assert "PWD" not in warning[0]  # the folder keyward started in: dropped without a word
    assert str(sb.workspace) not in env.get("PWD", "")  # the shell sets its own: "/"


def test_policy_in_the_workspace_cannot_be_changed_for_the_next_run(sandbox_factory, upstream):
    # keyward run reads ./keyward.yaml, usually in the workspace, once per
    # run; the next run reads it again. Rewritten by CMD, it would give the
    # next run routes and exec: commands (run on the host) of CMD's
    # choosing. It is covered while CMD runs: not writable, not renamed,
    # not removed; and a policy with a second name (a hard link CMD could
    # write through) is refused.
    sb = sandbox_factory()
    pol = sb.workspace / "keyward.yaml"
    text = policy_for(upstream)
    pol.write_text(text)
    sb.policy = pol
    script = ("echo 'sandbox: {read_write: [/]}' >> keyward.yaml; echo w=$?; mv keyward.yaml k2; echo mv=$?; "
              "rm -f keyward.yaml; echo rm=$?; ln keyward.yaml k3; echo ln=$?")
    r = sb.run(["/bin/sh", "-c", script])
    assert r.returncode == 0, r.err
    assert pol.read_text() == text, r.out
    assert not (sb.workspace / "k2").exists() and not (sb.workspace / "k3").exists(), r.out
    assert "w=0" not in r.out and "mv=0" not in r.out and "rm=0" not in r.out and "ln=0" not in r.out, r.out
    time.sleep(0.05)  # a change within a clock tick of a run's end is taken as the sandbox's
    os.link(pol, sb.workspace / "other-name")
    r = sb.run(["true"], check_clean=False)
    assert r.returncode == 2 and "hard links" in r.err, r.err


def _run_in_workspace(sb, cmd, args=()):
    """keyward run started in the workspace, as people start it: without
    --policy it reads ./keyward.yaml there if there is one."""
    p = subprocess.run(sb.argv(cmd, args), capture_output=True, timeout=60, env=sb.env, cwd=sb.workspace)
    p.out = p.stdout.decode(errors="replace")
    p.err = p.stderr.decode(errors="replace")
    sb.check_clean(p.out, p.err)
    return p


def _planted_policy(ran):
    # what CMD would leave for the next run: a credential command that runs
    # on the host as soon as that run starts
    return ("version: 1\ncredentials:\n  planted:\n    from: \"exec:touch " + str(ran) + "\"\n"
            "routes:\n  - {host: api.test, credential: planted, inject: bearer}\n")


def _refused(r, ran):
    # a later run refuses the policy CMD may have written, before anything
    # of it runs, and says how to take it once reviewed
    assert r.returncode == 2, r.out + r.err
    assert "CMD may have written it" in r.err and "keyward policy trust" in r.err, r.err
    assert not ran.exists()


def test_policy_created_by_cmd_is_not_taken_by_the_next_run(sandbox_factory, tmp_path):
    # A run without a policy has no ./keyward.yaml to cover, so CMD can
    # create one; the next `keyward run` started there would read it as its
    # policy and run its exec: commands on the host. keyward notes where and
    # when each sandbox could write, and a later run refuses a policy file
    # that changed there then.
    sb = sandbox_factory()
    ran = tmp_path / "ran"
    planted = _planted_policy(ran)
    r = _run_in_workspace(sb, ["/bin/sh", "-c", f"printf '%s' '{planted}' > keyward.yaml; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    _refused(_run_in_workspace(sb, ["true"]), ran)
    # the same from a subfolder of the workspace, with or without --policy
    (sb.workspace / "keyward.yaml").unlink()
    sub = sb.workspace / "sub"
    r = _run_in_workspace(sb, ["/bin/sh", "-c", f"mkdir sub && printf '%s' '{planted}' > sub/keyward.yaml"])
    assert r.returncode == 0, r.err
    p = subprocess.run(sb.argv(["true"]), capture_output=True, text=True, timeout=60, env=sb.env, cwd=sub)
    p.out, p.err = p.stdout, p.stderr
    _refused(p, ran)
    sb.policy = sub / "keyward.yaml"
    _refused(sb.run(["true"], check_clean=False), ran)


def test_policy_a_sandbox_wrote_is_not_taken_by_keyward_proxy(sandbox_factory, tmp_path):
    # keyward proxy reads the same trail: a policy CMD wrote is refused at
    # the start, exit 2, before any of it (its exec: commands) runs.
    sb = sandbox_factory()
    ran = tmp_path / "ran"
    r = _run_in_workspace(sb, ["/bin/sh", "-c", f"printf '%s' '{_planted_policy(ran)}' > p.yaml; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    p = subprocess.run([KEYWARD, "proxy", "--policy", str(sb.workspace / "p.yaml"), "--listen", "127.0.0.1:0",
                        "--audit", str(tmp_path / "proxy-audit.jsonl")],
                       capture_output=True, text=True, env=sb.env, timeout=30)
    assert p.returncode == 2 and "CMD may have written it" in p.stderr, p.stderr
    assert not ran.exists()


def test_policy_a_sandbox_rewrote_is_not_taken_by_a_proxys_reload(sandbox_factory, proxy_factory, tmp_path):
    # A keyward proxy whose policy file lies in a folder that a keyward run
    # then takes for its workspace: CMD rewrites it, and the proxy's next
    # SIGHUP reload refuses it and keeps the running policy, until the
    # user trusts the file.
    sandbox_factory()  # only for its checks: skips where there is no sandbox
    p = proxy_factory("version: 1\n")
    ran = tmp_path / "ran"
    planted = _planted_policy(ran)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KEYWARD_HOME": str(p.home)}
    r = subprocess.run([KEYWARD, "run", "--workspace", str(p.tmp), "--", "/bin/sh", "-c",
                        f"printf '%s' '{planted}' > policy.yaml; echo w=$?"],
                       capture_output=True, text=True, env=env, cwd=p.tmp, timeout=60)
    assert r.returncode == 0 and "w=0" in r.stdout, r.stdout + r.stderr
    p.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "reload failed" not in p.stderr and time.time() < deadline:
        time.sleep(0.05)
    assert "reload failed, keeping the running policy" in p.stderr and "CMD may have written it" in p.stderr
    assert not ran.exists()
    # the user puts a reviewed policy in its place, and trusts it
    time.sleep(0.05)
    p.policy.write_text("version: 1\n# reviewed\n")
    t = subprocess.run([KEYWARD, "policy", "trust", str(p.policy)], capture_output=True, text=True, env=env)
    assert t.returncode == 0, t.stderr
    p.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while "policy reloaded" not in p.stderr and time.time() < deadline:
        time.sleep(0.05)
    assert "policy reloaded" in p.stderr, p.stderr


def test_policy_next_to_the_one_a_run_used_is_not_taken(sandbox_factory, tmp_path):
    # The run reads its policy from outside the workspace (--policy); CMD
    # plants ./keyward.yaml, which a later run started in the workspace
    # without --policy would read.
    sb = sandbox_factory("version: 1\n")
    ran = tmp_path / "ran"
    r = sb.run(["/bin/sh", "-c", f"printf '%s' '{_planted_policy(ran)}' > keyward.yaml; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    sb.policy = None
    _refused(_run_in_workspace(sb, ["true"]), ran)


def test_policy_in_a_folder_cmd_renames_is_not_taken_by_the_next_run(sandbox_factory, tmp_path):
    # The policy itself is covered while CMD runs, but not its folder when
    # that lies in the workspace: CMD renames the folder and puts its own
    # policy where the next run (the same command line) would read it.
    sb = sandbox_factory()
    ran = tmp_path / "ran"
    conf = sb.workspace / "conf"
    conf.mkdir()
    (conf / "policy.yaml").write_text("version: 1\n")
    sb.policy = conf / "policy.yaml"
    planted = _planted_policy(ran)
    r = sb.run(["/bin/sh", "-c", f"mv conf conf.old && mkdir conf && printf '%s' '{planted}' > conf/policy.yaml; "
                "echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    _refused(sb.run(["true"], check_clean=False), ran)
    # nor when the folder put in its place is one that existed before: the
    # file in it is older than the run, but the folder was renamed while
    # the sandbox ran. (The user first puts a policy of theirs back into
    # the folder CMD made, and trusts it.)
    (sb.workspace / "other").mkdir()
    (sb.workspace / "other" / "policy.yaml").write_text(planted)
    (conf / "policy.yaml").write_text("version: 1\n")
    t = subprocess.run([KEYWARD, "policy", "trust", str(conf / "policy.yaml")], env=sb.env, capture_output=True,
                       text=True)
    assert t.returncode == 0, t.stderr
    r = sb.run(["/bin/sh", "-c", "mv conf conf.2 && mv other conf; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    _refused(sb.run(["true"], check_clean=False), ran)


@pytest.mark.parametrize("outside", [False, True])
def test_policy_through_a_link_cmd_repoints_is_not_taken_by_the_next_run(sandbox_factory, tmp_path, outside):
    # The policy is named through a link in the workspace (cfg -> real, a
    # folder in the workspace or one the sandbox cannot write): the next
    # run opens the same name, through whatever the link names then. CMD
    # cannot change the policy, but it can point the link at a folder of
    # its own holding its policy, or at a folder elsewhere that holds
    # another policy it prefers.
    sb = sandbox_factory()
    ran = tmp_path / "ran"
    real = (tmp_path / "outside" if outside else sb.workspace) / "real"
    real.parent.mkdir(exist_ok=True)
    real.mkdir()
    (real / "policy.yaml").write_text("version: 1\n")
    (sb.workspace / "cfg").symlink_to(real)
    sb.policy = sb.workspace / "cfg" / "policy.yaml"
    planted = _planted_policy(ran)
    r = sb.run(["/bin/sh", "-c", f"mkdir evil && printf '%s' '{planted}' > evil/policy.yaml && rm cfg && "
                "ln -s evil cfg; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    assert (real / "policy.yaml").read_text() == "version: 1\n"
    _refused(sb.run(["true"], check_clean=False), ran)
    # the user points the link back; CMD points it at a folder elsewhere
    # that holds someone else's policy, older than the run
    other = tmp_path / "other"
    other.mkdir()
    (other / "policy.yaml").write_text(planted)
    (sb.workspace / "cfg").unlink()
    (sb.workspace / "cfg").symlink_to(real)
    r = sb.run(["/bin/sh", "-c", f"rm cfg && ln -s {other} cfg; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    _refused(sb.run(["true"], check_clean=False), ran)
    assert [p.name for p in other.iterdir()] == ["policy.yaml"]  # nothing of it renamed or touched


def test_policy_named_by_a_link_whose_folder_cmd_renames_is_not_taken(sandbox_factory, tmp_path):
    # ./keyward.yaml is a link into a folder of the workspace: the link
    # stays as it was, but CMD renames the folder it points into and makes
    # another with its policy under the same name.
    sb = sandbox_factory()
    ran = tmp_path / "ran"
    (sb.workspace / "conf").mkdir()
    (sb.workspace / "conf" / "real.yaml").write_text("version: 1\n")
    (sb.workspace / "keyward.yaml").symlink_to("conf/real.yaml")
    planted = _planted_policy(ran)
    r = _run_in_workspace(sb, ["/bin/sh", "-c", f"mv conf conf.old && mkdir conf && "
                                                f"printf '%s' '{planted}' > conf/real.yaml; echo w=$?"])
    assert r.returncode == 0 and "w=0" in r.out, r.out + r.err
    _refused(_run_in_workspace(sb, ["true"]), ran)


def test_policy_written_by_a_sandbox_whose_keyward_was_killed_is_not_taken(sandbox_factory, tmp_path):
    # keyward is SIGKILLed while CMD runs: it cannot note that the sandbox
    # stopped writing, and the next run takes that sandbox to have written
    # until it found keyward gone.
    sb = sandbox_factory()
    ran = tmp_path / "ran"
    planted = _planted_policy(ran)
    p = subprocess.Popen(sb.argv(["/bin/sh", "-c", f"printf '%s' '{planted}' > keyward.yaml; sleep 30"]),
                         cwd=sb.workspace, env=sb.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        while not (sb.workspace / "keyward.yaml").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (sb.workspace / "keyward.yaml").exists()
    finally:
        p.kill()
        p.communicate(timeout=30)
    _refused(_run_in_workspace(sb, ["true"]), ran)


def test_policy_the_user_changes_between_runs_is_taken(sandbox_factory, tmp_path):
    # What keyward refuses is a change made while a sandbox that could
    # write there ran: the user's own edits between runs pass, and a file
    # a run refused passes once the user has reviewed and trusted it.
    sb = sandbox_factory()
    pol = sb.workspace / "keyward.yaml"
    pol.write_text("version: 1\n")
    for i in range(2):
        r = _run_in_workspace(sb, ["/bin/sh", "-c", "echo made > file; echo ok"])
        assert r.returncode == 0 and "ok" in r.out, r.err
        time.sleep(0.05)
        pol.write_text(f"version: 1\n# edit {i}\n")  # between runs
    r = _run_in_workspace(sb, ["/bin/sh", "-c", "printf 'version: 1\\n# by CMD\\n' > new.yaml; echo ok"])
    assert r.returncode == 0 and "ok" in r.out, r.err
    time.sleep(0.05)  # file times come from a clock that may lag a tick behind the run's end
    os.replace(sb.workspace / "new.yaml", pol)  # e.g. the user moves it in place: its ctime moves
    r = _run_in_workspace(sb, ["true"])
    assert r.returncode == 0, r.err  # renamed by the user after the run: the user's now
    # a policy CMD made where there was none is refused until trusted
    pol.unlink()
    r = _run_in_workspace(sb, ["/bin/sh", "-c", "printf 'version: 1\\n# by CMD\\n' > keyward.yaml; echo $?"])
    assert r.returncode == 0, r.err
    r = _run_in_workspace(sb, ["true"])
    assert r.returncode == 2 and "CMD may have written it" in r.err, r.err
    t = subprocess.run([KEYWARD, "policy", "trust", "keyward.yaml"], capture_output=True, text=True, env=sb.env,
                       cwd=sb.workspace)
    assert t.returncode == 0 and "trusted" in t.stdout, t.stdout + t.stderr
    r = _run_in_workspace(sb, ["true"])
    assert r.returncode == 0, r.err
    # an invalid policy is not trusted
    (sb.workspace / "bad.yaml").write_text("version: 7\n")
    t = subprocess.run([KEYWARD, "policy", "trust", "bad.yaml"], capture_output=True, text=True, env=sb.env,
                       cwd=sb.workspace)
    assert t.returncode == 2, t.stdout + t.stderr


def test_upstream_ca_in_the_workspace_cannot_be_changed_for_the_next_run(sandbox_factory, upstream):
    # A route's upstream_ca is read before CMD starts and never again in
    # this run, but again by the next run. A CA file in the workspace that
    # CMD replaced with its own would make the next run trust CMD's
    # certificates for the upstream that gets the credential. It is
    # covered while CMD runs; the allowed request still goes through,
    # verified with the CA keyward read.
    assert upstream.tls
    sb = sandbox_factory()
    ca = sb.workspace / "certs" / "ca.pem"
    ca.parent.mkdir()
    ca.write_bytes(open(upstream.ca_file, "rb").read())
    before = ca.read_bytes()
    sb.policy = sb.tmp / "policy.yaml"
    sb.policy.write_text(policy_for(upstream).replace(str(upstream.ca_file), str(ca)))
    script = ("echo x >> certs/ca.pem; echo w=$?; mv certs/ca.pem certs/k2; echo mv=$?; "
              "rm -f certs/ca.pem; echo rm=$?; "
              f"curl -s -o /dev/null -w 'code=%{{http_code}}\\n' -H \"Authorization: Bearer $TEST_TOKEN\" "
              f"https://{upstream.host}:{upstream.port}/api/ok")
    r = sb.run(["/bin/sh", "-c", script])
    assert r.returncode == 0, r.err
    assert ca.read_bytes() == before, r.out
    assert not (ca.parent / "k2").exists(), r.out
    assert "w=0" not in r.out and "mv=0" not in r.out and "rm=0" not in r.out, r.out
    assert "code=200" in r.out, r.out + r.err
    assert upstream.requests[-1].target == "/api/ok"
    assert upstream.requests[-1].header("authorization") == f"Bearer {SECRET}"


def test_credential_command_naming_a_script_in_the_workspace_is_refused(sandbox_factory, upstream, tmp_path):
    # exec: "/project/bin/token.sh": the script is whatever the sandbox (or
    # an earlier run) made of it, and keyward runs it on the host. The run
    # is refused before anything runs, without quoting the command.
    sb = sandbox_factory()
    script = sb.workspace / "bin" / "token.sh"
    script.parent.mkdir()
    ran = tmp_path / "ran"
    script.write_text(f"#!/bin/sh\ntouch {ran}\nprintf '%s\\n' '{SECRET}'\n")
    script.chmod(0o755)
    text = policy_for(upstream).replace("from: env:TEST_TOKEN\n", f'from: "exec:{script} --quiet"\n')
    sb.policy = sb.tmp / "policy.yaml"
    sb.policy.write_text(text)
    r = sb.run(["true"])
    assert r.returncode == 2, r.err
    assert "credential test: its exec: command names a file where the sandbox can write" in r.err
    assert str(script) not in r.err
    assert not ran.exists()
