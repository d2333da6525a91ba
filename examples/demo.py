#!/usr/bin/env python3
"""keyward demo: an example agent (examples/agent.sh) runs inside `keyward run`.
It holds only a placeholder, calls an API through keyward (which attaches the
real credential outside the sandbox), and is stopped when it misbehaves: a
method the policy does not allow, its token sent to another host, a way
around the proxy, the host's secrets. Everything runs on loopback.

Usage: demo.py --keyward PATH/TO/keyward
"""

import argparse
import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time

REAL_TOKEN = "demo-REAL-token-4c1d8e2f9a7b"   # made up; lives only outside the agent
PLACEHOLDER = "ghp_kwDEMOplaceholder000000000000000000"
BOLD, DIM, GREEN, RED, RESET = ("\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m") \
    if sys.stdout.isatty() else ("", "", "", "", "")


def step(title):
    print(f"\n{BOLD}== {title}{RESET}")


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def make_certs(d):
    def o(*a):
        subprocess.run(["openssl", *a], check=True, capture_output=True, cwd=d)
    o("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
      "-out", "ca.pem", "-days", "1", "-subj", "/CN=demo API CA")
    o("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "api.key",
      "-out", "api.csr", "-subj", "/CN=api.demo.test")
    with open(os.path.join(d, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:api.demo.test\n")
    o("x509", "-req", "-in", "api.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
      "api.pem", "-days", "1", "-extfile", "ext.cnf")


class Api(http.server.BaseHTTPRequestHandler):
    """A stand-in for a real API: it answers only with the real token."""
    protocol_version = "HTTP/1.1"
    seen = []

    def do_GET(self):
        auth = self.headers.get("Authorization", "")
        ok = auth == f"Bearer {REAL_TOKEN}"
        Api.seen.append((self.command, self.path, "real token" if ok else f"other: {auth[:20]}"))
        if ok:
            body = json.dumps({"repos": ["acme/app", "acme/docs"]}).encode()
            self.send_response(200)
        else:
            body = b'{"message": "Bad credentials"}'
            self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_DELETE = do_POST = do_GET

    def log_message(self, *a):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keyward", required=True)
    args = ap.parse_args()
    kw = os.path.abspath(args.keyward)
    tmp = tempfile.mkdtemp(prefix="keyward-demo-")
    try:
        make_certs(tmp)
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(tmp, "api.pem"), os.path.join(tmp, "api.key"))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        api_port = srv.server_address[1]
        threading.Thread(target=srv.serve_forever, daemon=True).start()

        workspace = os.path.join(tmp, "project")
        os.mkdir(workspace)
        shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent.sh"), workspace)
        policy = os.path.join(tmp, "policy.yaml")
        with open(policy, "w") as f:
            f.write(f"""version: 1
credentials:
  github:
    from: vault:github              # keyward's encrypted vault, outside every sandbox
    env: GITHUB_TOKEN               # the sandbox gets the placeholder under this name
    placeholder: {PLACEHOLDER}
routes:
  - host: api.demo.test
    port: {api_port}
    methods: [GET]
    paths: ["/v1/repos/**"]
    credential: github
    inject: bearer
    upstream_ca: {tmp}/ca.pem       # the demo API's private CA
    allow_private: true             # it runs on loopback
sandbox:
  limits: {{processes: 256, tmp_size: 64MiB}}
""")
        step("The policy: one API, GET only, one path prefix, one credential")
        print(open(policy).read().rstrip())
        state = os.path.join(tmp, "state")
        env = dict(os.environ, KEYWARD_HOME=state)
        step("Store the real token in keyward's vault (read from stdin, never argv)")
        print(DIM + "keyward secret set github < token" + RESET)
        put = subprocess.run([kw, "secret", "set", "github"], input=REAL_TOKEN, env=env, capture_output=True,
                             text=True)
        if put.returncode != 0:
            sys.exit("keyward secret set failed:\n" + put.stderr)
        print(DIM + run([kw, "secret", "list"], env=env).stdout.rstrip() + RESET)
        chk = run([kw, "policy", "check", policy], env=env)
        print(DIM + chk.stdout.rstrip() + RESET)

        audit = os.path.join(state, "audit.jsonl")
        base = f"https://api.demo.test:{api_port}"
        cmd = [kw, "run", "--policy", policy, "--workspace", workspace, "--audit", audit,
               "--resolve", "api.demo.test:127.0.0.1", "--", "sh", "./agent.sh", base, state]
        step("keyward run -- sh ./agent.sh   (the real token never enters the sandbox)")
        print(DIM + " ".join(cmd[1:]) + RESET)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        print(r.stdout.rstrip())
        if r.stderr.strip():
            print(DIM + r.stderr.rstrip() + RESET)

        step("What the API received: only the allowed request, with the real token")
        for s in Api.seen:
            print(f"  {s}")

        step("The audit log (keyward audit show), hash-chained")
        print(run([kw, "audit", "show", audit]).stdout.rstrip())
        step("keyward audit verify")
        v = run([kw, "audit", "verify", audit])
        print(v.stdout.rstrip() or v.stderr.rstrip())

        outputs = r.stdout + r.stderr + open(audit).read() + put.stdout + put.stderr + chk.stdout
        leaked = REAL_TOKEN in outputs
        codes = [l.split()[1] for l in r.stdout.splitlines() if l.strip().startswith("HTTP ")]
        ok = (r.returncode == 0 and codes[:2] == ["200", "403"] and codes[2] in ("403", "000")
              and len(Api.seen) == 1 and Api.seen[0][2] == "real token" and v.returncode == 0
              and "visible!" not in r.stdout and "connected!" not in r.stdout
              and "resolved!" not in r.stdout and not leaked)
        step("Result")
        print(f"  real token in the agent's output, keyward's messages or the audit log: "
              f"{'YES' if leaked else 'no'}")
        print(f"  {GREEN + 'demo passed' if ok else RED + 'demo FAILED'}{RESET}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
