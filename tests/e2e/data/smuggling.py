"""The request smuggling and confusion corpus (test_smuggling_corpus.py).

Each row is a raw byte string sent as is on one client connection to
`keyward proxy`, with what must come of it. Placeholders in the bytes:

  {T}         the request target for /api/x (credentialed route): an
              absolute-form URL on plain HTTP, a path inside a tunnel
  {T:/p}      the same for another path /p
  {H}         the authority (host:port) of the test upstream
  {OT:/p}     a target on the *other* host (o.api.test, a public route of
              its own upstream); inside a tunnel, an absolute-form URL
  {OH}        the other host's authority

Expected outcome keys:

  statuses    the status of each answer on the connection, in order
  check       the "check" of keyward's JSON refusal (for the last answer)
  forwarded   [(method, path, body)] the upstream(s) must receive, in
              order; each arrives as exactly one request in keyward's own
              framing, nothing else arrives (a partial request only where
              `partial` says so)
  partial     a body refused mid-stream: the upstream may have seen the
              head and part of the body of one more request, never its end
  opaque      bytes the upstream must receive after a 101 (WebSocket data)
  eof         the client half-closes after sending (the request is cut)
  modes       which of "http" and "tunnel" the row runs in (default both)
  tunnel      overrides of the above for the tunnel mode

The rule every row is checked against (see the test): refused (error status,
an audit record saying so, nothing further reaches the upstream, the
connection closed) or forwarded as exactly one request per answer, whose
method and path are the ones the audit record says the policy checked, with
the credential on /api/ requests only.
"""

CL = b"Content-Length"
TE = b"Transfer-Encoding"


def post(headers, body, close=True):
    h = b"POST {T} HTTP/1.1\r\nHost: {H}\r\n" + b"".join(x + b"\r\n" for x in headers)
    if close:
        h += b"Connection: close\r\n"
    return h + b"\r\n" + body


def get(extra=b"", target=b"{T}", host=b"{H}", close=True, version=b"HTTP/1.1"):
    h = b"GET " + target + b" " + version + b"\r\n"
    if host is not None:
        h += b"Host: " + host + b"\r\n"
    h += extra
    if close:
        h += b"Connection: close\r\n"
    return h + b"\r\n"


CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"
MALFORMED = dict(statuses=[400], check="malformed", forwarded=[])
HELLO = dict(statuses=[200], forwarded=[("POST", "/api/x", b"hello")])
BODY_REFUSED = dict(statuses=[400], check="malformed", forwarded=[], partial=True)
TOO_LARGE = dict(statuses=[431], check="limit", forwarded=[])

