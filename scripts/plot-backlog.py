#!/usr/bin/env python3
"""Plots the batches rescheduled per restart of `spate chaos run --report` files as an SVG.

    scripts/plot-backlog.py OUT.svg LABEL=report.json [LABEL=report.json ...] [--before LABEL=i:n,i:n,...]

Each report's runs with a restart line contribute one point per restart (x = restart number,
y = batches rescheduled). `--before` adds a series given inline (restart number : rescheduled), for
figures recorded before the reports carried the field (docs/reliability.md, problem 2). Written by
hand (no plotting library), like benches/compare/report.py.
"""
import json
import sys

COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#d62728"]
W, H, L, R, T, B = 760, 360, 60, 20, 30, 50


def series_from_report(path):
    with open(path) as f:
        rep = json.load(f)
    ys = [r["rescheduled"] for r in rep.get("runs", []) if r.get("rescheduled") is not None]
    return list(enumerate(ys, start=1))


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out = argv[1]
    series = []
    before = None
    args = argv[2:]
    i = 0
    while i < len(args):
        if args[i] == "--before":
            label, pts = args[i + 1].split("=", 1)
            before = (label, [tuple(int(v) for v in p.split(":")) for p in pts.split(",")])
            i += 2
            continue
        label, path = args[i].split("=", 1)
        series.append((label, series_from_report(path)))
        i += 1
    if before:
        series.append(before)
    xmax = max((x for _, s in series for x, _ in s), default=1)
    ymax = max((y for _, s in series for _, y in s), default=1)
    log = ymax > 50

    def sx(x):
        return L + (W - L - R) * (x - 1) / max(1, xmax - 1)

    import math

    def sy(y):
        if log:
            top = math.log10(ymax + 1)
            return H - B - (H - B - T) * math.log10(y + 1) / top
        return H - B - (H - B - T) * y / max(1, ymax)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
        f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">restart</text>',
        f'<text x="14" y="{(T+H-B)/2}" transform="rotate(-90 14 {(T+H-B)/2})" text-anchor="middle">batches rescheduled{" (log)" if log else ""}</text>',
    ]
    ticks = [0, 1, 3, 10, 30, 100, 300, 1000, 3000] if log else [round(ymax * k / 4) for k in range(5)]
    for t in ticks:
        if t > ymax:
            continue
        y = sy(t)
        parts.append(f'<line x1="{L-4}" y1="{y:.1f}" x2="{W-R}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{L-6}" y="{y+4:.1f}" text-anchor="end">{t}</text>')
    for k in range(5):
        x = 1 + (xmax - 1) * k / 4
        parts.append(f'<text x="{sx(x):.1f}" y="{H-B+16}" text-anchor="middle">{int(x)}</text>')
    for n, (label, pts) in enumerate(series):
        c = COLORS[n % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1" points="{path}"/>')
        parts.append(f'<text x="{L+10}" y="{T+14+16*n}" fill="{c}">{label}</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main(sys.argv)
