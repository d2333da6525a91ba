#!/usr/bin/env python3
"""Writes the hand-written seed inputs to fuzz/corpus/<harness>/seed-*.

Run from anywhere: python3 fuzz/seeds.py. Existing seed-* files are
rewritten; inputs the fuzzer found (named by their SHA-1) are left alone.
Seeds are small, readable where the format is text, and cover the valid
forms and the tricky ones each parser must refuse or handle."""
import base64
import hashlib
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def write(harness, name, data):
    d = os.path.join(HERE, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def crlf(s):
    return s.replace("\n", "\r\n")


# ---- HTTP requests ------------------------------------------------------
REQ = {
    "get-origin": "GET /repos/acme/app HTTP/1.1\nHost: api.github.com\n\n",
    "get-absolute": "GET http://pypi.org/simple/requests/?x=1 HTTP/1.1\nHost: pypi.org\nAccept: */*\n\n",
    "connect": "CONNECT api.github.com:443 HTTP/1.1\nHost: api.github.com:443\n\n",
    "connect-then-bytes": "CONNECT a.example:443 HTTP/1.1\nHost: a.example:443\n\n\x16\x03\x01\x00\x05hello",
    "post-cl": "POST /upload HTTP/1.1\nHost: a\nContent-Length: 5\n\nhello",
    "post-chunked": "POST /up HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5\nhello\n0\n\n",
    "chunked-ext": "POST /up HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n5;name=value;q=\"x\"\nhello\n3;e\nabc\n0;last\n\n",
    "chunked-trailers": "POST /up HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\n2\nhi\n0\nX-Trailer: 1\nSum: 2\n\n",
    "chunked-hex-upper": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\nA\n0123456789\n0\n\n",
    "chunked-bad-size": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\nzz\nhello\n0\n\n",
    "chunked-huge-size": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n\nffffffffffffffffff\nx\n0\n\n",
    "cl-te": "POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\n\n",
    "te-cl": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\nContent-Length: 4\n\n0\n\n",
    "te-gzip-chunked": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: gzip, chunked\n\n0\n\n",
    "te-chunked-gzip": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: chunked, gzip\n\n0\n\n",
    "te-identity": "POST / HTTP/1.1\nHost: a\nTransfer-Encoding: identity\n\nabc",
    "cl-dup": "POST / HTTP/1.1\nHost: a\nContent-Length: 3\nContent-Length: 3\n\nabc",
    "cl-list": "POST / HTTP/1.1\nHost: a\nContent-Length: 3, 3\n\nabc",
    "cl-plus": "POST / HTTP/1.1\nHost: a\nContent-Length: +3\n\nabc",
    "cl-huge": "POST / HTTP/1.1\nHost: a\nContent-Length: 18446744073709551616\n\n",
    "cl-max": "POST / HTTP/1.1\nHost: a\nContent-Length: 18446744073709551615\n\nab",
    "pipelined": "GET /a HTTP/1.1\nHost: a\n\nGET /b HTTP/1.1\nHost: a\n\nPOST /c HTTP/1.1\nHost: a\nContent-Length: 2\n\nokGET /d HTTP/1.1\nHost: a\n\n",
    "http10": "GET / HTTP/1.0\nHost: a\nConnection: keep-alive\n\n",
    "http09": "GET /\n\n",
    "http2-preface": "PRI * HTTP/2.0\n\nSM\n\n",
    "upgrade-ws": "GET /chat HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\n\x81\x05hello",
    "expect-100": "PUT /f HTTP/1.1\nHost: a\nExpect: 100-continue\nContent-Length: 3\n\nabc",
    "host-space": "GET / HTTP/1.1\nHost : a\n\n",
    "name-space": "GET / HTTP/1.1\nX Y: 1\n\n",
    "empty-name": "GET / HTTP/1.1\n: x\n\n",
    "method-lower": "get / HTTP/1.1\nHost: a\n\n",
    "method-unknown": "FOO / HTTP/1.1\nHost: a\n\n",
    "options-star": "OPTIONS * HTTP/1.1\nHost: a\n\n",
    "many-headers": "GET / HTTP/1.1\n" + "".join("X-H%d: %d\n" % (i, i) for i in range(12)) + "\n",
    "long-value": "GET / HTTP/1.1\nHost: a\nX: " + "v" * 600 + "\n\n",
    "basic-auth": "GET / HTTP/1.1\nHost: a\nAuthorization: Basic eC1hY2Nlc3MtdG9rZW46Z2hwX2t3\n\n",
    "connection-list": "GET / HTTP/1.1\nHost: a\nConnection: close, X-Foo\nX-Foo: 1\n\n",
    "utf8-value": "GET / HTTP/1.1\nHost: a\nX: caf\xc3\xa9\n\n",
    "version-99": "GET / HTTP/9.9\nHost: a\n\n",
    "tab-value": "GET / HTTP/1.1\nHost: a\nX:\tv\t\n\n",
}
for name, text in REQ.items():
    write("http1_request", name, crlf(text).encode("latin-1"))
# The strict byte rules: these must be refused before llhttp sees them.
RAW_REQ = {
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare-lf-mixed": b"GET / HTTP/1.1\r\nHost: a\n\r\n",
    "bare-cr": b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nX: a\r\n b\r\nHost: a\r\n\r\n",
    "obs-fold-tab": b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n",
    "nul": b"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
    "ctl": b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
    "del": b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
    "leading-crlf": b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "incomplete": b"GET / HTTP/1.1\r\nHost: a\r\n",
    "incomplete-cr": b"GET / HTTP/1.1\r\nHost: a\r\n\r",
    "chunk-lf-body": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
    "chunk-no-crlf": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX0\r\n\r\n",
    "chunk-cut": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    "smuggle-cl-then-get": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
}
for name, data in RAW_REQ.items():
    write("http1_request", name, data)

# ---- HTTP responses -----------------------------------------------------
RESP = {
    "200-cl": "HTTP/1.1 200 OK\nContent-Length: 5\nContent-Type: text/plain\n\nhello",
    "200-chunked": "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n5\nhello\n6;ext=1\n world\n0\nTrailer: x\n\n",
    "200-eof": "HTTP/1.1 200 OK\nContent-Type: text/plain\n\nbody until close",
    "200-http10": "HTTP/1.0 200 OK\n\nbody",
    "204": "HTTP/1.1 204 No Content\nContent-Length: 10\n\n",
    "304": "HTTP/1.1 304 Not Modified\nETag: \"x\"\n\n",
    "100-then-200": "HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "103-then-200": "HTTP/1.1 103 Early Hints\nLink: </s.css>; rel=preload\n\nHTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "101": "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n\n\x81\x02hi",
    "keepalive-two": "HTTP/1.1 200 OK\nContent-Length: 1\n\naHTTP/1.1 404 Not Found\nContent-Length: 3\n\nnop",
    "cl-te": "HTTP/1.1 200 OK\nContent-Length: 3\nTransfer-Encoding: chunked\n\n0\n\n",
    "te-not-chunked": "HTTP/1.1 200 OK\nTransfer-Encoding: gzip\n\nabc",
    "no-reason": "HTTP/1.1 200 \nContent-Length: 0\n\n",
    "no-reason-nospace": "HTTP/1.1 200\nContent-Length: 0\n\n",
    "status-999": "HTTP/1.1 999 Weird\nContent-Length: 0\n\n",
    "status-2digit": "HTTP/1.1 20 OK\n\n",
    "status-1000": "HTTP/1.1 1000 OK\n\n",
    "set-cookie": "HTTP/1.1 302 Found\nLocation: https://a/\nSet-Cookie: a=b; Path=/; HttpOnly\nSet-Cookie: c=d\nContent-Length: 0\n\n",
    "cl-dup-differ": "HTTP/1.1 200 OK\nContent-Length: 3\nContent-Length: 4\n\nabcd",
    "chunk-cut": "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n10\nshort",
    "eof-http11-close": "HTTP/1.1 200 OK\nConnection: close\n\nrest",
    "head-like": "HTTP/1.1 200 OK\nContent-Length: 1000\n\n",
    "version-2": "HTTP/2 200 OK\n\n",
    "huge-cl": "HTTP/1.1 200 OK\nContent-Length: 99999999999999999999\n\n",
}
for name, text in RESP.items():
    write("http1_response", name, crlf(text).encode("latin-1"))
RAW_RESP = {
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "nul-reason": b"HTTP/1.1 200 O\x00K\r\n\r\n",
    "bare-cr": b"HTTP/1.1 200 OK\rX: 1\r\n\r\n",
}
for name, data in RAW_RESP.items():
    write("http1_response", name, data)

# ---- paths and globs ----------------------------------------------------
PATHS = {
    "root": "/",
    "plain": "/repos/acme/app/issues",
    "dot": "/a/./b",
    "dotdot": "/a/b/../c",
    "dotdot-root": "/../../etc/passwd",
    "pct-dot": "/a/%2e/b",
    "pct-dotdot": "/a/%2e%2E/b",
    "pct-dotdot-mixed": "/a/.%2e/b/%2E./c",
    "slash-run": "//a///b//",
    "slash-dotdot": "/a//../b",
    "enc-slash": "/a%2Fb/c%2f..",
    "backslash": "/a\\..\\b",
    "enc-backslash": "/a%5c..%5Cb",
    "enc-nul": "/a%00b",
    "enc-ctl": "/a%0d%0aX",
    "double-enc": "/a%252e%252e/b",
    "semicolon": "/a;jsessionid=1/b",
    "unreserved-enc": "/%7euser/%41%42%43-%5f%2D",
    "lower-hex": "/%c3%a9/%ff",
    "bad-escape": "/a%zz",
    "short-escape": "/a%4",
    "no-slash": "a/b",
    "empty": "",
    "query": "/a?b=c",
    "fragment": "/a#b",
    "space": "/a b",
    "trail-dot": "/a/b/.",
    "trail-dotdot": "/a/b/c/..",
    "triple-dot": "/a/.../b",
    "glob-dstar": "/**\n/any/thing/",
    "glob-match": "/repos/acme/app/**\n/repos/acme/app/issues/1",
    "glob-dir-itself": "/repos/acme/app/**\n/repos/acme/app",
    "glob-mid-dstar": "/a/**/b\n/a/b",
    "glob-star": "/a/*/c\n/a/b/c",
    "glob-star-no-cross": "/a/*\n/a/b/c",
    "glob-many-stars": "/" + "*" * 40 + "a\n/" + "b" * 200,
    "glob-many-dstars": "/" + "**/" * 30 + "x\n/" + "a/" * 100 + "y",
    "glob-nul-sep": "/a/*/c\x00/a/%2e%2e/a/x/c",
    "glob-literal": "/a/b\n/a/./b",
    "glob-pct": "/%7Eu/**\n/%7eu/x",
}
for name, text in PATHS.items():
    write("path", name.rstrip("\n"), text.encode("latin-1"))

# ---- policies -----------------------------------------------------------
EXAMPLE = """version: 1
credentials:
  github:
    from: env:KEYWARD_TEST_GITHUB_TOKEN
    env: GITHUB_TOKEN
    placeholder: ghp_kwPLACEHOLDERgithub0000000000000000
  npm:
    from: file:/run/secrets/npm
    env: NPM_TOKEN
routes:
  - host: api.github.com
    methods: [GET, POST]
    paths: ["/repos/acme/app/**"]
    credential: github
    inject: bearer
  - host: github.com
    paths: ["/acme/app.git/**"]
    credential: github
    inject: {basic: x-access-token}
  - host: registry.npmjs.org
    credential: npm
    inject: {header: Authorization, value: "Bearer {secret}"}
  - host: pypi.org
sandbox:
  workspace: .
audit: keyward-audit.jsonl
"""
POLICIES = {
    "example": EXAMPLE,
    "minimal": "version: 1\n",
    "empty-routes": "version: 1\nroutes: []\n",
    "flow": "{version: 1, routes: [{host: a.example.com}, {host: '*.b.example.com', scheme: http, port: 8080}]}\n",
    "wildcard": "version: 1\nroutes:\n  - host: \"*.example.com\"\n    methods: [get, Post]\n",
    "ipv4": "version: 1\nroutes:\n  - host: 127.0.0.1\n    port: 8080\n    scheme: http\n",
    "ipv6": "version: 1\nroutes:\n  - host: \"[::1]\"\n    port: 9443\n  - host: \"[0:0::1]\"\n",
    "private": "version: 1\nroutes:\n  - host: internal.corp\n    allow_private: true\n  - host: localhost\n    allow_private: false\n",
    "query-inject": "version: 1\ncredentials:\n  maps: {from: env:MAPS, placeholder: kwmaps_PLACEHOLDER_01234}\nroutes:\n  - host: maps.example.com\n    credential: maps\n    inject: {query: key}\n",
    "swap": "version: 1\ncredentials:\n  s: {from: env:S}\nroutes:\n  - host: a.example\n    credential: s\n    inject: swap\n",
    "basic-keep": "version: 1\ncredentials:\n  s: {from: env:S}\nroutes:\n  - host: a.example\n    credential: s\n    inject: basic\n",
    "limits": "version: 1\nlimits:\n  max_header_bytes: 8KiB\n  max_headers: 50\n  header_timeout: 5s\n  idle_timeout: 2m\n  max_body: 10MiB\n",
    "globs": "version: 1\nroutes:\n  - host: a.example\n    paths: [\"/a/**\", \"/b/*/c\", \"/%7ex/**/y\", \"/c%2fd\", \"/**\"]\n",
    "max-body": "version: 1\nroutes:\n  - host: a.example\n    max_body: 1024\n    upstream_ca: ca.pem\nupstream_ca: /etc/ssl/x.pem\n",
    # broken ones
    "bad-version": "version: 2\n",
    "bad-inject": "version: 1\ncredentials:\n  github: {from: env:GH}\nroutes:\n  - host: api.github.com\n    credential: github\n    inject: bearr\n",
    "cred-no-inject": "version: 1\ncredentials:\n  g: {from: env:G}\nroutes:\n  - host: a.example\n    credential: g\n",
    "unknown-cred": "version: 1\nroutes:\n  - host: a.example\n    credential: nope\n    inject: bearer\n",
    "alias": "version: 1\nroutes:\n  - &r {host: a.example}\n  - *r\n",
    "anchor-bomb": "a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nversion: 1\n",
    "tag": "version: !!int 1\n",
    "two-docs": "version: 1\n---\nversion: 1\n",
    "dup-key": "version: 1\nversion: 1\n",
    "unknown-key": "version: 1\nfoo: bar\n",
    "host-port": "version: 1\nroutes:\n  - host: api.github.com:443\n",
    "host-url": "version: 1\nroutes:\n  - host: https://api.github.com\n",
    "host-bad-star": "version: 1\nroutes:\n  - host: \"a.*.com\"\n",
    "host-numeric": "version: 1\nroutes:\n  - host: 2130706433\n",
    "host-leading-zero": "version: 1\nroutes:\n  - host: 010.0.0.1\n",
    "glob-dotdot": "version: 1\nroutes:\n  - host: a.example\n    paths: [\"/a/../b\", \"/a/%2e%2e/b\"]\n",
    "glob-double-slash": "version: 1\nroutes:\n  - host: a.example\n    paths: [\"/a//b\"]\n",
    "method-connect": "version: 1\nroutes:\n  - host: a.example\n    methods: [CONNECT, TRACE]\n",
    "placeholder-inside": "version: 1\ncredentials:\n  a: {from: env:A, placeholder: kw_PLACEHOLDER_aaaaaaaa}\n  b: {from: env:B, placeholder: x_kw_PLACEHOLDER_aaaaaaaa_y}\n",
    "placeholder-short": "version: 1\ncredentials:\n  a: {from: env:A, placeholder: short}\n",
    "header-crlf": "version: 1\ncredentials:\n  a: {from: env:A}\nroutes:\n  - host: a.example\n    credential: a\n    inject: {header: X-K, value: \"a\\r\\nb {secret}\"}\n",
    "header-host": "version: 1\ncredentials:\n  a: {from: env:A}\nroutes:\n  - host: a.example\n    credential: a\n    inject: {header: Host, value: \"{secret}\"}\n",
    "vault": "version: 1\ncredentials:\n  a: {from: vault:a}\n",
    "kind-aws": "version: 1\ncredentials:\n  s3:\n    kind: aws\n    access_key_id: {from: vault:aws_id, env: AWS_ACCESS_KEY_ID}\n",
    "deep": "version: 1\nsandbox:\n  read_only: " + "[" * 40 + "]" * 40 + "\n",
    "sandbox": "version: 1\ncredentials:\n  g: {from: env:G, env: GH}\nsandbox:\n  workspace: .\n  read_only: [/opt, data]\n  read_write: [/srv/x]\n  env: [TERM, LANG]\n  ports: [8000, 65535]\n  landlock: required\n  limits: {memory: 1GiB, pids: 64, cpu: 150%, processes: 64, open_files: 256, file_size: 1MB, tmp_size: 8MiB}\n",
    "sandbox-bad": "version: 1\ncredentials:\n  g: {from: env:G, env: GH}\nsandbox:\n  read_only: [/a/../b, /]\n  env: [G, GH, 1X]\n  ports: [0, 70000]\n  landlock: off\n  limits: {cpu: 50, memory: 1}\n",
    "nul": "version: 1\x00\n",
    "bad-utf8": "version: 1\n# \xc0\xaf\n",
    "bom": "\ufeffversion: 1\n",
    "port-zero": "version: 1\nroutes:\n  - host: a.example\n    port: 0\n",
    "port-big": "version: 1\nroutes:\n  - host: a.example\n    port: 65536\n",
    "not-mapping": "- version\n- 1\n",
    "scalar": "hello",
    "empty": "",
}
for name, text in POLICIES.items():
    write("policy", name, text.encode("utf-8", "surrogateescape") if "\xc0" not in text
          else text.encode("latin-1"))

# ---- audit logs -----------------------------------------------------------
# "@@PREV@@" is replaced by the harness with the hash the chain expects.
def rec(seq, **kw):
    fields = ['"seq":%d' % seq, '"prev":"@@PREV@@"', '"time":"2026-11-23T12:34:56.123456Z"']
    for k, v in kw.items():
        fields.append('"%s":%s' % (k, v if isinstance(v, int) else '"' + v + '"'))
    return "{" + ",".join(fields) + "}\n"


def chain(lines):
    """A real chain, hashes computed here (no marker needed)."""
    prev = "0" * 64
    out = []
    for line in lines:
        line = line.replace("@@PREV@@", prev).rstrip("\n")
        out.append(line + "\n")
        prev = hashlib.sha256(line.encode()).hexdigest()
    return "".join(out)


START = rec(0, event="start", listener="127.0.0.1:8080")
REQ1 = rec(1, event="request", listener="127.0.0.1:8080", client="127.0.0.1:5555", method="GET",
           scheme="https", host="api.github.com", port=443, path="/repos/acme/app", route=0,
           credential="github", decision="allow", status=200, bytes_in=0, bytes_out=2048,
           duration_us=1234567)
REQ2 = rec(2, event="request", method="POST", scheme="http", host="evil.example", port=8080,
           path="/x\\u001b[31m\\u0085", route=-1, decision="deny", reason="host",
           detail="no route names this host", status=403)
STOP = rec(3, event="stop")
# An allowed request: its decision, then its result naming it.
DECIDE1 = rec(1, event="request", listener="127.0.0.1:8080", method="GET", scheme="https",
              host="api.github.com", port=443, path="/repos/acme/app", route=0, credential="github",
              decision="allow")
RESULT2 = rec(2, event="result", request_seq=1, decision="allow", status=200, bytes_in=0, bytes_out=2048,
              duration_us=1234)
AUDIT = {
    "chain-marked": START + REQ1 + REQ2 + STOP,
    "chain-real": chain([START, REQ1, REQ2, STOP]),
    "decision-result": chain([START, DECIDE1, RESULT2]),
    "result-marked": START + DECIDE1 + RESULT2,
    "result-forward": START + RESULT2.replace('"seq":2', '"seq":1').replace('"request_seq":1', '"request_seq":2'),
    "result-no-request-seq": START + rec(1, event="result", decision="error", reason="client", status=0),
    "empty": "",
    "one-start": START,
    "no-newline": START.rstrip("\n"),
    "blank-line": START + "\n",
    "bad-json": START + "{\"seq\":1,\n",
    "not-object": "[1,2,3]\n",
    "seq-gap": START + REQ2,
    "seq-negative": START.replace('"seq":0', '"seq":-1'),
    "seq-string": START.replace('"seq":0', '"seq":"0"'),
    "seq-huge": START.replace('"seq":0', '"seq":9223372036854775807'),
    "prev-wrong": START.replace("@@PREV@@", "f" * 64),
    "prev-upper": START.replace("@@PREV@@", "0" * 63 + "A"),
    "dup-key": START.replace('"seq":0', '"seq":0,"seq":0'),
    "no-time": '{"seq":0,"prev":"@@PREV@@","event":"start"}\n',
    "no-event": '{"seq":0,"prev":"@@PREV@@","time":"t"}\n',
    "short-time": START.replace("2026-11-23T12:34:56.123456Z", "x"),
    "invalid-utf8": START.replace("start", "st\xc3\x28rt"),
    "c1-controls": rec(0, event="request", path="/\\u0085\\u009b2J", decision="deny", method="G\\u0007ET"),
    "big-numbers": rec(0, event="request", bytes_in=1 << 62, bytes_out=1 << 40, duration_us=99999999999, port=65535, status=599),
    "nul-escape": rec(0, event="request", path="/a\\u0000b"),
    "crlf": START.replace("\n", "\r\n"),
    "truncated-tail": START + REQ1[:40],
}
for name, text in AUDIT.items():
    write("audit_verify", name, text.encode("latin-1") if "\xc3" in text else text.encode())

# ---- encodings ------------------------------------------------------------
ENC = {
    "b64": "eC1hY2Nlc3MtdG9rZW46Z2hwX2t3",
    "b64-pad1": "YWJjZA==",
    "b64-pad2": "YWJjZGU=",
    "b64-nonzero-pad": "YWJjZB==",
    "b64-bad-pad": "YW=jZA==",
    "b64-space": "YWJj ZA==",
    "b64-urlsafe": "-_-_",
    "pct": "a%20b%2Fc%25%41",
    "pct-bad": "%zz%4",
    "pct-trailing": "abc%",
    "binary": bytes(range(256)),
    "empty": b"",
    "placeholder": "ghp_kwPLACEHOLDERgithub0000000000000000",
    "b64-one": "QQ==",
    "b64-two": "QUI=",
    "b64-three": "QUJD",
    "b64-only-pad": "====",
    "b64-pad-middle": "QQ==QUJD",
    "b64-three-pad": "Q===",
    "b64-plus-slash": "+/+/++//",
    "b64-newline": "QUJD\nQUJD",
    "b64-nul": "QU\x00D",
    "b64-high": "QU\xffD",
    "b64-basic-cred": base64.b64encode(b"x-access-token:ghp_kwPLACEHOLDERgithub0000000000000000").decode(),
    "pct-all-hex": "%00%01%7f%80%ff%2F%2f%25%41%7E",
    "pct-lower-upper": "%aB%Ab%ab%AB",
    "pct-only": "%",
    "pct-two": "%4",
    "pct-plus": "a+b%2Bc",
    "pct-utf8": "%E2%80%A6%C3%A9",
    "mixed": "%41QUJD==%",
    "long-b64": base64.b64encode(bytes(range(256)) * 4).decode(),
    "long-pct": "".join("%%%02X" % b for b in range(256)),
}
for name, data in ENC.items():
    write("encode", name, data)

# ---- rewriting --------------------------------------------------------------
# The first byte picks the route of fuzz_inject.c's policy (low four bits)
# and asks for an upgrade (bit 4).
GH = "ghp_kwPLACEHOLDERgithub0000000000000000"
MAPS = "kwmaps_PLACEHOLDER_0123456789"
UNB = "kw/unbound/PLACEHOLDER_0123"
b64 = lambda s: base64.b64encode(s.encode()).decode()
INJ = {
    "bearer": (0, "GET /repos/acme/app HTTP/1.1\nHost: api.github.com\nAuthorization: Bearer %s\nAccept: */*\n\n" % GH),
    "bearer-dup-auth": (0, "GET / HTTP/1.1\nHost: api.github.com\nAuthorization: x\nauthorization: y\n\n"),
    "basic-user": (1, "GET /acme/app.git/info/refs?service=git-upload-pack HTTP/1.1\nHost: github.com\nAuthorization: Basic %s\n\n" % b64("x-access-token:" + GH)),
    "basic-keep": (2, "GET / HTTP/1.1\nHost: gist.github.com\nAuthorization: Basic %s\n\n" % b64("me:" + GH)),
    "basic-no-colon": (2, "GET / HTTP/1.1\nHost: gist.github.com\nAuthorization: Basic %s\n\n" % b64("justuser")),
    "header": (3, "GET /pkg HTTP/1.1\nHost: registry.npmjs.org\nX-Api-Key: old\nX-API-KEY: older\n\n"),
    "query": (4, "GET /maps?q=1&key=client&x=%s HTTP/1.1\nHost: maps.example.com:8443\n\n" % MAPS),
    "query-empty": (4, "GET /maps? HTTP/1.1\nHost: maps.example.com:8443\n\n"),
    "query-amps": (4, "GET /maps?&&key&=x& HTTP/1.1\nHost: maps.example.com:8443\n\n"),
    "swap": (5, "POST http://swap.example.com/x?t=%s HTTP/1.1\nHost: swap.example.com\nX-Token: %s %s\nContent-Length: 2\n\nhi" % (GH, GH, GH)),
    "swap-basic": (5, "GET http://swap.example.com/ HTTP/1.1\nHost: swap.example.com\nAuthorization: basic   %s  \n\n" % b64("u:" + GH + GH)),
    "nocred-leak": (6, "GET /simple/?token=%s HTTP/1.1\nHost: pypi.org\n\n" % GH),
    "nocred-leak-pct": (6, "GET /simple/?token=%s HTTP/1.1\nHost: pypi.org\n\n" % "".join("%%%02X" % ord(c) for c in GH)),
    "nocred-leak-header": (6, "GET / HTTP/1.1\nHost: pypi.org\nCookie: t=%s\n\n" % MAPS),
    "nocred-leak-basic": (6, "GET / HTTP/1.1\nHost: pypi.org\nAuthorization: Basic %s\n\n" % b64(GH + ":x")),
    "wildcard": (7, "GET http://x.internal.example:8080/a HTTP/1.1\nHost: x.internal.example:8080\n\n"),
    "ipv6": (8, "GET /v HTTP/1.1\nHost: [::1]:9000\nAuthorization: Bearer nope\n\n"),
    "hop-headers": (0, "GET / HTTP/1.1\nHost: api.github.com\nConnection: keep-alive, X-Secret-Hop\nX-Secret-Hop: 1\nKeep-Alive: 5\nProxy-Authorization: Basic eA==\nTE: trailers\nTrailer: X\nProxy-Connection: close\n\n"),
    "chunked": (3, "POST /p HTTP/1.1\nHost: registry.npmjs.org\nTransfer-Encoding: chunked\n\n0\n\n"),
    "cl": (0, "PUT /f HTTP/1.1\nHost: api.github.com\nContent-Length: 10\n\n0123456789"),
    "upgrade": (16 | 6, "GET /ws HTTP/1.1\nHost: pypi.org\nUpgrade: websocket\nConnection: Upgrade\n\n"),
    "connect": (0, "CONNECT api.github.com:443 HTTP/1.1\nHost: api.github.com:443\n\n"),
    "absolute-no-path": (6, "GET http://pypi.org HTTP/1.1\nHost: pypi.org\n\n"),
    "long-header": (0, "GET / HTTP/1.1\nHost: a\nX-Long: %s\n\n" % (GH * 50)),
}
for name, (ctl, text) in INJ.items():
    write("inject", name, bytes([ctl]) + crlf(text).encode())

# ---- exec: command output -----------------------------------------------------
EXEC_OUTPUT = {
    "raw": "ghp_example\n",
    "raw-crlf": "ghp_example\r\n",
    "raw-two-newlines": "ghp_example\n\n",
    "json": '{"value": "ghp_example"}\n',
    "json-expiry": '{"value": "ghp_example", "expires_at": "2026-11-23T12:34:56Z"}',
    "json-offset": '  {"value": "x", "expires_at": "2026-11-23T12:34:56.123+05:30"}',
    "json-null-expiry": '{"value": "x", "expires_at": null}',
    "json-bad-time": '{"value": "x", "expires_at": "2026-02-30T00:00:00Z"}',
    "json-dup": '{"value": "a", "value": "b"}',
    "json-number": '{"value": 12}',
    "json-array": "[1, 2]",
    "json-broken": '{"value": "ghp_example_secret_value_long"',
    "time-alone": "2026-11-23T12:34:56Z",
    "time-leap": "2016-12-31T23:59:60Z",
}
for name, text in EXEC_OUTPUT.items():
    write("exec_output", name, text)

# ---- vault files --------------------------------------------------------------
# Written from docs/vault.md by this second, independent implementation, with
# the harness's fixed master key (bytes 0..31), so the fuzzer starts from
# files that verify. The harness itself ignores the header's key derivation.
import hmac as _hmac
import struct

try:
    from cryptography.hazmat.primitives import hashes as _hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
except ImportError:  # python3-cryptography: only needed to rewrite the seeds
    AESGCM = None

VAULT_MASTER = bytes(range(32))


def vault_keys(master):
    def hkdf(info):
        return HKDF(algorithm=_hashes.SHA256(), length=32, salt=None, info=info).derive(master)
    return hkdf(b"keyward vault v1 aes-256-gcm"), hkdf(b"keyward vault v1 hmac-sha256")


def vault_bytes(entries, kdf=0, log2n=0, r=0, p=0, salt=bytes(16), count=None, nonce=None, order=True,
                master=VAULT_MASTER):
    """entries: (name, value, created, rotated). Returns the file's bytes."""
    enc, mac = vault_keys(master)
    if order:
        entries = sorted(entries)
    head = b"KWVAULT\0" + struct.pack(">HBBII", 1, kdf, log2n, r, p) + salt
    head += struct.pack(">I", len(entries) if count is None else count)
    head += hashlib.sha256(head).digest()
    out = bytearray(head)
    chain = _hmac.new(mac, head, "sha256").digest()
    for i, (name, value, created, rotated) in enumerate(entries):
        name = name.encode() if isinstance(name, str) else name
        value = value.encode() if isinstance(value, str) else value
        n = nonce or hashlib.sha256(b"nonce%d" % i).digest()[:12]
        ad = struct.pack(">HB", 1, len(name)) + name + struct.pack(">QQ", created, rotated)
        sealed = AESGCM(enc).encrypt(n, value, ad)
        ct, tag = sealed[:-16], sealed[-16:]
        body = struct.pack(">B", len(name)) + name + struct.pack(">QQ", created, rotated) + n
        body += struct.pack(">I", len(ct)) + ct + tag
        chain = _hmac.new(mac, chain + body, "sha256").digest()
        out += body + chain
    out += _hmac.new(mac, chain + b"keyward vault v1 end", "sha256").digest()
    return bytes(out)


if AESGCM is not None:
    T = 1700000000
    THREE = [("aws", "AKIAEXAMPLE", T, 0), ("github", "ghp_example", T, T + 60), ("npm", "npm_tok", T + 5, 0)]
    VAULT = {
        "empty": vault_bytes([]),
        "one": vault_bytes([("github", "ghp_example", T, 0)]),
        "three": vault_bytes(THREE),
        "passphrase": vault_bytes(THREE[:1], kdf=1, log2n=15, r=8, p=1, salt=bytes(range(16))),
        "long-name": vault_bytes([("n" * 128, "v", T, 0)]),
        "long-value": vault_bytes([("big", "x" * 4096, T, 0)]),
        "binary-value": vault_bytes([("bin", bytes(range(256)), T, 0)]),
        # verify, then fail the checks behind the MACs
        "unsorted": vault_bytes(list(reversed(THREE)), order=False),
        "duplicate": vault_bytes([("a", "1", T, 0), ("a", "2", T, 0)], order=False),
        "bad-name": vault_bytes([("a/b", "1", T, 0)]),
        "nul-in-name": vault_bytes([(b"ab\0", "1", T, 0)]),
        "empty-value": vault_bytes([("a", "", T, 0)]),
        # refused before any MAC
        "count-too-big": vault_bytes([], count=1025),
        "count-more": vault_bytes(THREE[:2], count=3),
        "count-less": vault_bytes(THREE, count=2),
        "scrypt-huge": vault_bytes([], kdf=1, log2n=30, r=8, p=1),
        "keyfile-with-salt": vault_bytes([], salt=b"s" * 16),
        "kdf-unknown": vault_bytes([], kdf=7),
    }
    three = VAULT["three"]
    VAULT["truncated-header"] = three[:40]
    VAULT["truncated-entry"] = three[:100]
    VAULT["truncated-trailer"] = three[:-5]
    VAULT["trailing-byte"] = three + b"\0"
    VAULT["version-2"] = three[:8] + b"\0\2" + three[10:]
    VAULT["bad-magic"] = b"KWVAULX\0" + three[8:]
    VAULT["flipped-ct"] = three[:120] + bytes([three[120] ^ 1]) + three[121:]
    VAULT["wrong-key"] = vault_bytes(THREE, master=bytes(32))
    for name, data in VAULT.items():
        write("vault", name, data)


# ---- AWS SigV4 ----------------------------------------------------------
SIG = "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"


def aws_chunks(*chunks):
    out = b""
    for d in list(chunks) + [b""]:
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(d), SIG.encode(), d)
    return out


