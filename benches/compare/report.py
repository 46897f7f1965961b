#!/usr/bin/env python3
"""Turns benches/compare/results/full.json into the markdown table (between the
`<!-- compare:begin -->` / `<!-- compare:end -->` markers of docs/performance.md) and the SVG plot
docs/img/compare-spark.svg (written by hand, no plotting library needed)."""
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DOC = os.path.join(ROOT, "docs", "performance.md")
SVG = os.path.join(ROOT, "docs", "img", "compare-spark.svg")
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def fmt_rate(v):
    if v is None:
        return "–"
    return f"{v / 1e6:.2f} M" if v >= 995_000 else f"{v / 1e3:.0f} k"


def step_at(r, rate):
    for s in (r or {}).get("steps_result", []):
        if s.get("records_per_s") == rate and s.get("sustained"):
            return s
    return {}


def ratio(a, b, inv=False):
    if not a or not b:
        return "–"
    return f"{(b / a) if inv else (a / b):.1f}×"


def table(R):
    ss, pys, scs = R.get("spate_stateless"), R.get("spark_py_stateless"), R.get("spark_scala_stateless")
    sf, scf = R.get("spate_stateful"), R.get("spark_scala_stateful")
    sc, pc = R.get("spate_crash", {}), R.get("spark_crash", {})
    g = lambda r, k: (r or {}).get(k)  # noqa: E731
    loop = R.get("loopback_limit", {}).get("lines_per_s")
    disk = R.get("disk_limit", {}).get("bytes_per_s")
    bpl = R.get("corpus_bytes_per_line", 75)
    rows = []

    def row(metric, sp, py, sca, rat, target, met):
        rows.append(f"| {metric} | {sp} | {py} | {sca} | {rat} | {target} | {met} |")

    # 1 stateless
    a, b, c = g(ss, "max_sustained_records_per_s"), g(pys, "max_sustained_records_per_s"), g(scs, "max_sustained_records_per_s")
    top = lambda r: max((s["rate_offered"] for s in (r or {}).get("steps_result", [])), default=0)  # noqa: E731
    ge = lambda r, v: "≥ " if r and v and v >= 0.95 * top(r) else ""  # noqa: E731
    bound = min(20 * c, 0.8 * loop) if c and loop else None
    row("1 stateless word count, max sustained lines/s (1 s batch)",
        f"{ge(ss, a)}{fmt_rate(a)}", f"{ge(pys, b)}{fmt_rate(b)}", f"{ge(scs, c)}{fmt_rate(c)}",
        f"{ratio(a, c)} Scala, {ratio(a, b)} PySpark",
        f"≥ 20× Scala ({fmt_rate(20 * c) if c else '–'}) or ≥ 80 % of loopback ({fmt_rate(0.8 * loop) if loop else '–'})",
        ("**met**" if a and bound and a >= bound else "not met") + (f" (bound {fmt_rate(bound)})" if bound else ""))
    ps = lambda r, v: step_at(r, v)  # noqa: E731
    row("  processing time p50 / p90 at that rate, ms",
        f"{ps(ss, a).get('proc_ms_median', '–')} / {ps(ss, a).get('proc_ms_p90', '–')}",
        f"{ps(pys, b).get('proc_ms_median', '–')} / {ps(pys, b).get('proc_ms_p90', '–')}",
        f"{ps(scs, c).get('proc_ms_median', '–')} / {ps(scs, c).get('proc_ms_p90', '–')}", "", "", "")
    # 2 stateful
    a2, c2 = g(sf, "max_sustained_records_per_s"), g(scf, "max_sustained_records_per_s")
    wal_lim = disk / bpl if disk else None
    bound2 = min(20 * c2, 0.8 * wal_lim) if c2 and wal_lim else None
    row("2 stateful running count, WAL + checkpoints on, max sustained lines/s",
        f"{ge(sf, a2)}{fmt_rate(a2)}", "not usable at 1 s ¹", f"{ge(scf, c2)}{fmt_rate(c2)}",
        f"{ratio(a2, c2)} Scala",
        f"≥ 20× Scala ({fmt_rate(20 * c2) if c2 else '–'}) or ≥ 80 % of fsync'd disk ({fmt_rate(0.8 * wal_lim) if wal_lim else '–'} lines/s)",
        ("**met**" if a2 and bound2 and a2 >= bound2 else "not met") + (f" (bound {fmt_rate(bound2)})" if bound2 else ""))
    # 3 recovery
    r1, r2 = sc.get("recovery_s_to_first_batch_median"), pc.get("recovery_s_to_first_batch_median")
    row("3 kill -9 → restart → first completed batch, s (median; 2 s batches for both)",
        f"{r1} (per kill: {[x.get('recovery_s_to_first_batch') for x in sc.get('results', [])]})",
        f"{r2} (per kill: {pc.get('recovery_s_to_first_batch')})", "– ²",
        f"{ratio(r1, r2, inv=True)} faster", "≤ 1/20 of Spark's",
        "**met**" if r1 and r2 and r1 <= r2 / 20 else "not met")
    row("  … → caught up (scheduling delay < interval), s (median)",
        f"{sc.get('recovery_s_to_caught_up_median')}",
        f"{pc.get('recovery_s_to_caught_up_median') or 'not within the run'} (per kill: {pc.get('recovery_s_to_caught_up')})", "– ²",
        ratio(sc.get("recovery_s_to_caught_up_median"), pc.get("recovery_s_to_caught_up_median"), inv=True) + " faster", "", "")
    lost_s, dup_s = sc.get("lost_words", []), sc.get("dup_words", [])
    row("  words lost / duplicated per kill (independent Counter)",
        f"{lost_s} / {dup_s}", f"{pc.get('lost_words')} / {pc.get('dup_words')}", "– ²", "",
        "0 lost, 0 dup", "**met**" if lost_s and all(x == 0 for x in lost_s + dup_s) else "not met")
    # 4 RSS + CPU
    jvm = lambda r: max([x for x in (g(r, "jvm_vmhwm_mib"), g(r, "jvm_vmhwm_mib_own")) if x] or [None])  # noqa: E731
    allp = lambda r: max([x for x in (g(r, "all_processes_peak_rss_mib"), g(r, "sampled_peak_rss_mib")) if x] or [None])  # noqa: E731
    sus = lambda r: g(r, "peak_rss_mib_upto_max_sustained")  # noqa: E731
    spk = lambda r: sus(r) or allp(r)  # noqa: E731

    def rss_row(label, sp, py, sc):
        ref = [x for x in (spk(py) if py else None, spk(sc) if sc else None) if x]
        cell = lambda r: (f"{sus(r)}" if sus(r) else f"{allp(r)} (whole run: no step sustained)") if r else "–"  # noqa: E731
        rat = ", ".join(f"1/{x / sus(sp):.1f} of {n}" for x, n in ((spk(py) if py else None, "PySpark"), (spk(sc) if sc else None, "Scala")) if x and sus(sp))
        row(label, f"{sus(sp)}", cell(py), cell(sc), rat or "–", "≤ 1/10",
            "**met**" if sus(sp) and ref and all(sus(sp) <= x / 10 for x in ref) else "not met")
    rss_row("4 peak RSS, stateless, from start to the end of each engine's highest sustained step, MiB (all the engine's processes)", ss, pys, scs)
    rss_row("  same, stateful + WAL run", sf, None, scf)

    def same_rate(sp, sk, label):
        """spate's peak RSS up to its first step offering at least Spark's max sustained rate."""
        ms = max((x for x in (sk or {}).get("steps_result", []) if x.get("sustained")),
                 key=lambda x: x["records_per_s"], default=None)
        if not ms or not sp:
            return
        st = next((x for x in sp.get("steps_result", []) if x["rate_offered"] >= ms["rate_offered"] and x.get("rss_mib_upto")), None)
        if not st:
            return
        a_, b_ = st["rss_mib_upto"], sus(sk)
        row(f"  {label}: spate up to its {fmt_rate(st['rate_offered'])} step vs Spark Scala up to its max sustained {fmt_rate(ms['rate_offered'])} step, MiB",
            f"{a_}", "", f"{b_}", f"1/{b_ / a_:.1f}" if a_ and b_ else "–", "≤ 1/10",
            "**met**" if a_ and b_ and a_ <= b_ / 10 else "not met")
    same_rate(ss, scs, "stateless, same load")
    same_rate(sf, scf, "stateful + WAL, same load")
    row("  peak over the whole staircase incl. overloaded steps, MiB (spate VmHWM; Spark: JVM VmHWM / all processes); stateless ; stateful",
        f"{g(ss, 'vmhwm_mib')} ; {g(sf, 'vmhwm_mib')}", f"{jvm(pys)} / {allp(pys)} ; –",
        f"{jvm(scs)} / {allp(scs)} ; {jvm(scf)} / {allp(scf)}", "", "", "")
    def cp(r, v):
        """CPU-s per M lines at the max sustained step, else at the lowest step (marked)."""
        st = ps(r, v)
        if st.get("cpu_s_per_mlines") is not None:
            return st["cpu_s_per_mlines"]
        low = next((s for s in (r or {}).get("steps_result", []) if s.get("cpu_s_per_mlines") is not None), None)
        return f"{low['cpu_s_per_mlines']} (at {fmt_rate(low['rate_offered'])}, not sustained)" if low else "–"
    row("  CPU-seconds per million lines, stateless, at the max sustained step",
        f"{cp(ss, a)}", f"{cp(pys, b)}", f"{cp(scs, c)}",
        ratio(cp(scs, c) if isinstance(cp(scs, c), (int, float)) else None,
              cp(ss, a) if isinstance(cp(ss, a), (int, float)) else None) + " less than Scala", "", "")
    row("  CPU-seconds per million lines, stateful + WAL, at the max sustained step",
        f"{cp(sf, a2)}", "–", f"{cp(scf, c2)}",
        ratio(cp(scf, c2) if isinstance(cp(scf, c2), (int, float)) else None,
              cp(sf, a2) if isinstance(cp(sf, a2), (int, float)) else None) + " less than Scala", "", "")
    # 5 WAL
    row("5 WAL bytes written per input byte (stateful run)", f"{g(sf, 'wal_bytes_per_input_byte')}",
        "–", f"{g(scf, 'wal_bytes_per_input_byte')}", "", "", "")
    head = ["| metric | spate | PySpark 3.5.9 | Scala twin | ratio | target | verdict |",
            "|---|---|---|---|---|---|---|"]
    return "\n".join(head + rows)


