#!/usr/bin/env python3
"""Turns the raw files of one bench/run.sh run into the results page.

    report.py WORKDIR OUT.md

Reads WORKDIR/raw/{load,single}-{direct,keyward,nginx}-N.txt (wrk output)
with their .cmd and .cpu files, tunnel-*.txt and intunnel-*.txt (curl -w
lines), mem-*.json (idle_conns.py), perf-*.txt and meta.txt. Writes OUT.md
and prints a summary.
"""
import json
import pathlib
import re
import statistics
import sys

TARGETS = ["direct", "keyward", "nginx"]  # replaced by meta.txt's targets=
NPROC = [1]
UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}

# The goals of the performance issue.
GOAL_RATIO = 1.0      # keyward req/s >= nginx req/s on the same job
GOAL_ADDED_P50 = 10.0  # µs added at p50
GOAL_PER_CONN = 20.0   # KiB per idle client connection


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(path):
    t = path.read_text()
    r = {"text": t}
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", t)
    r["requests"] = int(m.group(1)) if m else 0
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", t, re.M))
    for k in ("50", "75", "90", "99"):
        r["p" + k] = to_us(lat[k]) if k in lat else float("nan")
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    r["sockerr"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"requests in ([\d.]+)s", t)
    add_cpu(r, path, float(m.group(1)) if m else 10)
    return r


def parse_tls(path):
    """A tlsload run (JSON), in the shape parse_wrk gives."""
    j = json.loads(path.read_text() or "{}")
    r = {"text": path.read_text(), "rps": j.get("rps", 0.0), "requests": j.get("requests", 0),
         "non2xx": 0, "sockerr": j.get("errors", 0), "handshakes": j.get("handshakes", 0),
         "resumed": j.get("resumed", 0), "protocol": j.get("protocol", "?"), "p75": float("nan")}
    for k in ("50", "90", "99"):
        r["p" + k] = float(j["p" + k + "_us"]) if "p" + k + "_us" in j else float("nan")
    add_cpu(r, path, j.get("seconds", 5))
    return r


def add_cpu(r, path, secs):
    cpu = path.with_name(path.name + ".cpu")
    r["cpu_us_per_req"] = float("nan")
    r["up_cpu_us_per_req"] = float("nan")
    r["foreign_pct"] = float("nan")
    r["loadavg"] = "?"
    if cpu.exists():
        kv = dict(x.split("=") for x in cpu.read_text().split())
        tck = int(kv["clk_tck"])
        if r["requests"]:
            r["cpu_us_per_req"] = int(kv["server_ticks"]) / tck * 1e6 / r["requests"]
            r["up_cpu_us_per_req"] = int(kv["upstream_ticks"]) / tck * 1e6 / r["requests"]
        if "foreign_ticks" in kv:
            r["foreign_pct"] = 100 * int(kv["foreign_ticks"]) / tck / (secs * NPROC[0])
        r["loadavg"] = kv.get("loadavg", "?")
    cmd = path.with_name(path.name + ".cmd")
    r["cmd"] = cmd.read_text().strip() if cmd.exists() else ""


def pct(values, p):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(p / 100 * len(v) + 0.5)) - 1))
    return v[k]


def read_curl(path):
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) == 5:
            rows.append((int(f[0]), *(float(x) * 1e6 for x in f[1:])))
    return rows


def fmt_us(x):
    if x != x:
        return "n/a"
    if x >= 10000:
        return f"{x / 1000:.1f} ms"
    if x >= 1000:
        return f"{x / 1000:.2f} ms"
    return f"{x:.0f} µs"


