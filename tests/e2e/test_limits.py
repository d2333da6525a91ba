"""Rate and time limits of routes and credentials: a burst passes, the next
request gets 429 with Retry-After and an audit record; buckets of other
routes and credentials are untouched; a reload keeps them; outside its
hours a route answers 403. Rates are per hour, so no token comes back
while a test runs, and no timing is asserted."""

import datetime
import signal
import time

from conftest import policy_for
from kwtest import PLACEHOLDER, PLACEHOLDER2, HttpConn, open_tunnel


def get(p, u, path, placeholder=PLACEHOLDER):
    c = HttpConn(open_tunnel(p.port, "api.test", u.port, p.ca))
    c.send(f"GET {path} HTTP/1.1\r\nHost: api.test:{u.port}\r\nAuthorization: Bearer {placeholder}\r\n"
           f"Connection: close\r\n\r\n".encode())
    status, headers, body, _ = c.read_response()
    c.close()
    return status, headers, body


def two_routes(u, route_a="", route_b="", cred_extra="", cred_b="test", other_extra=""):
    """Routes /a/** and /b/** to the same upstream, each credentialed."""
    return f"""version: 1
credentials:
  test:
    from: env:TEST_TOKEN
    placeholder: {PLACEHOLDER}{cred_extra}
  other:
    from: env:TEST_TOKEN2
    placeholder: {PLACEHOLDER2}{other_extra}
routes:
  - host: api.test
    port: {u.port}
    paths: ["/a/**"]
    credential: test
    inject: bearer
    upstream_ca: {u.ca_file}
    allow_private: true{route_a}
  - host: api.test
    port: {u.port}
    paths: ["/b/**"]
    credential: {cred_b}
    inject: bearer
    upstream_ca: {u.ca_file}
    allow_private: true{route_b}
"""


def test_burst_then_429_with_retry_after(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, route_extra="\n    rate: 2/hour\n    burst: 3"))
    for _ in range(3):
        assert get(p, upstream, "/api/x")[0] == 200
    status, headers, body = get(p, upstream, "/api/x")
    assert status == 429
    # one token per 1800 s: the wait is about that long
    assert 1 <= int(headers["retry-after"]) <= 1800
    assert headers["x-keyward-decision"] == "deny; check=rate"
    assert b"rate limit of routes[0]" in body and b"2 per hour, burst 3" in body
    assert len(upstream.requests) == 3
    rec = p.requests()[-1]
    assert rec["decision"] == "deny" and rec["reason"] == "rate" and rec["status"] == 429


def test_burst_defaults_to_the_count(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, route_extra="\n    rate: 2/hour"))
    assert [get(p, upstream, "/api/x")[0] for _ in range(3)] == [200, 200, 429]


def test_routes_are_independent(proxy_factory, upstream):
    p = proxy_factory(two_routes(upstream, route_a="\n    rate: 1/hour", route_b="\n    rate: 1/hour"))
    assert get(p, upstream, "/a/1")[0] == 200
    assert get(p, upstream, "/a/2")[0] == 429
    assert get(p, upstream, "/b/1")[0] == 200
    assert get(p, upstream, "/b/2")[0] == 429


def test_credential_rate_is_shared_by_its_routes(proxy_factory, upstream):
    p = proxy_factory(two_routes(upstream, cred_extra="\n    rate: 2/hour"))
    assert get(p, upstream, "/a/1")[0] == 200
    assert get(p, upstream, "/b/1")[0] == 200
    status, headers, body = get(p, upstream, "/a/2")
    assert status == 429 and b"credential test" in body and int(headers["retry-after"]) >= 1
    assert get(p, upstream, "/b/2")[0] == 429


def test_credentials_are_independent(proxy_factory, upstream):
    p = proxy_factory(two_routes(upstream, cred_extra="\n    rate: 1/hour", cred_b="other",
                                 other_extra="\n    rate: 1/hour"))
    assert get(p, upstream, "/a/1")[0] == 200
    assert get(p, upstream, "/a/2")[0] == 429
    assert get(p, upstream, "/b/1", PLACEHOLDER2)[0] == 200
    assert get(p, upstream, "/b/2", PLACEHOLDER2)[0] == 429


def test_a_refused_request_takes_no_token(proxy_factory, upstream):
    """Route and credential buckets are taken together: the route's empty
    bucket does not drain the credential's."""
    p = proxy_factory(two_routes(upstream, route_a="\n    rate: 1/hour", cred_extra="\n    rate: 2/hour"))
    assert get(p, upstream, "/a/1")[0] == 200
    assert get(p, upstream, "/a/2")[0] == 429  # the route's bucket
    assert get(p, upstream, "/b/1")[0] == 200  # the credential still had one
    assert get(p, upstream, "/b/2")[0] == 429


def test_buckets_survive_a_reload(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, route_extra="\n    rate: 1/hour"))
    assert get(p, upstream, "/api/x")[0] == 200
    assert get(p, upstream, "/api/x")[0] == 429
    p.policy.write_text(policy_for(upstream, route_extra="\n    rate: 1/hour\n    burst: 1"))
    p.signal(signal.SIGHUP)
    deadline = time.time() + 10
    while time.time() < deadline and not any(r["event"] == "reload" for r in p.records()):
        time.sleep(0.05)
    assert get(p, upstream, "/api/x")[0] == 429


def test_hours_open_all_day(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, route_extra='\n    hours: ["Mon-Sun 00:00-24:00"]\n    timezone: "+05:30"'))
    assert get(p, upstream, "/api/x")[0] == 200


def test_hours_never_open(proxy_factory, upstream):
    p = proxy_factory(policy_for(upstream, route_extra="\n    hours: []"))
    status, headers, body = get(p, upstream, "/api/x")
    assert status == 403 and "retry-after" not in headers
    assert headers["x-keyward-decision"] == "deny; check=hours"
    assert b"outside the hours: of routes[0]" in body
    assert not upstream.requests
    rec = p.requests()[-1]
    assert rec["decision"] == "deny" and rec["reason"] == "hours" and rec["status"] == 403


def test_hours_closed_today_says_when_they_open(proxy_factory, upstream):
    # a window on the day after tomorrow (UTC): closed now, opens within 3 days
    day = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=2)).strftime("%a")
    p = proxy_factory(policy_for(upstream, route_extra=f'\n    hours: ["{day} 00:00-24:00"]'))
    status, headers, _ = get(p, upstream, "/api/x")
    assert status == 403
    assert 24 * 3600 <= int(headers["retry-after"]) <= 2 * 24 * 3600


def test_credential_hours(proxy_factory, upstream):
    p = proxy_factory(two_routes(upstream, cred_extra="\n    hours: []"))
    status, _, body = get(p, upstream, "/b/1")
    assert status == 403 and b"hours: of credential test" in body
