"""Medians, ratios against the anchors, the bars of issue 5, a markdown table and a chart."""

import statistics

COLD = [("floor", "compile() CPU / cores (floor)"),
        ("cold_compileall", "`python -m compileall -f -q -j0`"),
        ("cold_uv", "uv `--compile-bytecode` (compile phase)"),
        ("cold_pycache_local", "pycache sync, empty local cache"),
        ("cold_pycache_server", "pycache sync, empty local cache + empty server")]
COPY_FLOOR = "warm_cp_copy"
# Results written before the floor became `cp -a` hold an in-harness shutil copy instead;
# --report-only shows it under its own name, and bars against the floor read n/a.
OLD_COPY_FLOOR = "warm_plain_copy"
WARM = [(COPY_FLOOR, "`cp -a --parents` of the `__pycache__` dirs (floor)"),
        (OLD_COPY_FLOOR, "shutil copy of the .pyc files, in the harness (old floor)"),
        ("warm_pycache_local", "pycache sync from the local cache"),
        ("warm_pycache_server", "pycache sync from the server only")]
NOOP = [("noop_compileall", "`python -m compileall -q`"),
        ("noop_pycache", "pycache sync (all up to date)")]


def medians(runs):
    """{step: median seconds} over the runs, plus max client RSS and server RSS."""
    steps = [k for k, v in runs[0].items() if isinstance(v, dict)]
    med = {k: statistics.median(r[k]["seconds"] for r in runs) for k in steps}
    med.update({f"rss:{k}": max(r[k]["rss_mb"] for r in runs) for k in steps})
    client_rss = max(r[k]["rss_mb"] for r in runs for k in steps if "pycache" in k)
    server_rss = max(r.get("server_rss_mb", 0) for r in runs)
    return med, client_rss, server_rss


def bars(med, client_rss, load):
    """(bar, measured, limit text, met?) for each bar of the issue."""
    ratio = lambda a, b: med[a] / med[b] if med.get(a) and med.get(b) else float("nan")
    out = [
        ("cold ≤ 1.15× floor", ratio("cold_pycache_local", "floor"), "≤ 1.15", None),
        ("cold faster than uv", ratio("cold_pycache_local", "cold_uv"), "< 1.00", None),
        ("warm local ≤ 2× plain copy", ratio("warm_pycache_local", COPY_FLOOR), "≤ 2.00", None),
        ("warm local ≥ 8× faster than compileall cold",
         ratio("cold_compileall", "warm_pycache_local"), "≥ 8.00 (speed-up)", None),
        ("warm server ≤ 3× plain copy", ratio("warm_pycache_server", COPY_FLOOR), "≤ 3.00", None),
        ("no-op ≤ 0.25× compileall -q", ratio("noop_pycache", "noop_compileall"), "≤ 0.25", None),
        ("client peak RSS < 150 MB (on stdlib+Django+SymPy ⊇ stdlib)", client_rss, "< 150 MB", None),
    ]
    limits = [1.15, 1.0, 2.0, 8.0, 3.0, 0.25, 150.0]
    ops = ["le", "lt", "le", "ge", "le", "le", "lt"]
    checked = []
    for (name, value, text, _), lim, op in zip(out, limits, ops):
        ok = {"le": value <= lim, "lt": value < lim, "ge": value >= lim}[op]
        checked.append((name, value, text, ok))
    cell = (load or {}).get("sqlite", {}).get(16)
    if cell:
        p50, p99 = cell["client_fetch_p50"], cell["client_fetch_p99"]
        r = p99 / p50 if p50 else float("inf")
        checked.append(("16 clients on SQLite: no errors, p99 batch get < 10× p50 (client-side)", r,
                        "< 10.0 (p99/p50), 0 errors", cell["errors"] == 0 and r < 10))
    return checked