def feeder_table(R):
    out = ["| run | offered lines/s | feeder sent lines/s | engine received lines/s | p50 / p90 / p99 processing ms | tail sched. delay ms | CPU-s / M lines | foreign cores | sustained |",
           "|---|---|---|---|---|---|---|---|---|"]
    for key, label in (("spate_stateless", "spate stateless"), ("spark_py_stateless", "PySpark stateless"),
                       ("spark_scala_stateless", "Scala stateless"), ("spate_stateful", "spate stateful+WAL"),
                       ("spark_scala_stateful", "Scala stateful+WAL")):
        r = R.get(key)
        if not r:
            continue
        for s in r.get("steps_result", []):
            out.append(f"| {label} | {fmt_rate(s['rate_offered'])} | {fmt_rate(s.get('feeder_achieved_rate'))} | "
                       f"{fmt_rate(s.get('records_per_s'))} | {s.get('proc_ms_median', '–')} / {s.get('proc_ms_p90', '–')} / {s.get('proc_ms_p99', '–')} | "
                       f"{s.get('sched_ms_tail_max', '–')} | {s.get('cpu_s_per_mlines', '–')} | {s.get('foreign_cores', '–')} | "
                       f"{'yes' if s.get('sustained') else '**no**'} |")
    return "\n".join(out)


