-- Makes wrk send a forward-proxy request: the request line carries the
-- absolute-form target, as a client configured with an HTTP proxy sends it.
-- wrk connects to the URL given on its command line (the proxy, or the
-- upstream itself for the direct baseline) and sends the same bytes to all.
-- TARGET is "host:port" of the upstream, from the environment.
local target = os.getenv("BENCH_TARGET") or error("BENCH_TARGET is not set")
local path = os.getenv("BENCH_PATH") or "/api/x"
wrk.method = "GET"
wrk.path = "http://" .. target .. path
wrk.headers["Host"] = target
