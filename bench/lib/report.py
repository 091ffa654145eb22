"""Turns a run's results into the terminal table, the targets' PASS/FAIL, and markdown."""
import re

DOC_BEGIN, DOC_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _get(results, name, *path):
    node = results["contenders"].get(name, {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fmt(v, digits=0):
    if v is None:
        return "-"
    if isinstance(v, float) or digits:
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def _ratio(results, name, wl, key):
    v, d = _get(results, name, "workloads", wl, key), _get(results, "direct", "workloads", wl, key)
    if v is None or not d:
        return None
    return v / d


def _with_ratio(results, name, wl, key, digits=0):
    v = _get(results, name, "workloads", wl, key)
    if v is None:
        failed = _get(results, name, "workloads", wl, "failed")
        return "failed" if failed else "-"
    r = _ratio(results, name, wl, key)
    if name == "direct" or r is None:
        return _fmt(v, digits)
    return f"{_fmt(v, digits)} ({r:.2f}x)"


def _idle(results, name, n, key="kib_per_conn"):
    for p in _get(results, name, "workloads", "idle", "points") or []:
        if p["target"] == n:
            return p.get(key)
    return None


def rows(results):
    """[(label, {contender: cell})] for the main table."""
    names = [n for n in results["contenders"] if "skipped" not in results["contenders"][n]]
    rate = results.get("fixed_rate")

    def per(fn):
        return {n: fn(n) for n in names}

    def wl(w, k, digits=1):
        """A figure of the proxy: none for direct."""
        return per(lambda n: "-" if n == "direct" else
                   _fmt(_get(results, n, "workloads", w, k), digits))

    def cpu(w, k, digits):
        """The proxy's CPU figure, with the share of it spent in the kernel (stime)."""
        def cell(n):
            if n == "direct":
                return "-"
            v = _fmt(_get(results, n, "workloads", w, k), digits)
            tot = _get(results, n, "workloads", w, "proxy_cpu_s")
            ker = _get(results, n, "workloads", w, "proxy_kernel_s")
            return f"{v} ({100 * ker / tot:.0f}% kernel)" if tot and ker is not None else v
        return per(cell)

    def upstream_resumed(w):
        def cell(n):
            full = _get(results, n, "workloads", w, "upstream_full")
            res = _get(results, n, "workloads", w, "upstream_resumed")
            if full is None or full + res == 0:
                return "-"
            return f"{100 * res / (full + res):.0f}%"
        return per(cell)

    def idle_cell(n, count):
        v = _idle(results, n, count)
        held = _idle(results, n, count, "held")
        if v is None:
            return "-"
        return f"{v:.1f}" if held == count else f"{v:.1f} ({held} held)"

    def probe(n):
        p = _get(results, n, "workloads", "idle", "probe")
        pts = _get(results, n, "workloads", "idle", "points") or []
        if not p:
            return "-"
        errs = sum(x["errors"] for x in pts)
        return f"{errs} err, {p['closed']} closed, {p['probe_ok']}/{p['probed']} ok"

    def lat(w, a, b):
        def cell(n):
            x, y = (_get(results, n, "workloads", w, k) for k in (a, b))
            return "-" if x is None or y is None else f"{x:.2f} / {y:.2f}"
        return per(cell)

    def fixed_cell(n):
        w = _get(results, n, "workloads", "fixed_rate") or {}
        if "p99_ms" not in w:
            return "failed" if "failed" in w else "-"
        cell = f"{w['p50_ms']:.2f} / {w['p99_ms']:.2f}"
        if rate and w["rate"] < 0.95 * rate:
            cell += f" (only {w['rate']:,.0f}/s)"
        return cell

    def bg(n):
        w = _get(results, n, "workloads") or {}
        vals = [v.get("background_cpu_pct", 0) for v in w.values() if isinstance(v, dict)]
        return f"{max(vals):.0f}%" if vals else "-"

    return [
        ("full handshakes/s (vs direct)", per(lambda n: _with_ratio(results, n, "full_hs", "rate"))),
        ("  latency p50 / p99 ms", lat("full_hs", "p50_ms", "p99_ms")),
        ("  proxy CPU ms per handshake", cpu("full_hs", "proxy_cpu_ms_per_hs", 3)),
        ("  origin-side handshakes resumed", upstream_resumed("full_hs")),
        ("resumed handshakes/s (vs direct)",
         per(lambda n: _with_ratio(results, n, "resumed_hs", "rate"))),
        ("  client sessions resumed", per(lambda n: _pct(results, n, "resumed_hs"))),
        ("  proxy CPU ms per handshake", cpu("resumed_hs", "proxy_cpu_ms_per_hs", 3)),
        ("  origin-side handshakes resumed", upstream_resumed("resumed_hs")),
        ("keep-alive req/s, 50 conns (vs direct)",
         per(lambda n: _with_ratio(results, n, "keepalive", "rate"))),
        ("  latency p50 / p99 ms (closed loop)", lat("keepalive", "p50_ms", "p99_ms")),
        ("  proxy CPU us per request", cpu("keepalive", "proxy_cpu_us_per_req", 1)),
        (f"fixed {rate} req/s: p50 / p99 ms", per(fixed_cell)),
        ("  proxy CPU us per request", cpu("fixed_rate", "proxy_cpu_us_per_req", 1)),
        ("64 MiB download MB/s (vs direct)",
         per(lambda n: _with_ratio(results, n, "download", "mb_per_s", 1))),
        ("idle KiB per connection, 1,000 held", per(lambda n: idle_cell(n, 1000))),
        ("idle KiB per connection, 9,000 held", per(lambda n: idle_cell(n, 9000))),
        ("  errors / closed / probes answered", per(probe)),
        ("background load (other processes, max)", per(bg)),
    ]


def _pct(results, n, w):
    conns = _get(results, n, "workloads", w, "conns")
    res = _get(results, n, "workloads", w, "resumed")
    return "-" if not conns else f"{100 * res / conns:.0f}%"


# sslsplit's figures on this machine when the CPU targets were set (issue 5): the targets
# stand at 0.29x and 0.65x of them. This VM's speed moves by a third from one hour to the
# next, and every contender's CPU time with it, so each CPU target is also read against
# sslsplit's figure in the same run.
SSLSPLIT_REF_MS_PER_HS = 2.1
SSLSPLIT_REF_US_PER_REQ = 23.0


def _add_scaled(add, results, wl, key, ref, target, unit):
    """The CPU target scaled by sslsplit's figure in this run over its reference figure."""
    v = _get(results, "sluice", "workloads", wl, key)
    peer = _get(results, "sslsplit", "workloads", wl, key)
    if v is None or not peer:
        return
    scaled = round(target * peer / ref, 3)
    add(f"  same, scaled to sslsplit here: <= {scaled} {unit}", v, lambda x: x <= scaled,
        f"{v} {unit} ({v / peer:.2f}x sslsplit, target {target / ref:.2f}x)")


def targets(results):
    """[(target, measured, PASS|FAIL|n/a)] for sluice, from the same run."""
    s = "sluice"
    out = []

    def add(label, value, ok, shown):
        out.append((label, shown if value is not None else "-",
                    "n/a" if value is None else ("PASS" if ok(value) else "FAIL")))

    v = _get(results, s, "workloads", "full_hs", "proxy_cpu_ms_per_hs")
    add("full handshake: proxy CPU <= 0.6 ms each", v, lambda x: x <= 0.6, f"{v} ms")
    _add_scaled(add, results, "full_hs", "proxy_cpu_ms_per_hs", SSLSPLIT_REF_MS_PER_HS, 0.6,
                "ms")
    v = _ratio(results, s, "full_hs", "rate")
    add("full handshake: rate >= 0.9x direct", v, lambda x: x >= 0.9, f"{v:.2f}x" if v else "")
    v = _get(results, s, "workloads", "keepalive", "proxy_cpu_us_per_req")
    add("keep-alive: proxy CPU <= 15 us per request", v, lambda x: x <= 15, f"{v} us")
    _add_scaled(add, results, "keepalive", "proxy_cpu_us_per_req", SSLSPLIT_REF_US_PER_REQ, 15,
                "us")
    v = _ratio(results, s, "keepalive", "rate")
    add("keep-alive: rate >= 0.9x direct", v, lambda x: x >= 0.9, f"{v:.2f}x" if v else "")
    v = _get(results, s, "workloads", "keepalive", "p99_ms")
    d = _get(results, "direct", "workloads", "keepalive", "p99_ms")
    add("keep-alive: p99 <= 2 ms (wrk, 50 conns)", v, lambda x: x <= 2,
        f"{v} ms (direct {d} ms)")
    v = _get(results, s, "workloads", "fixed_rate", "p99_ms")
    d = _get(results, "direct", "workloads", "fixed_rate", "p99_ms")
    add(f"  same, at a fixed {results.get('fixed_rate')} req/s", v, lambda x: x <= 2,
        f"{v} ms (direct {d} ms)")
    v = _ratio(results, s, "download", "mb_per_s")
    add("64 MiB download >= 0.85x direct", v, lambda x: x >= 0.85, f"{v:.2f}x" if v else "")
    v = _idle(results, s, 9000)
    add("idle: <= 36 KiB per connection (9,000 held)", v, lambda x: x <= 36, f"{v} KiB")
    pts = _get(results, s, "workloads", "idle", "points")
    probe = _get(results, s, "workloads", "idle", "probe")
    if pts is not None and probe is not None:
        held = _idle(results, s, 9000, "held") or 0
        errs = sum(p["errors"] for p in pts) + probe["closed"] + probe["probed"] - probe["probe_ok"]
        add("idle: 9,000 held without error", errs, lambda x: x == 0 and held == 9000,
            f"{held} held, {errs} errors")
    else:
        add("idle: 9,000 held without error", None, None, "")
    return out


def scale_rows(results):
    out = []
    for kind, label, key, unit in (
            ("full_hs", "full handshakes/s", "proxy_cpu_ms_per_hs", "ms per handshake"),
            ("keepalive", "keep-alive req/s", "proxy_cpu_us_per_req", "us per request")):
        r = results.get("scale", {}).get(kind, {})
        w1, w2 = (r.get(f"workers_{w}", {}).get("rate") for w in (1, 2))
        ratio = f"{w2 / w1:.2f}x" if w1 and w2 else "-"
        out.append((label, _fmt(w1, 0), _fmt(w2, 0), ratio))
        c1, c2 = (r.get(f"workers_{w}", {}).get(key) for w in (1, 2))
        out.append((f"  proxy CPU {unit}", _fmt(c1, 1 if "us" in unit else 3),
                    _fmt(c2, 1 if "us" in unit else 3),
                    f"{c2 / c1:.2f}x" if c1 and c2 else "-"))
    return out


def check_rows(results):
    out = []
    for name, c in results["contenders"].items():
        ch = c.get("check")
        if not ch:
            out.append((name, c.get("skipped", "-"), "", "", "", ""))
            continue
        yn = {True: "yes", False: "NO", None: "n/a"}
        out.append((name, ch.get("issuer_seen", "?"), ch.get("protocol_version", "?"),
                    yn[ch.get("resigned")], yn[ch.get("rejects_untrusted_origin")],
                    yn[ch.get("rejects_wrong_name")]))
    return out


def _table(header, body):
    widths = [max(len(str(r[i])) for r in [header] + body) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for r in body:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return "\n".join(lines)


def _md_table(header, body):
    def cell(c):
        c = str(c).replace("|", "\\|")
        stripped = c.lstrip(" ")
        return "&emsp;" * ((len(c) - len(stripped)) // 2) + stripped  # keep the indent

    esc = [[cell(c) for c in r] for r in [header] + body]
    lines = ["| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in esc[1:]]
    return "\n".join(lines)


def _sections(results):
    names = [n for n in results["contenders"] if "skipped" not in results["contenders"][n]]
    main = [[label] + [cells.get(n, "-") for n in names] for label, cells in rows(results)]
    return [
        ("figures", ["workload"] + names, main),
        ("sluice targets", ["target", "measured", "result"], [list(t) for t in targets(results)]),
        ("sluice --workers 2 vs 1 (everything on both cores)",
         ["workload", "1 worker", "2 workers", "ratio"], [list(r) for r in scale_rows(results)]),
        ("checks", ["contender", "issuer the client sees", "protocol", "re-signs",
                    "rejects untrusted origin", "rejects wrong name"],
         [list(r) for r in check_rows(results)]),
    ]


def _title(results):
    m = results["machine"]
    return (f"sluice bench {results['date']}{' (quick)' if results['quick'] else ''}: "
            f"{results['key_type']}, {results['duration_s']:g} s per workload, "
            f"{m['cores']} cores ({m['cpu']}), proxy on core 1, load and nginx on core 0")


def render(results):
    out = [_title(results), ""]
    for title, header, body in _sections(results):
        out += [f"== {title}", _table(header, body), ""]
    skipped = {n: c["skipped"] for n, c in results["contenders"].items() if "skipped" in c}
    for n, why in skipped.items():
        out.append(f"skipped {n}: {why}")
    for note in results.get("notes", []) + noise_notes(results):
        out.append(f"note: {note}")
    return "\n".join(out)


def noise_notes(results):
    out = []
    if results.get("waited_for_quiet_s"):
        out.append(f"waited {results['waited_for_quiet_s']} s in all for other work on the "
                   "machine to stop")
    if results.get("noisy_retries"):
        out.append(f"{results['noisy_retries']} rounds measured again because other work "
                   "took over 15% of a core during them")
    return out


def render_markdown(results):
    out = [f"Run of {results['date']}{' (quick)' if results['quick'] else ''}: "
           f"{results['key_type']}, {results['duration_s']:g} s per workload; "
           f"{results['machine']['cores']} cores ({results['machine']['cpu']}), "
           f"{results['machine'].get('openssl')}.", ""]
    for title, header, body in _sections(results):
        out += [f"**{title[0].upper() + title[1:]}**", "", _md_table(header, body), ""]
    skipped = {n: c["skipped"] for n, c in results["contenders"].items() if "skipped" in c}
    for n, why in skipped.items():
        out.append(f"Skipped {n}: {why}.")
    for note in results.get("notes", []) + noise_notes(results):
        out.append(f"Note: {note}.")
    return "\n".join(out).rstrip() + "\n"


def update_doc(path, results):
    """Replaces the text between the bench markers of the doc with this run's tables."""
    with open(path) as f:
        doc = f.read()
    block = f"{DOC_BEGIN}\n{render_markdown(results)}{DOC_END}"
    if DOC_BEGIN in doc:
        doc = re.sub(re.escape(DOC_BEGIN) + ".*?" + re.escape(DOC_END), lambda _: block, doc,
                     flags=re.S)
    else:
        doc += "\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)
