-- Like wrk-absolute.lua, but a POST with a small JSON body (359 bytes, the
-- size of a short chat-completion request), for measuring how keyward
-- forwards request bodies. TARGET is "host:port" of the upstream, from the
-- environment; BENCH_PATH the path (default /api/x).
local target = os.getenv("BENCH_TARGET") or error("BENCH_TARGET is not set")
local path = os.getenv("BENCH_PATH") or "/api/x"
wrk.method = "POST"
wrk.path = "http://" .. target .. path
wrk.headers["Host"] = target
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-x","messages":[{"role":"user","content":"' .. string.rep("a", 300) .. '"}]}'
