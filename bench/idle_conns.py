#!/usr/bin/env python3
"""Memory per client connection of a running keyward proxy.

Reads VmRSS of PID from /proc/PID/status idle, then with N client
connections open: in mode "silent" they sent nothing; in mode "used" each
made one keep-alive request through the proxy (one at a time, so the
upstream pool stays at one connection) and stays open. Run each mode
against a freshly started proxy. Prints one JSON object.

Loopback only; every connection is closed before exit; the whole run is
bounded by the socket timeouts below (a few seconds for N=1000).
"""
import json
import resource
import socket
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def settle(pid, seconds=1.0):
    """RSS after the proxy had time to accept and set up every connection."""
    time.sleep(seconds)
    return rss_kib(pid)


def read_response(s):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("proxy closed the connection")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("proxy closed the connection mid-body")
        body += chunk
    return status


def open_conns(host, port, n, req):
    socks = []
    bad = 0
    try:
        for _ in range(n):
            s = socket.create_connection((host, port), timeout=5)
            socks.append(s)
            if req:
                s.sendall(req)
                if read_response(s) != 200:
                    bad += 1
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks, bad


def main():
    pid, host, port, target_host, target_port, n, mode = sys.argv[1:8]
    port, n = int(port), int(n)
    if mode not in ("silent", "used"):
        raise SystemExit("mode: silent | used")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    req = (f"GET http://{target_host}:{target_port}/api/x HTTP/1.1\r\n"
           f"Host: {target_host}:{target_port}\r\n\r\n").encode()
    out = {"n": n, "mode": mode}
    if mode == "used":
        # One request first, so one-time costs (the upstream connection, the
        # first audit record) are in the baseline, not spread over n.
        socks, bad = open_conns(host, port, 1, req)
        socks[0].close()
        if bad:
            raise SystemExit("warm-up request was not answered with 200")
    out["rss_idle_kib"] = settle(pid, 0.5)
    socks, bad = open_conns(host, port, n, req if mode == "used" else None)
    try:
        out["non_200"] = bad
        out["rss_loaded_kib"] = settle(pid)
        # still open? a proxy that dropped them would look cheap
        alive = 0
        for s in socks:
            s.setblocking(False)
            try:
                alive += 1 if s.recv(1) else 0
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        out["still_open"] = alive
    finally:
        for s in socks:
            s.close()
    out["per_conn_kib"] = (out["rss_loaded_kib"] - out["rss_idle_kib"]) / n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