ROWS = {
    # ---- Content-Length and Transfer-Encoding together ----
    "cl-te": dict(raw=post([CL + b": 6", TE + b": chunked"], b"0\r\n\r\nG"), **MALFORMED),
    "te-cl": dict(raw=post([TE + b": chunked", CL + b": 6"], b"0\r\n\r\nG"), **MALFORMED),
    "cl-te-zero": dict(raw=post([CL + b": 0", TE + b": chunked"], CHUNKED_HELLO), **MALFORMED),
    # ---- duplicate and conflicting Content-Length ----
    "cl-dup-same": dict(raw=post([CL + b": 5", CL + b": 5"], b"hello"), **MALFORMED),
    "cl-dup-differ": dict(raw=post([CL + b": 5", CL + b": 6"], b"hello!"), **MALFORMED),
    "cl-list": dict(raw=post([CL + b": 5, 5"], b"hello"), **MALFORMED),
    "cl-lower-dup": dict(raw=post([CL + b": 5", b"content-length: 0"], b"hello"), **MALFORMED),
    "cl-plus": dict(raw=post([CL + b": +5"], b"hello"), **MALFORMED),
    "cl-minus": dict(raw=post([CL + b": -5"], b"hello"), **MALFORMED),
    "cl-hex": dict(raw=post([CL + b": 0x5"], b"hello"), **MALFORMED),
    "cl-space-inside": dict(raw=post([CL + b": 1 2"], b"hello"), **MALFORMED),
    "cl-overflow": dict(raw=post([CL + b": 18446744073709551616"], b"hello"), **MALFORMED),
    "cl-empty": dict(raw=post([CL + b":"], b"hello"), **MALFORMED),
    "cl-plain": dict(raw=post([CL + b": 5"], b"hello"), **HELLO),
    "cl-leading-zeros": dict(raw=post([CL + b": 0005"], b"hello"), **HELLO),
    # ---- obfuscated Transfer-Encoding ----
    "te-chunked-identity": dict(raw=post([TE + b": chunked, identity"], CHUNKED_HELLO), **MALFORMED),
    "te-identity-chunked": dict(raw=post([TE + b": identity, chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-gzip-chunked": dict(raw=post([TE + b": gzip, chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-xchunked": dict(raw=post([TE + b": xchunked"], CHUNKED_HELLO), **MALFORMED),
    "te-chunkedx": dict(raw=post([TE + b": chunkedx"], CHUNKED_HELLO), **MALFORMED),
    "te-quoted": dict(raw=post([TE + b': "chunked"'], CHUNKED_HELLO), **MALFORMED),
    "te-twice": dict(raw=post([TE + b": chunked", TE + b": chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-chunked-comma-chunked": dict(raw=post([TE + b": chunked, chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-name-leading-space": dict(raw=post([b" " + TE + b": chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-space-before-colon": dict(raw=post([TE + b" : chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-tab-before-colon": dict(raw=post([TE + b"\t: chunked"], CHUNKED_HELLO), **MALFORMED),
    "te-vtab": dict(raw=post([TE + b":\x0bchunked"], CHUNKED_HELLO), **MALFORMED),
    "te-formfeed": dict(raw=post([TE + b":\x0cchunked"], CHUNKED_HELLO), **MALFORMED),
    "te-nul": dict(raw=post([TE + b": chunked\x00"], CHUNKED_HELLO), **MALFORMED),
    "te-underscore-name": dict(raw=post([b"Transfer_Encoding: chunked", CL + b": 5"], b"hello"),
                               statuses=[200], forwarded=[("POST", "/api/x", b"hello")]),
    "te-leading-space": dict(raw=post([TE + b":  chunked"], CHUNKED_HELLO), **HELLO),
    "te-tab": dict(raw=post([TE + b":\tchunked"], CHUNKED_HELLO), **HELLO),
    # llhttp refuses trailing OWS in Transfer-Encoding: stricter than RFC
    # 9110 5.5 asks, and safe.
    "te-trailing-tab": dict(raw=post([TE + b": chunked\t"], CHUNKED_HELLO), **MALFORMED),
    "te-case": dict(raw=post([b"tRANSFER-eNCODING: ChUnKeD"], CHUNKED_HELLO), **HELLO),
    "te-in-http10": dict(raw=b"POST {T} HTTP/1.0\r\nHost: {H}\r\n" + TE + b": chunked\r\n\r\n" + CHUNKED_HELLO,
                         **MALFORMED),
    # ---- chunk-size tricks ----
    "chunk-overflow": dict(raw=post([TE + b": chunked"], b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
                           **BODY_REFUSED),
    "chunk-plus": dict(raw=post([TE + b": chunked"], b"+5\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-minus": dict(raw=post([TE + b": chunked"], b"-5\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-0x": dict(raw=post([TE + b": chunked"], b"0x5\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-space-inside": dict(raw=post([TE + b": chunked"], b"5 5\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-not-hex": dict(raw=post([TE + b": chunked"], b"g\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-empty-size": dict(raw=post([TE + b": chunked"], b"\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-data-too-long": dict(raw=post([TE + b": chunked"], b"5\r\nhelloXX\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-data-no-crlf": dict(raw=post([TE + b": chunked"], b"5\r\nhello0\r\n\r\n"), **BODY_REFUSED),
    "chunk-bare-lf": dict(raw=post([TE + b": chunked"], b"5\nhello\n0\n\n"), **BODY_REFUSED),
    "chunk-bare-cr": dict(raw=post([TE + b": chunked"], b"5\rhello\r0\r\r"), **BODY_REFUSED),
    # A CR ending a chunk-size line must be followed by LF: llhttp's default
    # (non-strict) build takes any byte there, which read this body as
    # "hello" where a strict reader refuses it.
    "chunk-size-cr-then-byte": dict(raw=post([TE + b": chunked"], b"5\rXhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-ext-bare-cr": dict(raw=post([TE + b": chunked"], b"5;a\rb\r\nhello\r\n0\r\n\r\n"),
                              **BODY_REFUSED),
    "chunk-ext-nul": dict(raw=post([TE + b": chunked"], b"5;a=\x00\r\nhello\r\n0\r\n\r\n"), **BODY_REFUSED),
    "chunk-ext": dict(raw=post([TE + b": chunked"], b"5;name=value\r\nhello\r\n0;last\r\n\r\n"), **HELLO),
    "chunk-ext-quoted": dict(raw=post([TE + b": chunked"], b'5;n="v;x"\r\nhello\r\n0\r\n\r\n'), **HELLO),
    # llhttp refuses a quoted-pair in a chunk extension (RFC 9112 7.1.1
    # allows it): refused, never misread.
    "chunk-ext-quoted-pair": dict(raw=post([TE + b": chunked"], b'5;n="v\\"x"\r\nhello\r\n0\r\n\r\n'),
                                  **BODY_REFUSED),
    "chunk-leading-zeros": dict(raw=post([TE + b": chunked"], b"0005\r\nhello\r\n000\r\n\r\n"), **HELLO),
    "chunk-upper-hex": dict(raw=post([TE + b": chunked"], b"A\r\nhellohello\r\n0\r\n\r\n"),
                            statuses=[200], forwarded=[("POST", "/api/x", b"hellohello")]),
    "chunk-trailer": dict(raw=post([TE + b": chunked"], b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), **HELLO),
    "chunk-trailer-smuggled-request": dict(
        raw=post([TE + b": chunked"], b"5\r\nhello\r\n0\r\n\r\nGET {T:/admin} HTTP/1.1\r\nHost: {H}\r\n\r\n",
                 close=False),
        statuses=[200, 403], check="path", forwarded=[("POST", "/api/x", b"hello")]),
    # The last chunk and its CRLF never come: the body is cut, the
    # upstream never sees its end.
    "chunk-missing-final-crlf": dict(raw=post([TE + b": chunked"], b"5\r\nhello\r\n0\r\n"), statuses=[None],
                                     forwarded=[], partial=True, eof=True),
    "chunk-missing-last-chunk": dict(raw=post([TE + b": chunked"], b"5\r\nhello\r\n"), statuses=[None],
                                     forwarded=[], partial=True, eof=True),
    "cl-short-body": dict(raw=post([CL + b": 10"], b"hello"), statuses=[None], forwarded=[], partial=True,
                          eof=True),
    # ---- bare CR, bare LF, obs-fold ----
    "bare-lf-all": dict(raw=b"GET {T} HTTP/1.1\nHost: {H}\n\n", **MALFORMED),
    "bare-lf-request-line": dict(raw=b"GET {T} HTTP/1.1\nHost: {H}\r\n\r\n", **MALFORMED),
    "bare-lf-in-value": dict(raw=get(b"X-A: a\nX-B: b\r\n"), **MALFORMED),
    "bare-lf-before-te": dict(raw=post([b"X-A: a\n" + TE + b": chunked"], CHUNKED_HELLO), **MALFORMED),
    "bare-lf-end": dict(raw=b"GET {T} HTTP/1.1\r\nHost: {H}\r\n\n", **MALFORMED),
    "bare-cr-request-line": dict(raw=b"GET {T} HTTP/1.1\rHost: {H}\r\n\r\n", **MALFORMED),
    "bare-cr-in-value": dict(raw=get(b"X-A: a\rX-B: b\r\n"), **MALFORMED),
    "bare-cr-before-cl": dict(raw=post([b"X-A: a\r" + CL + b": 5"], b"hello"), **MALFORMED),
    "obs-fold-space": dict(raw=get(b"X-A: a\r\n b\r\n"), **MALFORMED),
    "obs-fold-tab": dict(raw=get(b"X-A: a\r\n\tb\r\n"), **MALFORMED),
    "obs-fold-te": dict(raw=post([TE + b":", b" chunked"], CHUNKED_HELLO), **MALFORMED),
    "obs-fold-host": dict(raw=b"GET {T} HTTP/1.1\r\nHost:\r\n {H}\r\nConnection: close\r\n\r\n", **MALFORMED),
    "leading-crlf": dict(raw=b"\r\n" + get(), **MALFORMED),
    # ---- NUL and control bytes ----
    "nul-in-name": dict(raw=get(b"X-\x00A: b\r\n"), **MALFORMED),
    "nul-in-value": dict(raw=get(b"X-A: b\x00c\r\n"), **MALFORMED),
    "nul-in-target": dict(raw=get(target=b"{T:/api/x\x00y}"), **MALFORMED),
    "nul-in-method": dict(raw=b"GE\x00T {T} HTTP/1.1\r\nHost: {H}\r\n\r\n", **MALFORMED),
    "esc-in-value": dict(raw=get(b"X-A: \x1b[31mred\r\n"), **MALFORMED),
    "del-in-value": dict(raw=get(b"X-A: b\x7fc\r\n"), **MALFORMED),
    "ctl-in-target": dict(raw=get(target=b"{T:/api/x\x01}"), **MALFORMED),
    "tab-in-target": dict(raw=get(target=b"{T:/api/x\ty}"), **MALFORMED),
    "ctl-in-name": dict(raw=get(b"X-\x01A: b\r\n"), **MALFORMED),
    "high-bit-in-name": dict(raw=get(b"X-\xe9: b\r\n"), **MALFORMED),
    "space-in-name": dict(raw=get(b"X A: b\r\n"), **MALFORMED),
    # ---- very long lines ----
    "long-request-line": dict(raw=get(target=b"{T:/api/" + b"a" * 70000 + b"}"), **TOO_LARGE),
    "long-header": dict(raw=get(b"X-A: " + b"a" * 70000 + b"\r\n"), **TOO_LARGE),
    "long-header-name": dict(raw=get(b"X-" + b"a" * 70000 + b": b\r\n"), **TOO_LARGE),
    "long-method": dict(raw=b"G" * 70000 + b" {T} HTTP/1.1\r\nHost: {H}\r\n\r\n", **TOO_LARGE),
    # A chunk-size line is parsed as it streams and never buffered: long
    # runs of leading zeros or of extension are read in bounded memory and
    # re-chunked, so the upstream sees "5" and no extension.
    "long-chunk-zeros": dict(raw=post([TE + b": chunked"], b"0" * 100000 + b"5\r\nhello\r\n0\r\n\r\n"), **HELLO),
    "long-chunk-ext": dict(raw=post([TE + b": chunked"], b"5;" + b"e" * 100000 + b"\r\nhello\r\n0\r\n\r\n"),
                           **HELLO),
    "long-trailer": dict(raw=post([TE + b": chunked"], b"5\r\nhello\r\n0\r\nX-T: " + b"t" * 100000 + b"\r\n\r\n"),
                         **HELLO),
    # ---- absolute-form versus Host ----
    "host-other-host": dict(raw=get(host=b"{OH}"), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-other-port": dict(raw=get(host=b"api.test:1"), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-twice": dict(raw=get(b"Host: {H}\r\n"), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-twice-other": dict(raw=get(b"Host: {OH}\r\n"), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-empty": dict(raw=get(host=b""), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-missing-http11": dict(raw=get(host=None), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-userinfo": dict(raw=get(host=b"x@{H}"), statuses=[403], check="host-mismatch", forwarded=[]),
    "host-upper-case": dict(raw=get(host=b"API.TEST:{PORT}"), statuses=[200], forwarded=[("GET", "/api/x", b"")]),
    "target-other-host-header-ours": dict(raw=get(target=b"{OT:/public/x}"), statuses=[403], check="host-mismatch",
                                          forwarded=[]),
    # ---- pipelining: each request is checked on its own ----
    "pipeline-denied-path": dict(raw=get(close=False) + get(target=b"{T:/admin}"), statuses=[200, 403],
                                 check="path", forwarded=[("GET", "/api/x", b"")]),
    "pipeline-public-route": dict(raw=get(close=False) + get(target=b"{T:/public/y}"), statuses=[200, 200],
                                  forwarded=[("GET", "/api/x", b""), ("GET", "/public/y", b"")]),
    "pipeline-other-host": dict(
        raw=get(close=False) + get(target=b"{OT:/public/o}", host=b"{OH}"), statuses=[200, 200],
        forwarded=[("GET", "/api/x", b""), ("GET", "o.api.test/public/o", b"")],
        tunnel=dict(statuses=[200, 403], check="host-mismatch", forwarded=[("GET", "/api/x", b"")])),
    "pipeline-then-malformed": dict(raw=get(close=False) + b"GET {T} HTTP/1.1\r\nHost: {H}\r\nX: a\nb\r\n\r\n",
                                    statuses=[200, 400], check="malformed", forwarded=[("GET", "/api/x", b"")]),
    "pipeline-body-then-denied": dict(
        raw=post([CL + b": 5"], b"hello", close=False) + get(target=b"{T:/admin}"), statuses=[200, 403],
        check="path", forwarded=[("POST", "/api/x", b"hello")]),
    "pipeline-three": dict(
        raw=get(close=False) + get(target=b"{T:/api/y}", close=False) + get(target=b"{T:/api/z}"),
        statuses=[200, 200, 200],
        forwarded=[("GET", "/api/x", b""), ("GET", "/api/y", b""), ("GET", "/api/z", b"")]),
    "pipeline-connect-after": dict(raw=get(close=False) + b"CONNECT {OH} HTTP/1.1\r\nHost: {OH}\r\n\r\n",
                                   modes=("tunnel",), statuses=[200, 400], check="malformed",
                                   forwarded=[("GET", "/api/x", b"")]),
    "head-then-body-bytes": dict(raw=get(b"Content-Length: 0\r\n", close=False) + b"GET {T:/admin} HTTP/1.1\r\n"
                                 b"Host: {H}\r\n\r\n", statuses=[200, 403], check="path",
                                 forwarded=[("GET", "/api/x", b"")]),
    # ---- after an Upgrade ----
    # The upstream switches (101): what follows is WebSocket data, relayed
    # as is, never parsed as a request and never given the credential.
    "upgrade-ws-then-bytes": dict(
        raw=get(b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", target=b"{T:/ws}", close=False)
        + b"GET {T:/admin} HTTP/1.1\r\nHost: {H}\r\n\r\n",
        statuses=[101], forwarded=[("GET", "/ws", b"")], opaque=b"GET {T:/admin} HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    # The upstream declines the upgrade (200): keyward answers and closes
    # the connection, so the bytes that followed are never read, let alone
    # forwarded.
    "upgrade-declined-then-request": dict(
        raw=get(b"Upgrade: websocket\r\nConnection: Upgrade\r\n", close=False) + get(target=b"{T:/admin}"),
        statuses=[200], forwarded=[("GET", "/api/x", b"")]),
    "upgrade-h2c": dict(raw=get(b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
                                close=False) + get(target=b"{T:/admin}"),
                        statuses=[403], check="upgrade", forwarded=[]),
    "upgrade-ws-denied-path": dict(raw=get(b"Upgrade: websocket\r\nConnection: Upgrade\r\n", target=b"{T:/admin}",
                                           close=False) + get(), statuses=[403], check="path", forwarded=[]),
    # ---- HTTP versions ----
    "http10": dict(raw=b"GET {T} HTTP/1.0\r\n\r\n", statuses=[200], forwarded=[("GET", "/api/x", b"")]),
    "http10-with-body": dict(raw=b"POST {T} HTTP/1.0\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello", **HELLO),
    # A credentialed route's response to HTTP/1.0 is re-framed by closing
    # the connection (redaction changes its length): the pipelined second
    # request is never read, let alone forwarded.
    "http10-keep-alive-pipeline": dict(
        raw=b"GET {T} HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET {T:/admin} HTTP/1.0\r\n\r\n",
        statuses=[200], forwarded=[("GET", "/api/x", b"")]),
    "http09": dict(raw=b"GET {T}\r\n\r\n", **MALFORMED),
    "http09-no-blank": dict(raw=b"GET {T}\r\n", statuses=[None], forwarded=[], eof=True),
    "http2-preface": dict(raw=b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", **MALFORMED),
    "http12": dict(raw=get(version=b"HTTP/1.2"), **MALFORMED),
    "http-lower": dict(raw=get(version=b"http/1.1"), **MALFORMED),
    "version-leading-zero": dict(raw=get(version=b"HTTP/01.1"), **MALFORMED),
    "no-version-space": dict(raw=b"GET {T}HTTP/1.1\r\nHost: {H}\r\n\r\n", **MALFORMED),
}

# Rows that also run inside an intercepted CONNECT tunnel (TLS): a
# representative subset of every family above.
TUNNEL = {
    "cl-te", "te-cl", "cl-dup-differ", "cl-plus", "te-chunked-identity", "te-xchunked", "te-space-before-colon",
    "te-vtab", "te-case", "te-in-http10", "chunk-overflow", "chunk-0x", "chunk-minus", "chunk-ext",
    "chunk-bare-lf", "chunk-size-cr-then-byte", "chunk-trailer-smuggled-request", "chunk-missing-final-crlf", "bare-lf-all",
    "bare-cr-in-value", "obs-fold-te", "nul-in-value", "nul-in-target", "esc-in-value", "long-request-line",
    "long-header", "long-chunk-ext", "host-other-host", "host-other-port", "host-twice", "host-missing-http11",
    "target-other-host-header-ours", "pipeline-denied-path", "pipeline-public-route", "pipeline-other-host",
    "pipeline-then-malformed", "pipeline-connect-after", "upgrade-ws-then-bytes", "upgrade-declined-then-request",
    "upgrade-h2c", "http10", "http09", "http2-preface", "cl-short-body",
}
