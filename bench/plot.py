#!/usr/bin/env python3
"""Draws the headline figures of one `make bench` run as an SVG.

    plot.py PROXY_RESULTS.md SANDBOX_RESULTS.md OUT.svg

Reads the `<!-- bench-headline {...} -->` line that bench/report.py and
bench/sandbox.sh write at the end of their results files. Left: each
proxy's throughput relative to nginx's in the same run (nginx = 1), for
plain HTTP and intercepted HTTPS. Right: median start-up time of
`keyward run -- /bin/true` next to bubblewrap and firejail. No plotting
library: the SVG is written by hand.
"""
import json
import re
import sys
from xml.sax.saxutils import escape

COLORS = {"keyward": "#2b6cb0", "nginx": "#38a169", "caddy": "#d69e2e", "mitmproxy": "#c53030",
          "direct": "#718096", "bwrap": "#38a169", "firejail": "#d69e2e", "true": "#a0aec0"}


def headline(path):
    m = re.search(r"<!-- bench-headline (\{.*\}) -->", open(path).read())
    if not m:
        raise SystemExit(f"{path}: no bench-headline line (made by an older script?)")
    return json.loads(m.group(1))


def main():
    proxy, sandbox, out = headline(sys.argv[1]), headline(sys.argv[2]), sys.argv[3]
    W, H = 1000, 340
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']

    def text(x, y, s, size=12, anchor="start", weight="normal", fill="#1a202c"):
        svg.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                   f'font-weight="{weight}" fill="{fill}">{escape(s)}</text>')

    def rect(x, y, w, h, fill):
        svg.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(w, 0.5):.1f}" height="{h:.1f}" fill="{fill}"/>')

    text(20, 24, f"keyward benchmark, {proxy['date']} on {proxy['host']} (one 2-CPU machine for all; "
         f"load average {proxy['loadavg'].split(' at start')[0]} at start)", 13, weight="bold")

    # ---- left: throughput relative to nginx
    cases = [("load", "HTTP, 32 keep-alive conns"), ("tls", "HTTPS, 32 keep-alive conns"),
             ("newconn", "HTTPS, new conn per request")]
    cases = [(c, l) for c, l in cases if c in proxy["rps"]]
    who = ["keyward", "nginx", "caddy", "mitmproxy"]
    x0, y0, pw = 190, 60, 280
    top = max(proxy["rps"][c][t] / proxy["rps"][c]["nginx"] for c, _ in cases for t in who if t in proxy["rps"][c])
    scale = pw / max(1.5, top * 1.05)
    text(20, y0 - 12, "Throughput relative to nginx (same run, interleaved)", 12, weight="bold")
    y = y0
    bar = 14
    for c, label in cases:
        text(20, y + 2 * bar, label, 11)
        for t in who:
            if t not in proxy["rps"][c]:
                continue
            r = proxy["rps"][c][t] / proxy["rps"][c]["nginx"]
            rect(x0, y, r * scale, bar - 2, COLORS[t])
            text(x0 + r * scale + 4, y + bar - 4, f"{t} {r:.2f} ({proxy['rps'][c][t]:,.0f}/s)", 10)
            y += bar
        y += 14
    svg.append(f'<line x1="{x0 + scale:.1f}" y1="{y0 - 4}" x2="{x0 + scale:.1f}" y2="{y - 10}" '
               'stroke="#4a5568" stroke-dasharray="3,3"/>')
    text(x0 + scale, y + 2, "nginx = 1", 10, anchor="middle", fill="#4a5568")

    # ---- right: sandbox start-up
    sx0, sy0, spw = 800, 60, 150
    med = sandbox["median_ms"]
    rows = [("true", "/bin/true"), ("bwrap", "bubblewrap"), ("firejail", "firejail --noprofile"),
            ("keyward-none", "keyward run"), ("keyward-policy", "keyward run --policy")]
    rows = [(k, l) for k, l in rows if k in med]
    smax = max(med[k] for k, _ in rows) * 1.15
    text(sx0 - 140, sy0 - 12, "Sandbox start to exit, median ms", 12, weight="bold")
    y = sy0
    for k, label in rows:
        text(sx0 - 140, y + 11, label, 11)
        color = COLORS["keyward"] if k.startswith("keyward") else COLORS.get(k, "#718096")
        rect(sx0, y, med[k] / smax * spw, 14, color)
        text(sx0 + med[k] / smax * spw + 4, y + 11, f"{med[k]:.1f}", 10)
        y += 22
    text(sx0 - 140, y + 14, f"({sandbox['date']}, load average {sandbox['loadavg'].split(' at start')[0]} at start)", 10,
         fill="#4a5568")

    mem = proxy.get("mem_per_conn_kib", {})
    mil = proxy.get("million")
    yb = H - 40
    if mem:
        text(20, yb, "keyward memory per idle client connection: " +
             ", ".join(f"{k.replace('-', ' conns, ')} {v:.1f} KiB" for k, v in sorted(mem.items(), key=lambda kv: int(kv[0].split('-')[0]))),
             11)
    if mil:
        text(20, yb + 18, f"RSS over {mil['requests']:,} requests: {mil['start_kib']:,} KiB idle, "
             f"{mil['after_100k_kib']:,} KiB after 100k, {mil['end_kib']:,} KiB at the end (peak {mil['peak_kib']:,} KiB)", 11)
    svg.append("</svg>")
    open(out, "w").write("\n".join(svg) + "\n")


if __name__ == "__main__":
    main()