SERIES = [("spate_stateless", "spate stateless", "#1f77b4", "circle"),
          ("spate_stateful", "spate stateful+WAL", "#2ca02c", "square"),
          ("spark_py_stateless", "PySpark stateless", "#d62728", "circle"),
          ("spark_scala_stateless", "Spark Scala stateless", "#ff7f0e", "circle"),
          ("spark_scala_stateful", "Spark Scala stateful+WAL", "#9467bd", "square")]


def log_ticks(lo, hi):
    """The 1-2-5 ticks of each decade from `lo` up to `hi`."""
    d = lo
    while d <= hi * 1.001:
        for m in (1, 2, 5):
            v = d * m
            if v > hi * 1.001:
                break
            yield v
        d *= 10


def svg(R):
    W, H, pad = 1000, 430, 60
    pw = (W - 3 * pad) / 2
    ph = H - 2 * pad - 30
    xs = [s["rate_offered"] for k, *_ in SERIES for s in (R.get(k) or {}).get("steps_result", [])]
    if not xs:
        return None
    xmin, xmax = 10 ** math.floor(math.log10(min(xs))), 10 ** math.ceil(math.log10(max(xs)))
    lx = lambda v, x0: x0 + (math.log10(v) - math.log10(xmin)) / (math.log10(xmax) - math.log10(xmin)) * pw  # noqa: E731
    ly = lambda v: pad + ph - (math.log10(v) - math.log10(xmin)) / (math.log10(xmax) - math.log10(xmin)) * ph  # noqa: E731
    pmax = 2000
    py = lambda v: pad + ph - min(v, pmax) / pmax * ph  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>',
         f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">spate vs Spark Streaming, word count over a socket, 1 s batches, 2-core VM ({R.get("started", "")})</text>']
    x1, x2 = pad, 2 * pad + pw
    for x0, title in ((x1, "received lines/s vs offered (log-log); hollow = not sustained"),
                      (x2, "processing time p50 (solid) / p90 (dashed), ms, vs offered")):
        o.append(f'<rect x="{x0}" y="{pad}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        o.append(f'<text x="{x0 + pw / 2}" y="{pad - 8}" text-anchor="middle">{title}</text>')
        for v in log_ticks(xmin, xmax):
            X = lx(v, x0)
            o.append(f'<line x1="{X:.1f}" y1="{pad}" x2="{X:.1f}" y2="{pad + ph}" stroke="#ddd"/>')
            o.append(f'<text x="{X:.1f}" y="{pad + ph + 15}" text-anchor="middle">{fmt_rate(v)}</text>')
        o.append(f'<text x="{x0 + pw / 2}" y="{pad + ph + 32}" text-anchor="middle">offered lines/s</text>')
    for v in log_ticks(xmin, xmax):
        Y = ly(v)
        o.append(f'<line x1="{x1}" y1="{Y:.1f}" x2="{x1 + pw}" y2="{Y:.1f}" stroke="#ddd"/>')
        o.append(f'<text x="{x1 - 4}" y="{Y + 4:.1f}" text-anchor="end">{fmt_rate(v)}</text>')
    o.append(f'<line x1="{lx(xmin, x1):.1f}" y1="{ly(xmin):.1f}" x2="{lx(xmax, x1):.1f}" y2="{ly(xmax):.1f}" stroke="#999" stroke-dasharray="3,3"/>')
    for v in range(0, pmax + 1, 250):
        Y = py(v)
        o.append(f'<line x1="{x2}" y1="{Y:.1f}" x2="{x2 + pw}" y2="{Y:.1f}" stroke="{"#c00" if v == 1000 else "#ddd"}"/>')
        o.append(f'<text x="{x2 - 4}" y="{Y + 4:.1f}" text-anchor="end">{v}</text>')
    o.append(f'<text x="{x2 + pw - 4}" y="{py(1000) - 4:.1f}" text-anchor="end" fill="#c00">batch interval</text>')
    ly0 = H - 18
    for i, (k, label, col, shape) in enumerate(SERIES):
        steps = [s for s in (R.get(k) or {}).get("steps_result", []) if s.get("records_per_s")]
        if not steps:
            continue
        pts = " ".join(f"{lx(s['rate_offered'], x1):.1f},{ly(max(s['records_per_s'], xmin)):.1f}" for s in steps)
        o.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.5"/>')
        for s in steps:
            X, Y = lx(s["rate_offered"], x1), ly(max(s["records_per_s"], xmin))
            fill = col if s.get("sustained") else "white"
            if shape == "circle":
                o.append(f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="4" fill="{fill}" stroke="{col}"/>')
            else:
                o.append(f'<rect x="{X - 4:.1f}" y="{Y - 4:.1f}" width="8" height="8" fill="{fill}" stroke="{col}"/>')
        for key, dash in (("proc_ms_median", ""), ("proc_ms_p90", ' stroke-dasharray="5,3"')):
            pts = " ".join(f"{lx(s['rate_offered'], x2):.1f},{py(s[key]):.1f}" for s in steps if s.get(key) is not None)
            o.append(f'<polyline points="{pts}" fill="none" stroke="{col}" stroke-width="1.5"{dash}/>')
        for s in steps:
            if s.get("proc_ms_median") is not None:
                fill = col if s.get("sustained") else "white"
                o.append(f'<circle cx="{lx(s["rate_offered"], x2):.1f}" cy="{py(s["proc_ms_median"]):.1f}" r="3" fill="{fill}" stroke="{col}"/>')
        lx0 = pad + i * 190
        o.append(f'<rect x="{lx0}" y="{ly0 - 9}" width="10" height="10" fill="{col}"/>')
        o.append(f'<text x="{lx0 + 14}" y="{ly0}">{label}</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


def main(path):
    with open(path) as f:
        R = json.load(f)
    s = svg(R)
    if s:
        os.makedirs(os.path.dirname(SVG), exist_ok=True)
        with open(SVG, "w") as f:
            f.write(s)
    md = (f"Run {R.get('started')} (commit `{R.get('git')}`), {R.get('elapsed_s', 0) / 60:.1f} min, "
          f"load average before / after: {' '.join(R.get('load_before', []))} / {' '.join(R.get('load_after', []))}.\n\n"
          + table(R) + "\n\nPer step (the feeder columns show the feeder was not the bottleneck when "
          "*sent ≈ offered*):\n\n" + feeder_table(R) + "\n\n![spate vs Spark](img/compare-spark.svg)\n")
    with open(DOC) as f:
        doc = f.read()
    if BEGIN in doc and END in doc:
        a, rest = doc.split(BEGIN, 1)
        _, b = rest.split(END, 1)
        doc = a + BEGIN + "\n" + md + END + b
        with open(DOC, "w") as f:
            f.write(doc)
        print(f"updated {DOC} and {SVG}")
    else:
        print(md)
        print(f"(markers {BEGIN} / {END} not found in {DOC}; printed instead)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "results", "full.json"))