SIGV4 = {
    "auth": "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/s3/aws4_request, "
            "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + SIG,
    "auth-tight": "AWS4-HMAC-SHA256 Credential=K/20150830/eu-west-1/sts/aws4_request,SignedHeaders=a;b,Signature="
                  + SIG,
    "auth-sigv4a": "AWS4-ECDSA-P256-SHA256 Credential=K/20150830/s3/aws4_request, SignedHeaders=host, Signature=00",
    "auth-unsorted": "AWS4-HMAC-SHA256 Credential=K/20150830/us-east-1/s3/aws4_request, SignedHeaders=x;a, "
                     "Signature=" + SIG,
    "query": "list-type=2&prefix=dir%20one%2F&delimiter=%2F&encoding-type=url",
    "query-raw": "prefix=a/b c&b=&b=1&uploads&&%E1%88%B4=bar&x=%zz",
    "path": "/bkt/dir%20one/na%C3%AFve//../x/./y",
    "chunked": aws_chunks(b"hello", b"world" * 20),
    "chunked-empty": aws_chunks(),
    "chunked-trailing": aws_chunks(b"x") + b"junk",
    "chunked-bad-size": b"zz;chunk-signature=" + SIG.encode() + b"\r\nx\r\n",
    "chunked-cut": aws_chunks(b"hello")[:30],
}
for name, data in SIGV4.items():
    write("sigv4", name, data)
