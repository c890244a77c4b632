"""Medians, ratios against the anchors, the bars, a markdown table and a chart."""

import statistics

COLD = [("floor", "compile() CPU / cores (floor)"),
        ("cold_compileall", "`python -m compileall -f -q -j0`"),
        ("cold_uv", "uv `--compile-bytecode` (compile phase)"),
        ("cold_pycache_local", "pycache sync, empty local cache"),
        ("cold_pycache_server", "pycache sync, empty local cache + empty server"),
        ("cold_pycache_server_signed", "the same, signing every upload (`--signing-key`)")]
COPY_FLOOR = "warm_cp_copy"
PULL_REQUEST = ("pr_pycache_server", "pull request: 1% of the files changed, server warm, "
                "empty local cache")
# Results written before the floor became `cp -a` hold an in-harness shutil copy instead;
# --report-only shows it under its own name, and bars against the floor read n/a.
OLD_COPY_FLOOR = "warm_plain_copy"
WARM = [(COPY_FLOOR, "`cp -a --parents` of the `__pycache__` dirs (floor)"),
        (OLD_COPY_FLOOR, "shutil copy of the .pyc files, in the harness (old floor)"),
        ("warm_pycache_local", "pycache sync from the local cache"),
        ("warm_pycache_server", "pycache sync from the server only"),
        ("warm_pycache_server_trusted", "the same, verifying signatures (`--trusted-key`)"),
        PULL_REQUEST]
NOOP = [("noop_compileall", "`python -m compileall -q`"),
        ("noop_pycache", "pycache sync (all up to date)")]
# Warm from the server through the shaped link (netlab.py), anchored on the loopback row.
NET = [("warm_pycache_server", "pycache sync from the server only, loopback (as above)"),
       ("warm_pycache_server_proxy", "the same through the namespace and the delaying proxy "
        "(~10 ms round trip), no rate limit"),
       ("warm_pycache_server_1gbit", "the same at 1 Gbit/s (`tbf`), ~10 ms round trip"),
       ("warm_pycache_server_100mbit", "the same at 100 Mbit/s (`tbf`), ~10 ms round trip")]
STDLIB_COPY_FLOOR = "stdlib_warm_cp_copy"
STDLIB = [(STDLIB_COPY_FLOOR, "`cp -a --parents` of the `__pycache__` dirs (floor)"),
          ("stdlib_warm_pycache_local", "pycache sync from the local cache"),
          ("stdlib_cold_pycache_local", "pycache sync, empty local cache (fills it)")]
# Rows whose client reports bytes from the server, for the bytes-on-the-wire table.
WIRE = [("warm_pycache_server", "warm from the server (loopback)"),
        ("warm_pycache_server_trusted", "the same, verifying signatures"),
        (PULL_REQUEST[0], "pull request (1% changed)"),
        ("warm_pycache_server_proxy", "through the proxy, no rate limit"),
        ("warm_pycache_server_1gbit", "1 Gbit/s, ~10 ms round trip"),
        ("warm_pycache_server_100mbit", "100 Mbit/s, ~10 ms round trip")]
PROXY_CHECK = "netlab_proxy_check"
# Shorter labels where the table's would crowd the chart.
CHART_LABELS = {PULL_REQUEST[0]: "pull request (1% changed), server warm",
                "warm_pycache_server": "pycache sync from the server only (loopback)",
                "warm_pycache_server_proxy": "through the proxy, no rate limit",
                "warm_pycache_server_1gbit": "1 Gbit/s, ~10 ms round trip",
                "warm_pycache_server_100mbit": "100 Mbit/s, ~10 ms round trip",
                "stdlib_cold_pycache_local": "pycache sync, empty local cache"}


def medians(runs):
    """{step: median seconds} over the runs, plus max client RSS and server RSS.

    Also `fetch_seconds:<step>` and `bytes_down:<step>`: medians of the client's own
    batch get time and bytes, for the steps that report them; and `skipped:<step>`: why a
    step did not run (the first run's reason). A step missing from some runs is the median
    of the others.
    """
    steps = list(dict.fromkeys(k for r in runs for k, v in r.items() if isinstance(v, dict)))
    having = {k: [r[k] for r in runs if k in r] for k in steps}
    med = {k: statistics.median(x["seconds"] for x in having[k]) for k in steps}
    med.update({f"rss:{k}": max(x["rss_mb"] for x in having[k]) for k in steps})
    for field in ("fetch_seconds", "bytes_down"):
        med.update({f"{field}:{k}": statistics.median(x[field] for x in having[k])
                    for k in steps if all(field in x for x in having[k])})
    for r in runs:
        for k, v in r.items():
            if k.startswith("skipped:") and k.split(":", 1)[1] not in med:
                med.setdefault(k, v)
    client_rss = max(x["rss_mb"] for k in steps if "pycache" in k for x in having[k])
    server_rss = max(r.get("server_rss_mb", 0) for r in runs)
    return med, client_rss, server_rss


