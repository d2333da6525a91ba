"""A small S3-style HTTPS server on loopback for the SigV4 tests. It checks
every request's signature with the REAL key: the expected signature is
computed by botocore's own signer over the request as received (method,
target, the headers named in SignedHeaders), and for aws-chunked uploads
every chunk signature is checked too, chained from the seed. A request
whose signature does not match gets 403 SignatureDoesNotMatch.

Objects live in memory: PutObject, GetObject, ListObjectsV2 (prefix,
delimiter, encoding-type=url) and multipart uploads, path-style addressing.
"""

import base64
import hashlib
import hmac
import http.server
import socketserver
import ssl
import sys
import threading
import urllib.parse
import uuid
from xml.sax.saxutils import escape

from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def signing_key(secret, date, region, service):
    k = ("AWS4" + secret).encode()
    for m in (date, region, service, "aws4_request"):
        k = hmac.new(k, m.encode(), hashlib.sha256).digest()
    return k


def chunk_signature(key, amz_date, scope, prev, data):
    sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", amz_date, scope, prev, EMPTY_SHA256,
                     hashlib.sha256(data).hexdigest()])
    return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()


def parse_authorization(v):
    alg, rest = v.split(" ", 1)
    fields = dict(p.strip().split("=", 1) for p in rest.split(","))
    key_id, date, region, service, term = fields["Credential"].split("/")
    return {"alg": alg, "key_id": key_id, "date": date, "region": region, "service": service,
            "signed": fields["SignedHeaders"].split(";"), "signature": fields["Signature"]}


class SignatureError(Exception):
    pass


class S3State:
    def __init__(self, key_id, secret, token):
        self.key_id, self.secret, self.token = key_id, secret, token
        self.objects = {}  # (bucket, key) -> bytes
        self.uploads = {}  # upload id -> {part number: bytes}
        self.encodings = {}  # (bucket, key) -> Content-Encoding given at PUT, or None
        self.log = []  # (method, target, payload mode, chunks checked)
        self.errors = []
        self.heads = []  # (method, target, [(name, value)]) as received, signed or not
        self.lock = threading.Lock()

    def expected_signature(self, method, target, headers, auth, amz_date, body):
        """botocore's SigV4 signature of the request as received, with the real key
        (S3's rules for s3, the general ones, body hashed, for other services)."""
        host = next(v for n, v in headers if n.lower() == "host")
        picked = {}
        for n, v in headers:
            if n.lower() in auth["signed"]:
                picked[n] = v if n not in picked else picked[n] + "," + v
        req = AWSRequest(method=method, url=f"https://{host}{target}", headers=picked, data=body)
        req.context["timestamp"] = amz_date
        cls = S3SigV4Auth if auth["service"] == "s3" else SigV4Auth
        signer = cls(Credentials(self.key_id, self.secret, self.token), auth["service"], auth["region"])
        cr = signer.canonical_request(req)
        sts = signer.string_to_sign(req, cr)
        return signer.signature(sts, req)

    def verify(self, method, target, headers, body):
        """Checks the head's signature and the payload; returns the body decoded
        (aws-chunked taken apart) and how it was signed."""
        hd = {n.lower(): v for n, v in headers}
        if "authorization" not in hd:
            raise SignatureError("no Authorization")
        auth = parse_authorization(hd["authorization"])
        if auth["alg"] != "AWS4-HMAC-SHA256" or auth["key_id"] != self.key_id:
            raise SignatureError("wrong algorithm or key id " + auth["key_id"])
        if self.token is not None:
            if hd.get("x-amz-security-token") != self.token or "x-amz-security-token" not in auth["signed"]:
                raise SignatureError("session token missing, wrong or unsigned")
        elif "x-amz-security-token" in hd:
            raise SignatureError("unexpected session token")
        amz_date = hd["x-amz-date"]
        want = self.expected_signature(method, target, headers, auth, amz_date, body)
        if not hmac.compare_digest(want, auth["signature"]):
            raise SignatureError("head signature does not match")
        mode = hd.get("x-amz-content-sha256")
        if mode == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD":
            scope = f"{auth['date']}/{auth['region']}/{auth['service']}/aws4_request"
            key = signing_key(self.secret, auth["date"], auth["region"], auth["service"])
            data, chunks = self.signed_chunks(body, key, amz_date, scope, auth["signature"])
            if int(hd["x-amz-decoded-content-length"]) != len(data):
                raise SignatureError("decoded length differs")
            return data, mode, chunks
        if mode == "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
            return self.unsigned_chunks(body, hd), mode, 0
        if mode is None and auth["service"] != "s3":
            return body, "body hashed by the signer", 0
        if mode != "UNSIGNED-PAYLOAD" and mode != hashlib.sha256(body).hexdigest():
            raise SignatureError("payload hash does not match the body")
        return body, mode, 0

    @staticmethod
    def signed_chunks(body, key, amz_date, scope, prev):
        out, i, n = b"", 0, 0
        while True:
            eol = body.index(b"\r\n", i)
            size_hex, ext = body[i:eol].split(b";", 1)
            if not ext.startswith(b"chunk-signature="):
                raise SignatureError("chunk without signature")
            size = int(size_hex, 16)
            data = body[eol + 2:eol + 2 + size]
            sig = chunk_signature(key, amz_date, scope, prev, data)
            if not hmac.compare_digest(sig, ext[16:].decode()):
                raise SignatureError(f"chunk {n} signature does not match")
            n += 1
            prev = sig
            i = eol + 2 + size
            if body[i:i + 2] != b"\r\n":
                raise SignatureError("chunk not followed by CRLF")
            i += 2
            out += data
            if size == 0:
                if i != len(body):
                    raise SignatureError("bytes after the final chunk")
                return out, n

    @staticmethod
    def unsigned_chunks(body, hd):
        out, i = b"", 0
        while True:
            eol = body.index(b"\r\n", i)
            size = int(body[i:eol].split(b";")[0], 16)
            if size == 0:
                trailer = body[eol + 2:].decode()
                break
            out += body[eol + 2:eol + 2 + size]
            i = eol + 2 + size + 2
        name = hd.get("x-amz-trailer", "").lower()
        got = dict(l.split(":", 1) for l in trailer.split("\r\n") if l)
        if name == "x-amz-checksum-sha256":
            if got.get(name) != base64.b64encode(hashlib.sha256(out).digest()).decode():
                raise SignatureError("trailer checksum does not match")
        return out