# ---- token endpoint answers (first byte: bit 0 GitHub, bits 1-3 status index
# into 200 201 204 400 401 403 500 302) -------------------------------------
TOKEN = {
    "oauth-ok": b"\x00" + b'{"access_token":"at-1","token_type":"Bearer","expires_in":3600}',
    "oauth-refresh": b"\x00" + b'{"access_token":"at-2","token_type":"bearer","expires_in":"60","refresh_token":"rt-2"}',
    "oauth-no-expiry": b"\x00" + b'{"access_token":"at-3"}',
    "oauth-mac": b"\x00" + b'{"access_token":"at-4","token_type":"mac"}',
    "oauth-control": b"\x00" + b'{"access_token":"a\\nb"}',
    "oauth-dup": b"\x00" + b'{"access_token":"a","access_token":"b"}',
    "oauth-error": b"\x06" + b'{"error":"invalid_grant","error_description":"the refresh token was revoked"}',
    "oauth-error-long": b"\x08" + b'{"error":"' + b"x" * 100 + b'"}',
    "oauth-500-html": b"\x0c" + b"<html>oops</html>",
    "github-ok": b"\x03" + b'{"token":"ghs_abc","expires_at":"2023-11-14T23:13:20Z","permissions":{"contents":"read"}}',
    "github-expired": b"\x03" + b'{"token":"ghs_abc","expires_at":"2000-01-01T00:00:00Z"}',
    "github-bad-time": b"\x03" + b'{"token":"ghs_abc","expires_at":"tomorrow"}',
    "github-403": b"\x0b" + b'{"message":"Resource not accessible by integration"}',
}
for name, data in TOKEN.items():
    write("token_response", name, data)