def _bar(name, value, unit, op, limit, ok=True, why=None):
    """One bar as a dict; `ok` adds a condition besides the limit (e.g. no errors).

    op is "≤", "<" or "≥"; op None means reported only. value None: not measured (n/a,
    with `why` if a step was skipped).
    """
    fmt = ".2f" if unit == "×" else "g"
    if value is None:
        result = f"n/a ({why})" if why else "n/a"
    elif op is None:
        result = "reported"
    else:
        met = {"≤": value <= limit, "<": value < limit, "≥": value >= limit}[op]
        result = "PASS" if met and ok else "MISS"
    return {"bar": name, "measured": value, "unit": unit,
            "limit": "—" if op is None else f"{op} {limit:{fmt}}{unit}", "result": result}


def bars(med, client_rss, load):
    """The bars, each a ratio of medians of this run (or a peak), with PASS/MISS."""
    def ratio(a, b):
        return med[a] / med[b] if med.get(a) is not None and med.get(b) else None

    def why(*steps):
        return next((med[f"skipped:{k}"] for k in steps if f"skipped:{k}" in med), None)

    down, fetch = (med.get(f"{f}:warm_pycache_server") for f in ("bytes_down", "fetch_seconds"))
    proxy_bytes = med.get(f"bytes_down:{PROXY_CHECK}")
    out = [
        _bar("warm from the local cache ≤ 1.2× the copy floor (`cp -a`), bench corpus",
             ratio("warm_pycache_local", COPY_FLOOR), "×", "≤", 1.2),
        _bar("warm from the local cache ≤ 1.2× the copy floor (`cp -a`), whole stdlib",
             ratio("stdlib_warm_pycache_local", STDLIB_COPY_FLOOR), "×", "≤", 1.2,
             why=why("stdlib_warm_pycache_local")),
        _bar("cold (local, empty caches) ≤ 1.15× the compile floor",
             ratio("cold_pycache_local", "floor"), "×", "≤", 1.15),
        _bar("cold (local, empty caches) faster than uv's compile",
             ratio("cold_pycache_local", "cold_uv"), "×", "<", 1.0),
        _bar("no-op ≤ 0.10× `python -m compileall -q`",
             ratio("noop_pycache", "noop_compileall"), "×", "≤", 0.10),
        _bar("client peak RSS on the corpus (largest over every pycache run)",
             client_rss, " MB", "<", 100),
        _bar("warm from the server, empty local cache ≤ 1.6× the copy floor",
             ratio("warm_pycache_server", COPY_FLOOR), "×", "≤", 1.6),
        _bar("pull request (1% changed, server warm, empty local cache) ≤ 1.1× warm from "
             "the server", ratio(PULL_REQUEST[0], "warm_pycache_server"), "×", "≤", 1.1),
        _bar("warm from the server at 100 Mbit/s, ~10 ms round trip ≤ 0.5× compileall cold",
             ratio("warm_pycache_server_100mbit", "cold_compileall"), "×", "≤", 0.5,
             why=why("warm_pycache_server_100mbit")),
        _bar("warm from the server at 1 Gbit/s, ~10 ms round trip ÷ compileall cold",
             ratio("warm_pycache_server_1gbit", "cold_compileall"), "×", None, None,
             why=why("warm_pycache_server_1gbit")),
        _bar("the delaying proxy alone, no rate limit: ≥ 250 MB/s (2× 1 Gbit/s, so the "
             "1 Gbit/s row measures the link)",
             proxy_bytes / med[PROXY_CHECK] / 1e6 if proxy_bytes and med.get(PROXY_CHECK)
             else None, " MB/s", "≥", 250, why=why(PROXY_CHECK)),
    ]
    # One pair per backend the load test ran at 16 clients (n/a if none did).
    cells = {b: c[16] for b, c in (load or {}).items() if 16 in c} or {"not run": None}
    for backend, cell in cells.items():
        p50, p99 = (cell["client_fetch_p50"], cell["client_fetch_p99"]) if cell else (0, 0)
        out += [
            _bar(f"16 clients ({backend}): 0 errors, batch get p99/p50 (client-side) < 3",
                 p99 / p50 if p50 else None, "×", "<", 3, ok=cell and cell["errors"] == 0),
            _bar(f"16 clients ({backend}): server peak RSS < 150 MB",
                 cell and cell["server_rss_mb"], " MB", "<", 150),
        ]
    out += [
        _bar("cost of signing every upload (cold from an empty server, signed ÷ unsigned)",
             ratio("cold_pycache_server_signed", "cold_pycache_server"), "×", None, None),
        _bar("cost of verifying signatures (warm from the server, trusted keys ÷ none)",
             ratio("warm_pycache_server_trusted", "warm_pycache_server"), "×", None, None),
    ]
    out.append(_bar("single-client batch get throughput (warm from the server: "
                    "answer bytes ÷ fetch time)",
                    down / fetch / 1e6 if down and fetch else None, " MB/s", None, None))
    return out


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
        elif f"skipped:{key}" in med:
            lines.append(f"| {label} (not run: {med[f'skipped:{key}']}) | n/a | n/a | |")
    return lines


