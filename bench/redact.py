#!/usr/bin/env python3
"""What response redaction costs: one large download through keyward on a
plain-http route, with and without a credential (a credentialed route's
responses are scanned for secrets and re-framed as chunks), and gzip-encoded
on the credentialed route (decoded, scanned, re-framed).

    bench/redact.py [--keyward build/keyward] [--mb 500] [--runs 3]

The upstream is a raw socket server in this process (Python's sendall of a
64 KiB block, a few GB/s on loopback); the client is curl writing to
/dev/null. Prints MB/s of response body per case (best of --runs) and the
machine's load average, so a result can be read next to what else ran."""

import argparse
import gzip
import os
import pathlib
import socket
import subprocess
import tempfile
import threading
import time

BLOCK = b"x" * 65536


def serve(sock, size, gz):
    while True:
        try:
            c, _ = sock.accept()
        except OSError:
            return
        threading.Thread(target=one, args=(c, size, gz), daemon=True).start()


def one(c, size, gz):
    with c:
        f = c.makefile("rb")
        while f.readline() not in (b"\r\n", b""):
            pass
        if gz:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                      % len(gz) + gz)
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size)
        left = size
        while left > 0:
            k = min(left, len(BLOCK))
            c.sendall(BLOCK[:k])
            left -= k


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keyward", default=str(pathlib.Path(__file__).resolve().parents[1] / "build" / "keyward"))
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    size = a.mb * 1000 * 1000
    gz = gzip.compress(b"x" * size, 6)

    ups = {}
    for name, body in (("plain", None), ("gzip", gz)):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        threading.Thread(target=serve, args=(s, size, body), daemon=True).start()
        ups[name] = s.getsockname()[1]

    tmp = pathlib.Path(tempfile.mkdtemp())
    policy = tmp / "policy.yaml"
    policy.write_text(f"""version: 1
credentials:
  t: {{from: env:BENCH_TOKEN, placeholder: kw_bench_placeholder_0123456789}}
routes:
  - {{host: open.test, port: {ups['plain']}, scheme: http, paths: ["/open"], allow_private: true}}
  - {{host: cred.test, port: {ups['plain']}, scheme: http, paths: ["/cred"], allow_private: true,
      credential: t, inject: bearer}}
  - {{host: gz.test, port: {ups['gzip']}, scheme: http, paths: ["/gz"], allow_private: true,
      credential: t, inject: bearer}}
""")
    env = dict(os.environ, BENCH_TOKEN="bench-secret-0123456789abcdef", KEYWARD_HOME=str(tmp / "home"))
    err = open(tmp / "stderr", "wb")
    cmd = [a.keyward, "proxy", "--policy", str(policy), "--listen", "127.0.0.1:0", "--audit", str(tmp / "a.jsonl"),
           "--workers", "1"]
    for h in ("open.test", "cred.test", "gz.test"):
        cmd += ["--resolve", f"{h}:127.0.0.1"]
    p = subprocess.Popen(cmd, stderr=err, env=env)
    port = None
    for _ in range(500):
        for line in (tmp / "stderr").read_text().splitlines():
            if "listening on 127.0.0.1:" in line:
                port = int(line.rsplit(":", 1)[1])
        if port:
            break
        time.sleep(0.02)
    try:
        cases = [("uncredentialed (passed as is)", f"http://open.test:{ups['plain']}/open"),
                 ("credentialed (scanned, chunked)", f"http://cred.test:{ups['plain']}/cred"),
                 ("credentialed, gzip (decoded, scanned)", f"http://gz.test:{ups['gzip']}/gz")]
        print(f"{a.mb} MB body, best of {a.runs}; load average before: {os.getloadavg()[0]:.2f}")
        for name, url in cases:
            best = 0.0
            for _ in range(a.runs):
                t0 = time.monotonic()
                r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", "-x",
                                    f"http://127.0.0.1:{port}", url], capture_output=True, text=True)
                dt = time.monotonic() - t0
                assert r.returncode == 0 and int(r.stdout) == size, (r.stdout, r.stderr)
                best = max(best, size / dt / 1e6)
            print(f"  {name:40s} {best:8.0f} MB/s")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main()
