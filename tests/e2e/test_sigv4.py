"""kind: aws end to end. botocore signs with placeholder keys; keyward checks
the placeholder key id and re-signs with the real key; a loopback S3-style
server (s3server.py) checks every signature, chunk signatures included, with
the real key. The real secret key and session token must appear in no
output, audit record or response."""

import datetime
import gzip
import hashlib
import hmac
import json
import os

import pytest

botocore = pytest.importorskip("botocore")
import botocore.exceptions  # noqa: E402
import botocore.session  # noqa: E402
from botocore.auth import S3SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

from kwtest import HttpConn, open_tunnel, raw_request, status_of  # noqa: E402
from s3server import S3Server, chunk_signature, signing_key  # noqa: E402

REAL_KEY_ID = "AKIAKWTESTREALKEY7F3A"
REAL_SECRET = "kwtest-REAL-AWS-SECRET/7f3a+9c1e5b2d0d4e8b6a"
REAL_TOKEN = "kwtest-REAL-SESSION-TOKEN-0d4e8b6a2c9f//x+y=="
PH_KEY_ID = "AKIAKEYWARDPLACEHOLDER"
PH_SECRET = "kw-placeholder-aws-secret-0123456789abcdef"
PH_TOKEN = "kw-placeholder-aws-session-token-0123456789"

REAL_ENV = {"REAL_AWS_KEY_ID": REAL_KEY_ID, "REAL_AWS_SECRET": REAL_SECRET, "REAL_AWS_TOKEN": REAL_TOKEN}


def aws_policy(s3, token=True, extra=""):
    tok = (f"\n    session_token: {{from: env:REAL_AWS_TOKEN, env: AWS_SESSION_TOKEN, placeholder: {PH_TOKEN}}}"
           if token else "")
    return f"""version: 1
credentials:
  s3:
    kind: aws
    access_key_id: {{from: env:REAL_AWS_KEY_ID, env: AWS_ACCESS_KEY_ID, placeholder: {PH_KEY_ID}}}
    secret_access_key: {{from: env:REAL_AWS_SECRET, env: AWS_SECRET_ACCESS_KEY, placeholder: {PH_SECRET}}}{tok}
routes:
  - host: api.test
    port: {s3.port}
    credential: s3
    upstream_ca: {s3.ca_file}
    allow_private: true
{extra}"""


@pytest.fixture
def s3(certs):
    srv = S3Server(certs, REAL_KEY_ID, REAL_SECRET, REAL_TOKEN)
    yield srv
    srv.close()


def client(proxy, s3, key_id=PH_KEY_ID, signature_version=None, **s3cfg):
    sess = botocore.session.Session()
    cfg = Config(proxies={"https": proxy.url}, s3=dict(addressing_style="path", **s3cfg),
                 retries={"max_attempts": 1}, region_name="us-east-1", signature_version=signature_version)
    return sess.create_client("s3", endpoint_url=f"https://api.test:{s3.port}", aws_access_key_id=key_id,
                              aws_secret_access_key=PH_SECRET, aws_session_token=PH_TOKEN,
                              verify=str(proxy.ca), config=cfg)


def assert_no_real_secrets(proxy, *blobs):
    texts = [proxy.stderr, proxy.audit.read_text()] + [b if isinstance(b, str) else repr(b) for b in blobs]
    for t in texts:
        assert REAL_SECRET not in t
        assert REAL_TOKEN not in t
        assert REAL_KEY_ID not in t