def wire_table(med):
    """Bytes from the server per warm run (the client's `bytes_down`), and the proxy check."""
    rows = [(k, label) for k, label in WIRE if f"bytes_down:{k}" in med]
    if not rows:
        return []
    lines = ["| warm run | MB from the server | batch get (client) | MB/s |",
             "|---|---:|---:|---:|"]
    for key, label in rows:
        down, fetch = med[f"bytes_down:{key}"], med.get(f"fetch_seconds:{key}")
        rate = f"{down / fetch / 1e6:.1f}" if fetch else "—"
        lines.append(f"| {label} | {down / 1e6:.2f} | {_fmt_s(fetch)} | {rate} |")
    if f"bytes_down:{PROXY_CHECK}" in med:
        n, t = med[f"bytes_down:{PROXY_CHECK}"], med[PROXY_CHECK]
        lines += ["", f"The delaying proxy alone, no rate limit (a sender in the namespace, "
                  f"a reader here, the proxy between): {n / 1e6:.0f} MB in {_fmt_s(t)}, "
                  f"{n / t / 1e6:.0f} MB/s (1 Gbit/s is 125 MB/s)."]
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
    if any(k in med or f"skipped:{k}" in med for k, _ in NET[1:]):
        lines += _section("warm from the server over a link (fresh copy, empty local cache)",
                          NET, med, "warm_pycache_server")
        lines.append(f"| compileall cold (reference) | {_fmt_s(med['cold_compileall'])} | "
                     f"{med['cold_compileall'] / med['warm_pycache_server']:.2f}× | |")
    if STDLIB_COPY_FLOOR in med:
        lines += _section("whole standard library (`Lib/`, test dirs included)",
                          STDLIB, med, STDLIB_COPY_FLOOR)
    return lines


def bar_table(checked):
    """The bars with PASS/MISS (reported-only rows have no limit)."""
    lines = ["| bar | measured | limit | result |", "|---|---:|---|---|"]
    for b in checked:
        fmt = ".2f" if b["unit"] == "×" else ".1f"
        value = "—" if b["measured"] is None else f"{b['measured']:{fmt}}{b['unit']}"
        lines.append(f"| {b['bar']} | {value} | {b['limit']} | {b['result']} |")
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
           f"server {server_rss:.0f} MB (cold + warm runs).", ""]
    if meta.get("stdlib_text"):
        out += [f"Whole standard library: {meta['stdlib_text']}; pycache must report the "
                "same files (and exit 1 when there are any).", ""]
    wire = wire_table(med)
    if wire:
        out += ["## Bytes on the wire per warm run", "", *wire, ""]
    out += ["## Bars", "", *bar_table(checked), ""]
    if load:
        out += [f"## Server load ({meta['load_text']})", "", *load_table(load), ""]
    return "\n".join(out)


def chart(path, med, checked, load):
    """A PNG: medians per section (linear seconds), and the load test's batch get latencies."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    skipped = {k.split(":", 1)[1]: v for k, v in med.items() if k.startswith("skipped:")}
    med = {k: v for k, v in med.items() if ":" not in k}
    panels = [("cold: no pyc, empty caches", COLD), ("warm: fresh copy, full caches", WARM),
              ("no-op: everything up to date", NOOP),
              ("warm from the server over a link", NET + [("cold_compileall", "compileall cold (reference)")]),
              # The cold row would dwarf what this panel compares: warm and its floor.
              ("whole stdlib, warm (Lib/, tests included)", STDLIB[:2])]
    fig, axes = plt.subplots(2, 3, figsize=(21, 8))
    for ax, (title, rows) in zip(axes.flat, panels):
        keys = [(k, CHART_LABELS.get(k, l).replace("`", "")) for k, l in rows if k in med][::-1]
        # The link panel repeats two rows of other panels: empty without its own rows.
        if not [k for k, _ in keys if k not in ("warm_pycache_server", "cold_compileall")]:
            why = next((skipped[k] for k, _ in rows if k in skipped), "not run")
            ax.set_title(title)
            ax.text(0.5, 0.5, f"n/a: {why}", ha="center", va="center", wrap=True)
            ax.axis("off")
            continue
        floors = ("floor", COPY_FLOOR, OLD_COPY_FLOOR, STDLIB_COPY_FLOOR)
        colors = ["#2a7" if "pycache" in k else ("#888" if k in floors else "#c84")
                  for k, _ in keys]
        ax.barh([l for _, l in keys], [med[k] for k, _ in keys], color=colors)
        ax.set_title(f"{title} (median s)")
        for i, (k, _) in enumerate(keys):
            ax.text(med[k], i, f" {med[k]:.3g} s", va="center", fontsize=8)
        ax.margins(x=0.2)
    ax = axes.flat[5]
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