# ---- response redaction (fuzz_redact.c) ---------------------------------
def redact_seed(patterns, cuts, text, secret=None):
    """Mode 0: patterns over "abcd" (each with a replacement length);
    mode 1: one secret over "ab/+=%&A0". Text bytes below 200 are folded
    into the alphabet by the harness, so they are written as indexes."""
    out = bytearray()
    if secret is None:
        out.append(((len(patterns) - 1) << 1) | 0)
        for pat, rl in patterns:
            out.append(len(pat) - 1)
            out += bytes("abcd".index(ch) for ch in pat)
            out.append(rl - 1)
        alphabet = "abcd"
    else:
        out.append(1)
        out.append(len(secret) - 1)
        out += bytes("ab/+=%&A0".index(ch) for ch in secret)
        alphabet = "ab/+=%&A0YWIvKz2FBD3"
    out.append(len(cuts))
    out += bytes(cuts)
    out += bytes(alphabet.index(ch) for ch in text)
    return bytes(out)


REDACT = {
    "overlap": redact_seed([("abc", 1), ("bcd", 2), ("abcd", 3)], [2, 5], "xabcdbcdabcabcd".replace("x", "a")),
    "prefix": redact_seed([("ab", 1), ("abab", 2)], [1, 3, 4], "abababa"),
    "cut-every": redact_seed([("dcba", 4)], [1, 2, 3, 4, 5, 6, 7, 8], "ddcbadcba"),
    "no-match": redact_seed([("aaaa", 1)], [3], "abababababab"),
    "secret-raw": redact_seed([], [4], "ab/+=ab/+=", secret="ab/+="),
    "secret-pct": redact_seed([], [3, 9], "ab%2F%2B%3D", secret="ab/+="),
    "secret-b64": redact_seed([], [2], "YWIvKz0=", secret="ab/+="),
}
for name, data in REDACT.items():
    write("redact", name, data)


if __name__ == "__main__":
    for h in sorted(os.listdir(os.path.join(HERE, "corpus"))):
        n = len([f for f in os.listdir(os.path.join(HERE, "corpus", h)) if f.startswith("seed-")])
        print("%-16s %d seeds" % (h, n))