def test_botocore_s3_get_put_list_multipart(proxy_factory, s3):
    px = proxy_factory(aws_policy(s3), env=REAL_ENV)
    c = client(px, s3)
    keys = ["plain.txt", "dir one/naïve file €.txt", "dir one/sub/deep key+x=y&z.bin", "dir two/a"]
    seen = []
    for i, k in enumerate(keys):
        r = c.put_object(Bucket="bkt", Key=k, Body=f"body {i}".encode())
        seen.append(r)
    for i, k in enumerate(keys):
        r = c.get_object(Bucket="bkt", Key=k)
        assert r["Body"].read() == f"body {i}".encode()
    # the payload hashed and signed, not UNSIGNED-PAYLOAD
    c2 = client(px, s3, payload_signing_enabled=True)
    c2.put_object(Bucket="bkt", Key="dir one/signed", Body=b"signed payload")
    assert c2.get_object(Bucket="bkt", Key="dir one/signed")["Body"].read() == b"signed payload"
    # aws-chunked with an unsigned checksum trailer
    c.put_object(Bucket="bkt", Key="dir two/checksummed", Body=b"trailer" * 1000, ChecksumAlgorithm="SHA256")
    assert c.get_object(Bucket="bkt", Key="dir two/checksummed")["Body"].read() == b"trailer" * 1000

    lst = c.list_objects_v2(Bucket="bkt", Prefix="dir one/", Delimiter="/")
    assert [o["Key"] for o in lst.get("Contents", [])] == ["dir one/naïve file €.txt", "dir one/signed"]
    assert [p["Prefix"] for p in lst["CommonPrefixes"]] == ["dir one/sub/"]
    lst = c.list_objects_v2(Bucket="bkt", Delimiter="/")
    assert sorted(p["Prefix"] for p in lst["CommonPrefixes"]) == ["dir one/", "dir two/"]

    mp = c.create_multipart_upload(Bucket="bkt", Key="big €/multi part")
    parts = []
    for n, data in enumerate([b"a" * 70000, b"b" * 1234], start=1):
        r = c.upload_part(Bucket="bkt", Key="big €/multi part", UploadId=mp["UploadId"], PartNumber=n, Body=data)
        parts.append({"ETag": r["ETag"], "PartNumber": n})
    c.complete_multipart_upload(Bucket="bkt", Key="big €/multi part", UploadId=mp["UploadId"],
                                MultipartUpload={"Parts": parts})
    assert c.get_object(Bucket="bkt", Key="big €/multi part")["Body"].read() == b"a" * 70000 + b"b" * 1234
    # ranged GETs (how S3 clients fetch large objects) pass on a SigV4 route:
    # Range is signed by the client, and the 206 reaches it
    r = c.get_object(Bucket="bkt", Key="big €/multi part", Range="bytes=69998-70001")
    assert r["ContentRange"] == "bytes 69998-70001/71234" and r["Body"].read() == b"aabb"
    # but not of an object stored gzip-encoded: keyward would decode the
    # part (to scan it) under offsets that count compressed bytes
    gz = gzip.compress(b"stored compressed " * 100)
    c.put_object(Bucket="bkt", Key="gz", Body=gz, ContentEncoding="gzip")
    assert c.get_object(Bucket="bkt", Key="gz")["Body"].read() == b"stored compressed " * 100
    with pytest.raises(botocore.exceptions.ClientError) as e:
        c.get_object(Bucket="bkt", Key="gz", Range="bytes=10-19")
    assert "502" in str(e.value)

    assert s3.state.errors == []
    modes = {m for _, _, m, _ in s3.state.log}
    assert "UNSIGNED-PAYLOAD" in modes
    assert "STREAMING-UNSIGNED-PAYLOAD-TRAILER" in modes
    assert hashlib.sha256(b"signed payload").hexdigest() in modes
    assert hashlib.sha256(b"").hexdigest() in modes
    reqs = px.requests()
    assert reqs and all(r["decision"] == ("error" if r["status"] == 502 else "allow") for r in reqs), reqs
    ranged = [r for r in reqs if r["status"] != 200]
    assert [r["status"] for r in ranged][:2] == [206, 502] and {r["status"] for r in ranged[2:]} <= {502}, ranged
    assert_no_real_secrets(px, seen, lst)


def signed_head(method, path, headers, amz_date, payload, key_id=PH_KEY_ID, secret=PH_SECRET, token=PH_TOKEN,
                host="api.test"):
    """A head signed the way an SDK signs it, with the placeholder keys."""
    req = AWSRequest(method=method, url=f"https://{host}{path}", headers=dict(headers))
    req.headers["X-Amz-Content-SHA256"] = payload
    req.headers["X-Amz-Date"] = amz_date
    if token:
        req.headers["X-Amz-Security-Token"] = token
    req.context["timestamp"] = amz_date
    signer = S3SigV4Auth(Credentials(key_id, secret, token), "s3", "us-east-1")
    cr = signer.canonical_request(req)
    sig = signer.signature(signer.string_to_sign(req, cr), req)
    signed = ";".join(signer.signed_headers(signer.headers_to_sign(req)).split(";"))
    date = amz_date[:8]
    req.headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{date}/us-east-1/s3/aws4_request, "
                                    f"SignedHeaders={signed}, Signature={sig}")
    return req.headers, sig