def _xml(tag, inner):
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{tag} xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"{inner}</{tag}>").encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.read(2)
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def _send(self, status, body=b"", headers=()):
        self.send_response(status)
        for n, v in headers:
            self.send_header(n, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        st = self.server.state
        raw = self._body()
        headers = list(self.headers.items())
        with st.lock:
            st.heads.append((self.command, self.path, headers))
        try:
            body, mode, chunks = st.verify(self.command, self.path, headers, raw)
        except (SignatureError, KeyError, ValueError) as e:
            with st.lock:
                st.errors.append(f"{self.command} {self.path}: {e}")
            self._send(403, _xml("Error", f"<Code>SignatureDoesNotMatch</Code><Message>{escape(str(e))}</Message>"))
            return
        with st.lock:
            st.log.append((self.command, self.path, mode, chunks))
        if mode == "body hashed by the signer":  # STS GetCallerIdentity, for other services
            self._send(200, b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                       b"<GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/kw</Arn><UserId>AIDKW</UserId>"
                       b"<Account>123456789012</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>1"
                       b"</RequestId></ResponseMetadata></GetCallerIdentityResponse>")
            return
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        parts = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)
        bucket, key = parts[0], parts[1] if len(parts) > 1 else ""
        if self.command == "PUT" and "uploadId" in q:
            with st.lock:
                st.uploads[q["uploadId"][0]][int(q["partNumber"][0])] = body
            self._send(200, headers=[("ETag", '"%s"' % hashlib.md5(body).hexdigest())])
        elif self.command == "PUT":
            with st.lock:
                st.objects[(bucket, key)] = body
                # stored with the object and served with it, as S3 does
                # (S3 keeps the codings but aws-chunked, the upload's own)
                enc = [v.strip() for v in self.headers.get("Content-Encoding", "").split(",")]
                st.encodings[(bucket, key)] = ", ".join(v for v in enc if v and v != "aws-chunked") or None
            self._send(200, headers=[("ETag", '"%s"' % hashlib.md5(body).hexdigest())])
        elif self.command == "POST" and "uploads" in q:
            uid = uuid.uuid4().hex
            with st.lock:
                st.uploads[uid] = {}
            self._send(200, _xml("InitiateMultipartUploadResult", f"<Bucket>{escape(bucket)}</Bucket><Key>"
                                 f"{escape(key)}</Key><UploadId>{uid}</UploadId>"))
        elif self.command == "POST" and "uploadId" in q:
            with st.lock:
                parts_ = st.uploads.pop(q["uploadId"][0])
                st.objects[(bucket, key)] = b"".join(parts_[k] for k in sorted(parts_))
            self._send(200, _xml("CompleteMultipartUploadResult", f"<Bucket>{escape(bucket)}</Bucket><Key>"
                                 f"{escape(key)}</Key><ETag>\"x\"</ETag>"))
        elif self.command in ("GET", "HEAD") and key:
            with st.lock:
                data = st.objects.get((bucket, key))
            rng = self.headers.get("Range", "")
            enc = st.encodings.get((bucket, key))
            extra = [("Content-Encoding", enc)] if enc else []
            if data is None:
                self._send(404, _xml("Error", "<Code>NoSuchKey</Code>"))
            elif rng.startswith("bytes=") and "," not in rng:
                # one range, as S3 serves it (what ranged downloads use)
                first, _, last = rng[6:].partition("-")
                first, last = int(first), min(int(last or len(data) - 1), len(data) - 1)
                self._send(206, data[first:last + 1], [("Content-Range", f"bytes {first}-{last}/{len(data)}"),
                                                       ("ETag", '"%s"' % hashlib.md5(data).hexdigest())] + extra)
            else:
                self._send(200, data, [("ETag", '"%s"' % hashlib.md5(data).hexdigest())] + extra)
        elif self.command == "GET":
            self._list(bucket, q)
        else:
            self._send(400, _xml("Error", "<Code>NotImplemented</Code>"))

    def _list(self, bucket, q):
        st = self.server.state
        prefix = q.get("prefix", [""])[0]
        delim = q.get("delimiter", [""])[0]
        url = q.get("encoding-type", [""])[0] == "url"
        enc = (lambda s: urllib.parse.quote(s, safe="/")) if url else escape
        keys, prefixes = [], set()
        with st.lock:
            names = sorted(k for b, k in st.objects if b == bucket and k.startswith(prefix))
        for k in names:
            rest = k[len(prefix):]
            if delim and delim in rest:
                prefixes.add(prefix + rest.split(delim, 1)[0] + delim)
            else:
                keys.append(k)
        inner = f"<Name>{escape(bucket)}</Name><Prefix>{enc(prefix)}</Prefix><KeyCount>{len(keys) + len(prefixes)}" \
                f"</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
        if delim:
            inner += f"<Delimiter>{enc(delim)}</Delimiter>"
        if url:
            inner += "<EncodingType>url</EncodingType>"
        for k in keys:
            inner += f"<Contents><Key>{enc(k)}</Key><Size>1</Size><ETag>\"x\"</ETag></Contents>"
        for p in sorted(prefixes):
            inner += f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>"
        self._send(200, _xml("ListBucketResult", inner))

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


class S3Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self, certs, key_id, secret, token=None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = S3State(key_id, secret, token)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(certs / "server.pem"), str(certs / "server.key"))
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        self.port = self.server_address[1]
        self.ca_file = str(certs / "ca.pem")
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        # keyward closes the connection on an upload whose framing it
        # refuses, before this server's 403 can be sent: that is the
        # tested behaviour, not a fault of the server. Anything else is
        # printed as socketserver would.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)

    def close(self):
        self.shutdown()
        self.server_close()