def main():
    work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    meta = dict(l.split("=", 1) for l in (work / "meta.txt").read_text().splitlines() if "=" in l)
    NPROC[0] = int(meta.get("nproc", "1"))
    TARGETS[:] = meta.get("targets", " ".join(TARGETS)).split()
    settings = dict(x.split("=", 1) for x in ("duration=" + meta.get("duration", "")).split())
    raw = work / "raw"
    runs = {}
    for case, ext, parse in (("load", "txt", parse_wrk), ("post", "txt", parse_wrk), ("single", "txt", parse_wrk),
                             ("tls", "json", parse_tls), ("tls-post", "json", parse_tls),
                             ("newconn", "json", parse_tls), ("newconn-full", "json", parse_tls)):
        for t in TARGETS:
            files = sorted(raw.glob(f"{case}-{t}-*.{ext}"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
            runs[case, t] = [parse(p) for p in files]
    CASES = [c for c in ("load", "post", "single", "tls", "tls-post", "newconn", "newconn-full")
             if runs.get((c, "keyward"))]

    def med(case, t, key):
        vals = [r[key] for r in runs[case, t] if r[key] == r[key]]
        return statistics.median(vals) if vals else float("nan")

    S = {}
    for case in CASES:
        for t in TARGETS:
            S[case, t] = {k: med(case, t, k) for k in ("rps", "p50", "p75", "p90", "p99", "cpu_us_per_req",
                                                       "up_cpu_us_per_req")}
            S[case, t]["errors"] = sum(r["non2xx"] + r["sockerr"] for r in runs[case, t])
    ratio = S["load", "keyward"]["rps"] / S["load", "nginx"]["rps"]
    # the same, round by round (keyward and the other ran seconds apart)
    def paired_of(case, other):
        return [k["rps"] / n["rps"] for k, n in zip(runs[case, "keyward"], runs[case, other]) if n["rps"]]
    paired = paired_of("load", "nginx")
    ratio_paired = statistics.median(paired) if paired else float("nan")
    RATIOS = {}  # (case, other) -> (ratio of medians, round-by-round ratios)
    for case in CASES:
        for other in TARGETS:
            if other not in ("keyward", "direct") and S[case, other]["rps"]:
                RATIOS[case, other] = (S[case, "keyward"]["rps"] / S[case, other]["rps"], paired_of(case, other))
    added = {(case, t, p): S[case, t][p] - S[case, "direct"][p]
             for case in CASES for t in TARGETS if t != "direct" for p in ("p50", "p99")}

    tun = {k: read_curl(work / f"tunnel-{k}.txt") for k in ("direct", "keyward", "first")}
    intun = {k: read_curl(work / f"intunnel-{k}.txt") for k in ("direct", "keyward")}

    def curl_stats(rows, skip_first=False):
        if skip_first:
            rows = rows[1:]
        ok = [r for r in rows if r[0] == 200]
        return {
            "n": len(rows), "ok": len(ok),
            "app50": pct([r[2] for r in ok], 50), "app99": pct([r[2] for r in ok], 99),
            "tot50": pct([r[4] for r in ok], 50), "tot99": pct([r[4] for r in ok], 99),
            # inside one connection curl's time_total restarts per URL
            "ttfb50": pct([r[3] for r in ok], 50), "ttfb99": pct([r[3] for r in ok], 99),
        }

    T = {k: curl_stats(v) for k, v in tun.items()}
    I = {k: curl_stats(v, skip_first=True) for k, v in intun.items()}
    mem = {}  # (n, mode) -> idle_conns.py result
    for p in sorted(work.glob("mem-*.json")):
        m = json.loads(p.read_text())
        mem[m["n"], m["mode"]] = m
    mem_n = sorted({n for n, _ in mem})
    million = []
    if (work / "million.tsv").exists():
        for line in (work / "million.tsv").read_text().splitlines()[1:]:
            million.append(tuple(int(x) for x in line.split()))

    L = []
    w = L.append
    w(f"# keyward benchmark, {meta['date'][:10]} on {meta['host']}")
    w("")
    w("Produced by `make bench` (bench/run.sh); see bench/README.md for how to read it.")
    w("")
    w("## Machine and versions")
    w("")
    w("| | |")
    w("|---|---|")
    for k, label in (("date", "date (UTC)"), ("nproc", "nproc"), ("cpu", "CPU"), ("mem", "memory"),
                     ("kernel", "kernel"), ("os", "OS"), ("keyward_rev", "keyward git rev"),
                     ("keyward_build", "keyward build (build-bench)"), ("cc", "compiler"), ("nginx", "nginx"),
                     ("wrk", "wrk"), ("curl", "curl"), ("openssl", "OpenSSL"), ("libevent", "libevent")):
        w(f"| {label} | {meta.get(k, '?')} |")
    w(f"| load average (1/5/15 min) | {meta.get('loadavg', '?')} |")
    w(f"| CPUs busy with other work just before the run | {meta.get('busy_start', '?')} % |")
    w(f"| settings | {' '.join(f'{k}={v}' for k, v in settings.items())} |")
    w("")
    w("Everything runs on this one machine: wrk, keyward (one event loop per CPU), the nginx")
    w("reverse proxy (`worker_processes auto`) and the nginx upstream (`worker_processes auto`)")
    w(f"share its {meta['nproc']} CPUs, so absolute numbers are low and the load generator takes a")
    w("share of the CPU; the ratios between the proxies are the meaningful figures.")
    w("")
    w(f"**Load**: the load average was {meta.get('loadavg', '?')} (1/5/15 min) on {meta['nproc']} CPUs;")
    w("\"other work\" and \"load avg\" in the per-run tables show how much else ran during each")
    w("measurement (when it is high the absolute figures are low and noisy). The targets ran")
    w("interleaved round by round, so the ratios between them, and the round-by-round ratios, are the figures")
    w("to read.")
    w("")

    w("## Summary")
    w("")
    ok_ratio = ratio >= GOAL_RATIO
    a50 = added["single", "keyward", "p50"]
    per_conn = max((m["per_conn_kib"] for (n, mode), m in mem.items() if mode == "silent"), default=float("nan"))
    per_conn_used = max((m["per_conn_kib"] for (n, mode), m in mem.items() if mode == "used"), default=float("nan"))
    w("| goal (from the issue) | measured | met? |")
    w("|---|---|---|")
    w(f"| throughput ≥ nginx's on the same job | keyward {S['load', 'keyward']['rps']:,.0f} req/s, "
      f"nginx {S['load', 'nginx']['rps']:,.0f} req/s: ratio **{ratio:.2f}** (round by round: median {ratio_paired:.2f}) | {'yes' if ok_ratio else '**no**'} |")
    w(f"| ≤ 10 µs added at p50 | one connection, one CPU: **{a50:+.0f} µs** (nginx {added['single', 'nginx', 'p50']:+.0f} µs); "
      f"under load (32 conns): {added['load', 'keyward', 'p50']:+.0f} µs (nginx {added['load', 'nginx', 'p50']:+.0f} µs) "
      f"| {'yes' if a50 <= GOAL_ADDED_P50 else '**no**'} |")
    w(f"| < 20 KiB per idle connection | **{per_conn:.1f} KiB** silent, {per_conn_used:.1f} KiB after one request "
      f"(the larger of {', '.join(f'{n:,}' for n in mem_n)} connections) "
      f"| {'yes' if max(per_conn, per_conn_used) < GOAL_PER_CONN else '**no**'} |")
    w("")
    w("keyward's throughput relative to each other proxy doing the same job, measured in the same run with")
    w("the targets interleaved round by round (ratio of the medians; in brackets each round's ratio):")
    w("")
    case_label = {"load": f"plain HTTP, {settings.get('conns')} keep-alive connections",
                  "post": f"plain HTTP POST, {meta.get('post_bytes', '?')}-byte JSON body, {settings.get('conns')} keep-alive connections",
                  "single": "plain HTTP, one connection, one CPU",
                  "tls": f"HTTPS, {settings.get('conns')} keep-alive connections",
                  "tls-post": f"HTTPS POST, {meta.get('post_bytes', '?')}-byte body, {settings.get('conns')} keep-alive connections",
                  "newconn": f"HTTPS, new connection per request, {meta.get('newconns', '?')} clients, TLS resumption",
                  "newconn-full": f"HTTPS, new connection per request, {meta.get('newconns', '?')} clients, full handshakes"}
    others = [t for t in TARGETS if t not in ("direct", "keyward")]
    w("| measurement | keyward req/s | " + " | ".join(f"keyward / {o}" for o in others) + " |")
    w("|---|---|" + "---|" * len(others))
    for case in CASES:
        cells = []
        for o in others:
            if (case, o) in RATIOS:
                r, pr = RATIOS[case, o]
                cells.append(f"**{r:.2f}** ({', '.join(f'{x:.2f}' for x in pr)})")
            else:
                cells.append("–")
        w(f"| {case_label[case]} | {S[case, 'keyward']['rps']:,.0f} | " + " | ".join(cells) + " |")
    w("")

    w("## (a) Plain HTTP: client → proxy (absolute-form) → upstream, bearer credential injected")
    w("")
    w("Medians of the runs; latency percentiles are wrk's (`--latency`; wrk 4 does not correct for coordinated omission);")
    w("\"added\" is the proxy's value minus the direct run's value of the same statistic.")
    w("CPU/req is the CPU time (user+system) of the server processes divided by the requests")
    w("served (keyward: its process; nginx: master and workers; direct: the upstream nginx).")
    w("")
    for case, title in (("load", f"Load: wrk, keep-alive, {settings.get('conns')} connections, "
                         f"{settings.get('threads')} threads, {settings.get('duration')} per run"),
                        ("post", f"POST: the same, each request a POST with a {meta.get('post_bytes', '?')}-byte JSON body "
                         "(bench/wrk-post.lua)"),
                        ("single", "One connection, one request at a time (wrk -t1 -c1), all processes on one CPU: service latency")):
        if case not in CASES:
            continue
        w(f"### {title}")
        w("")
        if case == "single":
            w("wrk, the proxies and the upstream are pinned to one CPU (taskset) for these runs: on a")
            w("virtual machine, waking an idle CPU costs tens of microseconds per hop and varies by a")
            w("factor of 3 from run to run, which would swamp the proxies' own cost. On one CPU each hop")
            w("is a plain context switch, so the added latency is the work done per request.")
            w("")
        w("| target | req/s | p50 | p75 | p90 | p99 | added p50 | added p99 | proxy CPU/req | upstream CPU/req | errors |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for t in TARGETS:
            s = S[case, t]
            a = ("–", "–") if t == "direct" else (f"{added[case, t, 'p50']:+.0f} µs", f"{added[case, t, 'p99']:+.0f} µs")
            w(f"| {t} | {s['rps']:,.0f} | {fmt_us(s['p50'])} | {fmt_us(s['p75'])} | {fmt_us(s['p90'])} | "
              f"{fmt_us(s['p99'])} | {a[0]} | {a[1]} | "
              f"{'–' if t == 'direct' else fmt_us(s['cpu_us_per_req'])} | {fmt_us(s['up_cpu_us_per_req'])} | {s['errors']} |")
        w("")
        if case in ("load", "post"):
            pr = paired_of(case, "nginx")
            w(f"keyward/nginx throughput ratio: **{S[case, 'keyward']['rps'] / S[case, 'nginx']['rps']:.3f}** "
              f"(ratio of the medians); round by round: "
              f"{', '.join(f'{x:.3f}' for x in pr)}, median **{statistics.median(pr) if pr else float('nan'):.3f}**.")
            kc, nc = S[case, "keyward"]["cpu_us_per_req"], S[case, "nginx"]["cpu_us_per_req"]
            w(f"keyward/nginx CPU per request: **{kc / nc:.2f}** ({fmt_us(kc)} vs {fmt_us(nc)}).")
            w("")
        if case == "single":
            w(f"keyward/nginx throughput ratio (one connection): "
              f"{S['single', 'keyward']['rps'] / S['single', 'nginx']['rps']:.3f}.")
            w("")
        w("Every run, in the order they ran (interleaved). \"other work\": share of the machine's CPU time")
        w("used during the run by processes other than wrk, the upstream and the proxies (other")
        w("people's jobs); a round with a run above 10 % was discarded and redone after waiting for")
        w(f"quiet ({meta.get('discarded_rounds', '0')} round(s) discarded in this whole benchmark); after as many")
        w("retries as there are rounds, a round is kept whatever its share, and the column shows it.")
        w("")
        w("| run | target | req/s | p50 | p75 | p90 | p99 | requests | non-2xx | socket errors | other work | load avg |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        n = max(len(runs[case, t]) for t in TARGETS)
        for i in range(n):
            for t in TARGETS:
                if i < len(runs[case, t]):
                    r = runs[case, t][i]
                    w(f"| {i + 1} | {t} | {r['rps']:,.2f} | {fmt_us(r['p50'])} | {fmt_us(r['p75'])} | "
                      f"{fmt_us(r['p90'])} | {fmt_us(r['p99'])} | {r['requests']} | {r['non2xx']} | {r['sockerr']} | "
                      f"{r['foreign_pct']:.0f} % | {r['loadavg']} |")
        w("")

    w("## (b) HTTPS: client → proxy → TLS upstream, bearer credential injected")
    w("")
    w("wrk cannot send CONNECT, so these runs use `bench/tlsload` (C, OpenSSL, one blocking thread per")
    w("connection, the same code and work per request for every target). keyward and mitmproxy get")
    w("`CONNECT api.test:PORT`, then TLS with the proxy's minted certificate (the client trusts each proxy's")
    w("CA), then requests inside the tunnel; nginx and Caddy cannot intercept CONNECT, so they terminate")
    w("TLS for api.test themselves (a certificate from the bench CA) and proxy to the same TLS upstream:")
    w("the same two TLS hops, the same upstream, the same header injected. *direct* is the client on the")
    w("TLS upstream itself. Latency: from the request's first byte to the response's last; with a new")
    w("connection per request, from `connect()` to the response (TCP, CONNECT, TLS handshake, request).")
    w("CPU/req is the server side's CPU time per request as above.")
    w("")
    for case, title in (("tls", f"Keep-alive: {settings.get('conns')} connections, {settings.get('duration')} per run"),
                        ("tls-post", f"POST: the same, each request a POST with a {meta.get('post_bytes', '?')}-byte "
                         "body (tlsload -b)"),
                        ("newconn", f"New connection per request, {meta.get('newconns', '?')} client threads, the client offers "
                         "its previous TLS session (resumption)"),
                        ("newconn-full", f"New connection per request, {meta.get('newconns', '?')} client threads, "
                         "full handshakes (no session offered)")):
        if not runs.get((case, "keyward")):
            continue
        w(f"### {title}")
        w("")
        w("| target | req/s | p50 | p90 | p99 | added p50 | server CPU/req | TLS sessions resumed | TLS version "
          "| errors |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for t in TARGETS:
            st = S[case, t]
            hs = sum(r["handshakes"] for r in runs[case, t])
            rs = sum(r["resumed"] for r in runs[case, t])
            a = "–" if t == "direct" else f"{st['p50'] - S[case, 'direct']['p50']:+.0f} µs"
            pr = ", ".join(sorted({r.get("protocol", "?") for r in runs[case, t]}))
            w(f"| {t} | {st['rps']:,.0f} | {fmt_us(st['p50'])} | {fmt_us(st['p90'])} | {fmt_us(st['p99'])} | {a} | "
              f"{fmt_us(st['cpu_us_per_req'])} | {rs:,} of {hs:,} | {pr} | {st['errors']} |")
        w("")
        w("| run | target | req/s | p50 | p99 | requests | errors | other work | load avg |")
        w("|---|---|---|---|---|---|---|---|---|")
        for i in range(max(len(runs[case, t]) for t in TARGETS)):
            for t in TARGETS:
                if i < len(runs[case, t]):
                    r = runs[case, t][i]
                    w(f"| {i + 1} | {t} | {r['rps']:,.0f} | {fmt_us(r['p50'])} | {fmt_us(r['p99'])} | {r['requests']} | "
                      f"{r['sockerr']} | {r['foreign_pct']:.0f} % | {r['loadavg']} |")
        w("")
    w("## (b2) HTTPS through keyward, one connection at a time with curl")
    w("")
    w("Measured with curl on one connection at a time, everything pinned to one CPU as in")
    w("the one-connection runs above:")
    w("")
    w(f"- **new tunnels**: {T['keyward']['n']} sequential curl processes, each a new CONNECT, a TLS handshake")
    w("  with keyward's minted leaf (cached after the first), keyward dialing the TLS upstream, one")
    w("  request. Baseline: the same curl straight to the TLS upstream. Times are curl's `-w` values")
    w("  (`time_appconnect`: TLS done; `time_total`: response complete), from the start of the transfer.")
    w("- **in one tunnel**: 2000 requests by one curl inside one intercepted tunnel (connection reused),")
    w("  first request left out; per-request time is curl's `time_total` for each URL.")
    w("")
    w("| measurement | n ok | TLS done p50 | TLS done p99 | total p50 | total p99 | added total p50 | added total p99 |")
    w("|---|---|---|---|---|---|---|---|")
    f = T["first"]
    w(f"| first tunnel via keyward (mints the leaf) | {f['ok']}/{f['n']} | {fmt_us(f['app50'])} | – | {fmt_us(f['tot50'])} | – | – | – |")
    for k, label in (("direct", "new connection, direct"), ("keyward", "new tunnel via keyward")):
        s = T[k]
        ad = ("–", "–") if k == "direct" else (f"{s['tot50'] - T['direct']['tot50']:+.0f} µs",
                                              f"{s['tot99'] - T['direct']['tot99']:+.0f} µs")
        w(f"| {label} | {s['ok']}/{s['n']} | {fmt_us(s['app50'])} | {fmt_us(s['app99'])} | {fmt_us(s['tot50'])} | "
          f"{fmt_us(s['tot99'])} | {ad[0]} | {ad[1]} |")
    for k, label in (("direct", "request in a kept-alive connection, direct"),
                     ("keyward", "request in a kept-alive tunnel via keyward")):
        s = I[k]
        ad = ("–", "–") if k == "direct" else (f"{s['tot50'] - I['direct']['tot50']:+.0f} µs",
                                              f"{s['tot99'] - I['direct']['tot99']:+.0f} µs")
        w(f"| {label} | {s['ok']}/{s['n']} | – | – | {fmt_us(s['tot50'])} | {fmt_us(s['tot99'])} | {ad[0]} | {ad[1]} |")
    w("")

    w("## (c) Memory per client connection")
    w("")
    w("VmRSS of a freshly started keyward (from /proc/PID/status), idle and with "
      f"{' or '.join(f'{n:,}' for n in mem_n)} client connections open (bench/idle_conns.py), a fresh process each.")
    w("\"silent\": the connections sent nothing. \"used\": each made one keep-alive request through")
    w("keyward (one at a time, so one upstream connection serves them all) and stays open.")
    w("")
    w("| connections | mode | RSS idle | RSS with connections | per connection | still open | non-200 |")
    w("|---|---|---|---|---|---|---|")
    for (n, mode), m in sorted(mem.items()):
        w(f"| {n:,} | {mode} | {m['rss_idle_kib']:,} KiB | {m['rss_loaded_kib']:,} KiB | **{m['per_conn_kib']:.1f} KiB** | "
          f"{m.get('still_open', '?')} | {m.get('non_200', '?')} |")
    w("")
    flat = None
    if million:
        w("## (d) RSS over a million requests")
        w("")
        w(f"A fresh keyward serves keep-alive requests from wrk ({settings.get('conns')} connections, runs of 3 s) until")
        w(f"{int(meta.get('million', 0)):,} requests have been served; VmRSS and VmHWM (peak) are read after each wrk run.")
        w(f"keyward wrote {meta.get('million_audit_records', '?')} audit records meanwhile.")
        w("")
        first_after = next((r for r in million if r[0] >= 100_000), million[-1])
        flat = {"start_kib": million[0][1], "after_100k_kib": first_after[1], "end_kib": million[-1][1],
                "peak_kib": max(r[2] for r in million), "requests": million[-1][0]}
        w(f"RSS: {flat['start_kib']:,} KiB idle, {flat['after_100k_kib']:,} KiB after the first "
          f"{first_after[0]:,} requests, **{flat['end_kib']:,} KiB after {flat['requests']:,}** (peak {flat['peak_kib']:,} KiB): "
          + ("growth after the first 100k requests "
             f"{flat['end_kib'] - flat['after_100k_kib']:+,} KiB." ))
        w("")
        w("| requests served | VmRSS | VmHWM |")
        w("|---|---|---|")
        step = max(1, len(million) // 12)
        for i, r in enumerate(million):
            if i % step == 0 or i == len(million) - 1:
                w(f"| {r[0]:,} | {r[1]:,} KiB | {r[2]:,} KiB |")
        w("")

    if meta.get("perf") == "1":
        w("## Profile of keyward under load (perf, not part of the numbers above)")
        w("")
        w("`perf record --call-graph dwarf -F 499 -p KEYWARD_PID` during one more load run; self time by symbol")
        w("(`perf report --no-children --sort dso,symbol`), entries ≥ 0.7 %:")
        w("")
        w("```")
        w((work / "perf-self.txt").read_text().rstrip() if (work / "perf-self.txt").exists() else "")
        w("```")
        w("")
        w("On a virtual machine without a PMU, perf samples on a timer, so kernel samples pile up where")
        w("interrupts are re-enabled (finish_task_switch, _raw_spin_unlock_irqrestore): read them as")
        w("\"in the kernel\", mostly loopback TCP. Where keyward's time goes, by call stack")
        w("(bench/perf_summary.py):")
        w("")
        w("```")
        w((work / "perf-children.txt").read_text().rstrip() if (work / "perf-children.txt").exists() else "")
        w("```")
        w("")

    w("## Exact commands")
    w("")
    w("```")
    w("meson setup build-bench -Dbuildtype=release -Db_ndebug=true -Dwerror=false && ninja -C build-bench keyward")
    w("nginx -p WORK/upstream -c WORK/upstream.conf -e WORK/upstream/error.log -g 'daemon off;'")
    w("nginx -p WORK/front -c WORK/front.conf -e WORK/front/error.log -g 'daemon off;'")
    w("KEYWARD_HOME=WORK/kw/home BENCH_TOKEN=… build-bench/keyward proxy --policy WORK/policy.yaml \\")
    w("    --listen 127.0.0.1:0 --audit WORK/kw/audit.jsonl --resolve api.test:127.0.0.1")
    seen = set()
    for case in ("load", "post", "single"):
        for t in TARGETS:
            for r in runs.get((case, t), [])[:1]:
                if r["cmd"] not in seen:
                    seen.add(r["cmd"])
                    w(f"{r['cmd']}    # {case}, {t}")
    w("curl -sS -o /dev/null -x http://127.0.0.1:KEYWARD --cacert KEYWARD_CA -w '%{http_code} %{time_connect} "
      "%{time_appconnect} %{time_starttransfer} %{time_total}\\n' https://api.test:UPSTREAM_TLS/api/x   # ×N, new tunnels")
    w("curl … -x http://127.0.0.1:KEYWARD … 'https://api.test:UPSTREAM_TLS/api/x?[1-2000]'   # one tunnel")
    w("python3 bench/idle_conns.py KEYWARD_PID 127.0.0.1 KEYWARD api.test UPSTREAM 1000 silent|used")
    w("```")
    w("")
    w(f"Ports of this run: {meta.get('ports', '?')}. keyward wrote {meta.get('audit_records', '?')} audit records")
    w("during (a) and (b).")
    w("")
    w("Configurations used (WORK is a temporary directory):")
    for name, lang in (("upstream.conf", "nginx"), ("front.conf", "nginx"), ("policy.yaml", "yaml")):
        p = raw / name
        if p.exists():
            w("")
            w(f"`{name}`:")
            w("")
            w(f"```{lang}")
            w(p.read_text().replace(str(work), "WORK").rstrip())
            w("```")
    w("")
    w("<details><summary>Raw wrk output of every run</summary>")
    w("")
    for case in ("load", "post", "single"):
        for i in range(max(len(runs.get((case, t), [])) for t in TARGETS)):
            for t in TARGETS:
                if i < len(runs[case, t]):
                    w(f"`{case} {t} #{i + 1}`")
                    w("")
                    w("```")
                    w(runs[case, t][i]["text"].replace(str(work), "WORK").rstrip())
                    w("```")
                    w("")
    w("</details>")
    # Machine-readable headline for bench/plot.py.
    head = {"date": meta["date"][:10], "host": meta["host"], "loadavg": meta.get("loadavg", "?"),
            "keyward_rev": meta.get("keyward_rev", "?"),
            "rps": {case: {t: S[case, t]["rps"] for t in TARGETS} for case in CASES},
            "mem_per_conn_kib": {f"{n}-{mode}": m["per_conn_kib"] for (n, mode), m in mem.items()},
            "million": flat}
    w("")
    w("<!-- bench-headline " + json.dumps(head) + " -->")
    out.write_text("\n".join(L) + "\n")

    print()
    print(f"== keyward benchmark summary ({meta['date'][:10]}, {meta['host']}, {meta['nproc']} CPUs) ==")
    for case, label in (("load", f"load ({settings.get('conns')} connections, {settings.get('threads')} threads)"),
                        ("post", "POST, load"), ("single", "one connection, one CPU"), ("tls", "HTTPS keep-alive"),
                        ("tls-post", "HTTPS POST keep-alive"),
                        ("newconn", "HTTPS new connections, resumption"), ("newconn-full", "HTTPS new connections, full")):
        if case not in CASES:
            continue
        print(f"{label}:")
        for t in TARGETS:
            s = S[case, t]
            extra = "" if t == "direct" else \
                f"  added p50 {added[case, t, 'p50']:+.0f} µs, p99 {added[case, t, 'p99']:+.0f} µs"
            print(f"  {t:8} {s['rps']:>10,.0f} req/s  p50 {fmt_us(s['p50']):>8}  p99 {fmt_us(s['p99']):>8}{extra}")
    print(f"keyward/nginx throughput: {ratio:.3f}, round by round {ratio_paired:.3f} (goal ≥ 1: {'met' if ok_ratio else 'NOT met'})")
    print(f"added p50, one connection on one CPU: {a50:+.0f} µs (goal ≤ 10 µs: {'met' if a50 <= GOAL_ADDED_P50 else 'NOT met'})")
    print(f"HTTPS new tunnel via keyward: total p50 {fmt_us(T['keyward']['tot50'])}, p99 {fmt_us(T['keyward']['tot99'])} "
          f"(direct new TLS connection p50 {fmt_us(T['direct']['tot50'])}, p99 {fmt_us(T['direct']['tot99'])})")
    print(f"HTTPS request in a kept-alive tunnel: p50 {fmt_us(I['keyward']['tot50'])}, p99 {fmt_us(I['keyward']['tot99'])} "
          f"(direct p50 {fmt_us(I['direct']['tot50'])}, p99 {fmt_us(I['direct']['tot99'])})")
    print(f"memory per idle connection: {per_conn:.1f} KiB silent, {per_conn_used:.1f} KiB used "
          f"(goal < 20 KiB: {'met' if max(per_conn, per_conn_used) < GOAL_PER_CONN else 'NOT met'})")
    for (case, o), (r, pr) in RATIOS.items():
        print(f"keyward/{o} {case}: {r:.2f} (rounds {', '.join(f'{x:.2f}' for x in pr)})")
    if flat:
        print(f"RSS over {flat['requests']:,} requests: {flat['start_kib']:,} → {flat['end_kib']:,} KiB (peak {flat['peak_kib']:,})")
    print(f"results: {out}")


if __name__ == "__main__":
    main()