def _fmt_s(x):
    return "—" if x is None else (f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s")


def _rss(med, key):
    rss = med.get(f"rss:{key}")
    return f"{rss:.0f} MB" if rss else "—"


def _section(title, rows, med, anchor):
    lines = [f"| **{title}** | | | |"]
    for key, label in rows:
        if key in med:
            r = med[key] / med[anchor] if med.get(anchor) else float("nan")
            lines.append(f"| {label} | {_fmt_s(med[key])} | {r:.2f}× | {_rss(med, key)} |")
    return lines


def timing_table(med):
    """Medians with ratios against each section's anchor."""
    lines = ["| step | median | ratio to the section's first row | peak RSS (max) |",
             "|---|---:|---:|---:|"]
    lines += _section("cold (no pyc, empty caches)", COLD, med, "floor")
    copy = COPY_FLOOR if COPY_FLOOR in med else OLD_COPY_FLOOR
    lines += _section("warm (fresh copy, full caches)", WARM, med, copy)
    lines.append(f"| compileall cold (reference) | {_fmt_s(med['cold_compileall'])} | "
                 f"{med['cold_compileall'] / med[copy]:.2f}× | |")
    lines += _section("no-op (everything up to date)", NOOP, med, "noop_compileall")
    return lines


def bar_table(checked):
    """The bars of issue 5 with PASS/MISS."""
    lines = ["| bar | measured | limit | result |", "|---|---:|---|---|"]
    for name, value, limit, ok in checked:
        lines.append(f"| {name} | {value:.2f} | {limit} | {'PASS' if ok else 'MISS'} |")
    return lines


def load_table(load):
    """One row per (backend, N)."""
    lines = ["| backend | clients | get req/s | get MB/s | batch get p50 / p99 (server) | "
             "batch get p50 / p99 (client, body incl.) | put req/s | put MB/s | "
             "batch put p50 / p99 (server) | errors | server RSS |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for backend, cells in load.items():
        for n, c in sorted(cells.items()):
            lines.append(
                f"| {backend} | {n} | {c['get_requests_per_s']:.1f} | {c['get_mb_per_s']:.1f} | "
                f"{_fmt_s(c['get_p50'])} / {_fmt_s(c['get_p99'])} | "
                f"{_fmt_s(c['client_fetch_p50'])} / {_fmt_s(c['client_fetch_p99'])} | "
                f"{c['put_requests_per_s']:.2f} | {c['put_mb_per_s']:.1f} | "
                f"{_fmt_s(c['put_p50'])} / {_fmt_s(c['put_p99'])} | {c['errors']} | "
                f"{c['server_rss_mb']:.0f} MB |")
    return lines


def markdown(meta, med, client_rss, server_rss, checked, load):
    """The whole latest.md."""
    out = [f"# pycache benchmark ({meta['mode']}, {meta['runs']} run(s), medians)", "",
           f"{meta['when']} · {meta['machine']} · target {meta['python_version']} · "
           f"pycache {meta['commit']} · uv {meta['uv_version']} · corpus: {meta['corpus_text']} · "
           f"load average before/after: {meta['load_before']} / {meta['load_after']}", "",
           "## Timings", "", *timing_table(med), "",
           f"Peak RSS: client {client_rss:.0f} MB (largest over every pycache run), "
           f"server {server_rss:.0f} MB (cold + warm runs).", "",
           "## Bars (issue 5)", "", *bar_table(checked), ""]
    if load:
        out += [f"## Server load ({meta['load_text']})", "", *load_table(load), ""]
    return "\n".join(out)


def chart(path, med, checked, load):
    """A PNG: medians per section (linear seconds), and the load test's batch get latencies."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    med = {k: v for k, v in med.items() if not k.startswith("rss:")}
    panels = [("cold: no pyc, empty caches", COLD), ("warm: fresh copy, full caches", WARM),
              ("no-op: everything up to date", NOOP)]
    fig, axes = plt.subplots(2, 2, figsize=(14, 8))
    for ax, (title, rows) in zip(axes.flat, panels):
        keys = [(k, l.replace("`", "")) for k, l in rows if k in med][::-1]
        floors = ("floor", COPY_FLOOR, OLD_COPY_FLOOR)
        colors = ["#2a7" if "pycache" in k else ("#888" if k in floors else "#c84")
                  for k, _ in keys]
        ax.barh([l for _, l in keys], [med[k] for k, _ in keys], color=colors)
        ax.set_title(f"{title} (median s)")
        for i, (k, _) in enumerate(keys):
            ax.text(med[k], i, f" {med[k]:.3g} s", va="center", fontsize=8)
        ax.margins(x=0.2)
    ax = axes.flat[3]
    if load:
        for backend, cells in load.items():
            ns = sorted(cells, key=int)
            ax.plot(ns, [cells[n]["client_fetch_p50"] * 1000 for n in ns], "o-", label=f"{backend} p50")
            ax.plot(ns, [cells[n]["client_fetch_p99"] * 1000 for n in ns], "s--", label=f"{backend} p99")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("ms (client-side, body included)")
        ax.set_title("batch get latency under load")
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