def streaming_body(chunks, amz_date, seed, secret=PH_SECRET):
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = signing_key(secret, amz_date[:8], "us-east-1", "s3")
    out, prev = b"", seed
    for data in chunks + [b""]:
        sig = chunk_signature(key, amz_date, scope, prev, data)
        out += b"%x;chunk-signature=%s\r\n%s\r\n" % (len(data), sig.encode(), data)
        prev = sig
    return out


def send_raw(px, s3, method, path, headers, body=b""):
    """One request through a CONNECT tunnel; returns (status, raw response)."""
    t = open_tunnel(px.port, "api.test", s3.port, px.ca)
    conn = HttpConn(t)
    host = f"api.test:{s3.port}"
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    for n, v in headers.items():
        if n.lower() != "host":
            head += f"{n}: {v}\r\n"
    if body or method in ("PUT", "POST"):
        head += f"Content-Length: {len(body)}\r\n"
    conn.send(head.encode() + b"\r\n" + body)
    try:
        status, _, rbody, _ = conn.read_response(method)
    except Exception:  # noqa: BLE001 - closed without an answer
        conn.close()
        return None, b""
    conn.close()
    return status, rbody


def now_amz():
    return datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")


def streaming_headers(s3, amz_date, chunks):
    return signed_head("PUT", "/bkt/stream%20ed/%E2%82%AC.bin",
                       {"Host": f"api.test:{s3.port}", "Content-Encoding": "aws-chunked",
                        "X-Amz-Decoded-Content-Length": str(sum(map(len, chunks)))},
                       amz_date, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD")


def test_streaming_signed_upload_is_resigned_chunk_by_chunk(proxy_factory, s3):
    # Debian's botocore (1.29) never sends STREAMING-AWS4-HMAC-SHA256-PAYLOAD
    # (it uses UNSIGNED-PAYLOAD or the unsigned trailer), so this request is
    # made the way the SDKs that do make it: a head signed by botocore's
    # signer, and chunk signatures chained from it, all with placeholders.
    px = proxy_factory(aws_policy(s3), env=REAL_ENV)
    amz = now_amz()
    chunks = [os.urandom(65536), os.urandom(65536), b"tail" * 100]
    headers, seed = streaming_headers(s3, amz, chunks)
    body = streaming_body(chunks, amz, seed)
    status, rbody = send_raw(px, s3, "PUT", "/bkt/stream%20ed/%E2%82%AC.bin", headers, body)
    assert status == 200, (rbody, s3.state.errors)
    assert s3.state.errors == []
    assert s3.state.objects[("bkt", "stream ed/€.bin")] == b"".join(chunks)
    assert s3.state.log[-1][2] == "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" and s3.state.log[-1][3] == 4
    assert_no_real_secrets(px, rbody)


@pytest.mark.parametrize("breakage,reason", [
    (lambda b: b.replace(b"10000;chunk-signature=", b"000010000;chunk-signature=", 1), "chunk size"),
    (lambda b: b.replace(b"10000;chunk-signature=", b"1zz00;chunk-signature=", 1), "chunk header"),
    (lambda b: b.replace(b";chunk-signature=", b";chunk-signatur=", 1), "chunk header"),
    (lambda b: b[:88 + 65536] + b"XX" + b[88 + 65536 + 2:], "CRLF"),
    (lambda b: b[:-40], "final chunk"),
])
def test_broken_chunk_framing_is_refused(proxy_factory, s3, breakage, reason):
    px = proxy_factory(aws_policy(s3), env=REAL_ENV)
    amz = now_amz()
    chunks = [b"x" * 65536, b"y" * 10]
    headers, seed = streaming_headers(s3, amz, chunks)
    body = breakage(streaming_body(chunks, amz, seed))
    status, rbody = send_raw(px, s3, "PUT", "/bkt/stream%20ed/%E2%82%AC.bin", headers, body)
    assert status in (400, None), rbody
    assert ("bkt", "stream ed/€.bin") not in s3.state.objects
    recs = px.requests()
    last = recs[-1]
    assert last.get("reason") == "malformed", last
    assert "aws-chunked" in json.dumps(last) and reason in json.dumps(last), last
    assert_no_real_secrets(px, rbody)


def refused(px, status, rbody, needle):
    assert status == 403, rbody
    body = json.loads(rbody)
    assert body["check"] == "sigv4", body
    assert needle in body["message"], body
    rec = px.requests()[-1]
    assert rec["decision"] == "deny" and rec["reason"] == "sigv4", rec


def test_refusals(proxy_factory, s3):
    px = proxy_factory(aws_policy(s3), env=REAL_ENV)
    amz = now_amz()
    host = {"Host": f"api.test:{s3.port}"}
    empty = hashlib.sha256(b"").hexdigest()

    # signed with another key id than the placeholder
    h, _ = signed_head("GET", "/bkt/plain.txt", host, amz, empty, key_id="AKIAOTHERKEYID000000")
    refused(px, *send_raw(px, s3, "GET", "/bkt/plain.txt", h), "other than the sandbox's placeholder")
    # botocore with the wrong key id gets the same answer
    with pytest.raises(botocore.exceptions.ClientError) as e:
        client(px, s3, key_id="AKIAOTHERKEYID000000").get_object(Bucket="bkt", Key="x")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    # no signature at all
    refused(px, *send_raw(px, s3, "GET", "/bkt/plain.txt", host), "not signed with AWS Signature Version 4")
    # a presigned URL
    for version in ("s3v4", "s3"):
        c = client(px, s3, signature_version=version)
        url = c.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k"})
        assert ("X-Amz-Signature=" in url) == (version == "s3v4"), url
        target = url.split(f":{s3.port}", 1)[1]
        refused(px, *send_raw(px, s3, "GET", target, host), "presigned URLs")
    # SigV4a
    h, _ = signed_head("GET", "/bkt/plain.txt", host, amz, empty)
    h.replace_header("Authorization", h["Authorization"].replace("AWS4-HMAC-SHA256", "AWS4-ECDSA-P256-SHA256"))
    refused(px, *send_raw(px, s3, "GET", "/bkt/plain.txt", h), "SigV4a")
    # signed trailers
    h, _ = signed_head("PUT", "/bkt/t", host, amz, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER")
    refused(px, *send_raw(px, s3, "PUT", "/bkt/t", h, b"0;chunk-signature=" + b"0" * 64 + b"\r\n\r\n"),
            "signed trailers")
    # x-amz-date outside the credential's scope, and malformed
    h, _ = signed_head("GET", "/bkt/plain.txt", host, amz, empty)
    h.replace_header("X-Amz-Date", "20000101T000000Z")
    refused(px, *send_raw(px, s3, "GET", "/bkt/plain.txt", h), "x-amz-date")
    h.replace_header("X-Amz-Date", "yesterday")
    refused(px, *send_raw(px, s3, "GET", "/bkt/plain.txt", h), "x-amz-date")
    # a Bearer token instead
    refused(px, *send_raw(px, s3, "GET", "/bkt/plain.txt", dict(host, Authorization=f"Bearer {PH_KEY_ID}")),
            "not AWS Signature Version 4")
    assert s3.state.log == [] and s3.state.errors == []
    assert_no_real_secrets(px)


@pytest.mark.parametrize("sent,wanted", [
    ("br, gzip, zstd", "gzip"),  # what keyward can decode, of what the client takes
    ("br, zstd", "identity"),
    (None, "identity"),  # none at all would mean any coding (RFC 9110 12.5.3)
])
def test_accept_encoding_is_one_keyward_can_scan(proxy_factory, s3, sent, wanted):
    # The response is scanned for secrets like any credentialed route's, so
    # the upstream is asked only for codings keyward decodes; the client
    # signed its own Accept-Encoding, and the re-signed head's signature
    # covers the value sent (s3server checks it with the real key).
    px = proxy_factory(aws_policy(s3), env=REAL_ENV)
    amz = now_amz()
    host = {"Host": f"api.test:{s3.port}"}
    if sent:
        host["Accept-Encoding"] = sent
    empty = hashlib.sha256(b"").hexdigest()
    h, _ = signed_head("GET", "/bkt/missing.txt", host, amz, empty)
    assert ("accept-encoding" in h["Authorization"]) == bool(sent)
    status, body = send_raw(px, s3, "GET", "/bkt/missing.txt", h)
    assert status == 404 and b"NoSuchKey" in body, body
    assert s3.state.errors == []
    got = [v for n, v in s3.state.heads[-1][2] if n.lower() == "accept-encoding"]
    assert got == [wanted]
    # botocore itself, with a compressed answer it asks for
    c = client(px, s3)
    c.put_object(Bucket="bkt", Key="k", Body=b"x")
    assert c.get_object(Bucket="bkt", Key="k")["Body"].read() == b"x"
    assert s3.state.errors == []
    assert all([v for n, v in hd if n.lower() == "accept-encoding"] in (["identity"], ["gzip"], ["gzip, deflate"])
               for _, _, hd in s3.state.heads)
    assert_no_real_secrets(px, body)


def test_other_service_body_hashed_by_keyward(proxy_factory, s3):
    # STS (like most AWS APIs but S3) sends no x-amz-content-sha256: the
    # signature covers the body's hash, which keyward computes itself.
    px = proxy_factory(aws_policy(s3), env=REAL_ENV)
    sess = botocore.session.Session()
    sts = sess.create_client("sts", endpoint_url=f"https://api.test:{s3.port}", aws_access_key_id=PH_KEY_ID,
                             aws_secret_access_key=PH_SECRET, aws_session_token=PH_TOKEN, verify=str(px.ca),
                             config=Config(proxies={"https": px.url}, region_name="us-east-1",
                                           retries={"max_attempts": 1}))
    assert sts.get_caller_identity()["Account"] == "123456789012"
    assert s3.state.errors == []
    assert s3.state.log[-1][:3] == ("POST", "/", "body hashed by the signer")
    # a chunked body cannot be hashed first: refused
    amz = now_amz()
    h, _ = signed_head("POST", "/", {"Host": f"api.test:{s3.port}"}, amz, "x")
    h.__delitem__("X-Amz-Content-SHA256")
    t = open_tunnel(px.port, "api.test", s3.port, px.ca)
    conn = HttpConn(t)
    head = "".join(f"{n}: {v}\r\n" for n, v in h.items())
    conn.send(f"POST / HTTP/1.1\r\n{head}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".encode())
    status, _, body, _ = conn.read_response("POST")
    conn.close()
    refused(px, status, body, "chunked body")
    assert_no_real_secrets(px, body)


def test_without_session_token(proxy_factory, certs):
    srv = S3Server(certs, REAL_KEY_ID, REAL_SECRET, None)
    try:
        px = proxy_factory(aws_policy(srv, token=False), env=REAL_ENV)
        c = client(px, srv)  # still sends the placeholder token: keyward drops it
        c.put_object(Bucket="b", Key="k", Body=b"v")
        assert c.get_object(Bucket="b", Key="k")["Body"].read() == b"v"
        assert srv.state.errors == []
    finally:
        srv.close()


def test_policy_refuses_other_inject_modes_for_aws(proxy_factory, s3, tmp_path):
    import subprocess

    from conftest import KEYWARD
    p = tmp_path / "bad.yaml"
    p.write_text(aws_policy(s3).replace("credential: s3", "credential: s3\n    inject: bearer"))
    r = subprocess.run([KEYWARD, "policy", "check", str(p)], capture_output=True, text=True)
    assert r.returncode != 0 and "is of kind aws" in r.stderr + r.stdout


def test_botocore_in_sandbox(sandbox_factory, s3):
    script = (
        "import botocore.session\n"
        "from botocore.config import Config\n"
        "import os\n"
        "s = botocore.session.get_session()\n"
        f"c = s.create_client('s3', endpoint_url='https://api.test:{s3.port}', config=Config("
        "region_name='us-east-1', s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))\n"
        "c.put_object(Bucket='sb', Key='from sandbox/€', Body=b'hello from the sandbox')\n"
        "print(c.get_object(Bucket='sb', Key='from sandbox/€')['Body'].read().decode())\n"
        "print([o['Key'] for o in c.list_objects_v2(Bucket='sb', Prefix='from ')['Contents']])\n"
        "print(sorted(k for k in os.environ if k.startswith('AWS_')))\n"
        "print(os.environ['AWS_ACCESS_KEY_ID'], os.environ['AWS_SECRET_ACCESS_KEY'])\n"
    )
    sb = sandbox_factory(aws_policy(s3))
    sb.env.update(REAL_ENV)
    p = sb.run(["python3", "-c", script])
    assert p.returncode == 0, p.err
    lines = p.out.splitlines()
    assert lines[0] == "hello from the sandbox"
    assert lines[1] == "['from sandbox/€']"
    assert lines[3] == f"{PH_KEY_ID} {PH_SECRET}"
    assert s3.state.errors == []
    for blob in (p.out, p.err, sb.audit.read_text()):
        assert REAL_SECRET not in blob and REAL_TOKEN not in blob and REAL_KEY_ID not in blob
    assert all(r["decision"] == "allow" for r in sb.requests())
