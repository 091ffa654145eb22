"""The workloads. Each function runs one round against the selected contender, bounded in
time, and returns a dict of raw figures; CPU figures come from `measured`, around the load
alone. The driver alternates rounds between contenders and merges them with `combine`.

  full_hs      new connection per request, no session offered: full handshakes/s (hsload)
  resumed_hs   each connection offers its previous session: resumed handshakes/s (hsload -r)
  keepalive    50 keep-alive connections as fast as they go, 1 KiB file (wrk --latency)
  fixed_rate   the same 50 connections at a fixed request rate, open loop (hsload -k)
  download     one 64 MiB file, best of 3 (curl)
  idle         memory per idle intercepted connection at 1,000 and 9,000 (holdconns.py)
"""
import json
import os
import re
import signal
import subprocess
import time

import procstat
from topology import CLI_NS, GW_ADDR, in_ns, pinned

HOST = "origin.bench"


def run_load(argv, cores="0", timeout=None):
    """Runs a load tool in the client netns on `cores`; returns its stdout."""
    res = subprocess.run(in_ns(CLI_NS, pinned(cores, argv)), capture_output=True, text=True,
                         timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return res.stdout


class measured:
    """Context manager: CPU seconds of the proxy, nginx and the load tools, and the machine's
    other load, over the block. Read .cpu after the block."""

    def __init__(self, env, contender):
        self.env, self.contender = env, contender

    def __enter__(self):
        self.proxy_pids = self.contender.pids()
        self.nginx_pids = self.env.origin.pids()
        self.t0 = time.monotonic()
        self.p0 = procstat.cpu_seconds(self.proxy_pids)
        self.k0 = procstat.cpu_seconds(self.proxy_pids, kernel_only=True)
        self.n0 = procstat.cpu_seconds(self.nginx_pids)
        self.l0 = procstat.children_cpu_seconds()
        self.b0 = procstat.machine_busy_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.monotonic() - self.t0
        proxy = procstat.cpu_seconds(self.proxy_pids) - self.p0
        kernel = procstat.cpu_seconds(self.proxy_pids, kernel_only=True) - self.k0
        nginx = procstat.cpu_seconds(self.nginx_pids) - self.n0
        load = procstat.children_cpu_seconds() - self.l0
        busy = procstat.machine_busy_seconds() - self.b0
        other = max(busy - proxy - nginx - load, 0.0)
        self.cpu = {"wall_s": round(wall, 3), "proxy_cpu_s": round(proxy, 3),
                    "proxy_kernel_s": round(kernel, 3),
                    "nginx_cpu_s": round(nginx, 3), "load_cpu_s": round(load, 3),
                    "background_cpu_pct": round(100 * other / wall, 1) if wall else 0.0}
        return False


def _hsload(env, contender, args, duration, cores="0"):
    argv = [env.hsload_bin, "-a", GW_ADDR, "-p", "443", "-n", HOST, "-u", "/1k",
            "-C", contender.client_ca(), "-d", str(duration)] + args
    return json.loads(run_load(argv, cores, timeout=duration + 60))


def _handshakes(env, contender, duration, warm, resume):
    args = ["-c", str(env.hs_conc)] + (["-r"] if resume else [])
    if warm:
        _hsload(env, contender, args, env.warmup)
    mark = env.origin.conns_log_mark()
    with measured(env, contender) as m:
        res = _hsload(env, contender, args, duration)
    full, resumed = env.origin.conns_since(mark)
    res.update(m.cpu)
    res["upstream_full"], res["upstream_resumed"] = full, resumed
    return res


def full_hs(env, contender, duration, warm):
    return _handshakes(env, contender, duration, warm, resume=False)


def resumed_hs(env, contender, duration, warm):
    return _handshakes(env, contender, duration, warm, resume=True)


def perf_profile(env, contender, out_path):
    """perf record on the proxy during a full-handshake run; the report goes to out_path.
    DWARF call graphs: sluice and OpenSSL are built without frame pointers."""
    data = os.path.join(env.tmp, "perf.data")
    pids = ",".join(str(p) for p in contender.pids())
    perf = subprocess.Popen(["perf", "record", "-F", "499", "--call-graph", "dwarf,16384",
                             "-o", data, "-p", pids],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        res = _hsload(env, contender, ["-c", str(env.hs_conc)], min(env.duration, 8))
    finally:
        perf.send_signal(signal.SIGINT)
        perf.wait(timeout=120)
    reports = [
        ("perf report --stdio | head -60", ["--stdio"], 60),
        ("time by library (self)", ["--stdio", "--no-children", "--sort", "dso", "-g", "none"],
         30),
        ("time by function, callees included", ["--stdio", "--children", "--sort", "symbol",
                                                "-g", "none"], 80),
    ]
    with open(out_path, "w") as f:
        f.write(f"# perf record -F 499 --call-graph dwarf -p {pids} ({contender.name}) during "
                f"full handshakes: {res['conns']} handshakes in {res['elapsed']} s\n")
        for title, args, lines in reports:
            rep = subprocess.run(["perf", "report", "-i", data] + args, capture_output=True,
                                 text=True, timeout=600)
            body = [l for l in rep.stdout.splitlines() if l.strip() and l.strip() != "#"]
            f.write(f"\n### {title}\n" + "\n".join(body[:lines]) + "\n")
    os.unlink(data)
    return {"report": out_path, "handshakes": res["conns"]}


_WRK_LAT = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _parse_wrk(out):
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    res = {"requests": int(done.group(1)),
           "elapsed": float(done.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[done.group(3)],
           "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct, val, unit in _WRK_LAT.findall(out):
        res[f"p{pct}_ms"] = round(float(val) * _UNIT_MS[unit], 3)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    res["errors"] = sum(int(x) for x in errs.groups()) if errs else 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    res["errors"] += int(non2xx.group(1)) if non2xx else 0
    return res


def _wrk(env, duration, threads=1, cores="0"):
    duration = max(1, round(duration))  # wrk takes whole seconds
    out = run_load(["wrk", "-t", str(threads), "-c", "50", "-d", f"{duration}s", "--latency",
                    f"https://{HOST}/1k"], cores, timeout=duration + 60)
    return _parse_wrk(out)


def keepalive(env, contender, duration, warm):
    if warm:
        _wrk(env, env.warmup)
    with measured(env, contender) as m:
        res = _wrk(env, duration)
    res.update(m.cpu)
    return res


def fixed_rate(env, contender, duration, warm, rate):
    """p50/p99 at `rate` requests/s over 50 keep-alive connections, from when each request
    was due (hsload -k): latency without the queueing of a saturated closed loop."""
    with measured(env, contender) as m:
        res = _hsload(env, contender, ["-c", "50", "-k", str(rate)], duration)
    res.update(m.cpu)
    res["requests"] = res.pop("conns")
    res["target_rate"] = rate
    return res


def download(env, contender, duration, warm):
    """One 64 MiB download; the driver keeps the best of its rounds."""
    with measured(env, contender) as m:
        out = run_load(["curl", "-s", "--http1.1", "--cacert", contender.client_ca(),
                        "-o", "/dev/null", "-w", "%{http_code} %{size_download} "
                        "%{speed_download}", f"https://{HOST}/64m"], timeout=300)
    code, size, speed = out.split()
    if code != "200" or int(size) != 64 * 1024 * 1024:
        raise RuntimeError(f"64 MiB download through {contender.name}: {out}")
    res = {"mb_per_s": round(float(speed) / 1e6, 1)}
    res.update(m.cpu)
    return res


_SUMMED = ("conns", "resumed", "requests", "errors", "elapsed", "wall_s", "proxy_cpu_s",
           "proxy_kernel_s", "nginx_cpu_s", "load_cpu_s", "upstream_full", "upstream_resumed")
_MEDIAN = ("p50_ms", "p75_ms", "p90_ms", "p99_ms")


def combine(rounds):
    """Merges the rounds of one contender's workload: counts and CPU are summed, the rate is
    the total over the total time, latency percentiles are the median of the rounds'."""
    ok = [r for r in rounds if "failed" not in r]
    if not ok:
        return {"failed": rounds[0]["failed"] if rounds else "not run", "rounds": rounds}
    if "mb_per_s" in ok[0]:  # the download: best of the tries
        best = dict(max(ok, key=lambda r: r["mb_per_s"]))
        best["tries_mb_per_s"] = [r.get("mb_per_s") for r in rounds]
        return best
    out = {k: round(sum(r[k] for r in ok), 3) for k in _SUMMED if all(k in r for r in ok)}
    for k in _MEDIAN:
        vals = sorted(r[k] for r in ok if k in r)
        if vals:
            out[k] = vals[len(vals) // 2]
    count = out.get("conns", out.get("requests", 0))
    out["rate"] = round(count / out["elapsed"], 1) if out.get("elapsed") else 0.0
    out["background_cpu_pct"] = round(sum(r["background_cpu_pct"] for r in ok) / len(ok), 1)
    out["first_error"] = next((r["first_error"] for r in ok if r.get("first_error")), "")
    if "target_rate" in ok[0]:
        out["target_rate"] = ok[0]["target_rate"]
    if out.get("conns") and "requests" not in out:
        out["proxy_cpu_ms_per_hs"] = round(1000 * out["proxy_cpu_s"] / out["conns"], 3)
    if out.get("requests"):
        out["proxy_cpu_us_per_req"] = round(1e6 * out["proxy_cpu_s"] / out["requests"], 2)
    out["rounds"] = rounds
    if len(ok) < len(rounds):
        out["failed_rounds"] = len(rounds) - len(ok)
    return out


def idle(env, contender, counts):
    """Memory per idle intercepted connection: Pss of the proxy's processes with N
    connections held, less the Pss before any was opened, over N. `contender` was started
    fresh and selected; one request warms it (lazy set-up, the forged leaf) before the
    baseline."""
    run_load(["curl", "-s", "--http1.1", "--cacert", contender.client_ca(), "-o", "/dev/null",
              f"https://{HOST}/1k"], timeout=30)
    time.sleep(1)
    pids = contender.pids()
    base = procstat.pss_kib(pids)
    holder = subprocess.Popen(
        in_ns(CLI_NS, pinned("0", [env.python, os.path.join(env.lib, "holdconns.py"),
                                   "--addr", GW_ADDR, "--host", HOST,
                                   "--cafile", contender.client_ca()])),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(cmd):
        holder.stdin.write(cmd + "\n")
        holder.stdin.flush()
        return json.loads(holder.stdout.readline())

    res = {"baseline_pss_kib": base, "points": []}
    try:
        held = 0
        for n in counts:
            opened = ask(f"open {n - held} {env.idle_budget}")
            held = opened["held"]
            time.sleep(1)
            pss = procstat.pss_kib(contender.pids())
            point = {"target": n, "held": held, "errors": opened["errors"],
                     "first_error": opened["first_error"], "open_s": opened["seconds"],
                     "pss_kib": pss,
                     "kib_per_conn": round((pss - base) / held, 1) if held else None}
            res["points"].append(point)
            if held < 0.9 * n:  # a tenth failed to open: going on would tell nothing more
                break
        res["probe"] = ask("probe 100")
    finally:
        holder.stdin.close()
        try:
            holder.wait(timeout=60)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
    return res


def scale(env, sluice, workers, kind):
    """sluice with `workers` loops, it and the load sharing both cores."""
    sluice.start(cores="0,1", workers=workers)
    sluice.select()
    try:
        if kind == "full_hs":
            args = ["-c", str(env.hs_conc)]
            _hsload(env, sluice, args, env.warmup, cores="0,1")
            with measured(env, sluice) as m:
                procs = [subprocess.Popen(
                    in_ns(CLI_NS, pinned("0,1", [env.hsload_bin, "-a", GW_ADDR, "-p", "443",
                                                 "-n", HOST, "-u", "/1k", "-C",
                                                 sluice.client_ca(), "-d", str(env.duration)]
                                         + args)),
                    stdout=subprocess.PIPE, text=True) for _ in range(2)]
                outs = [json.loads(p.communicate(timeout=env.duration + 60)[0]) for p in procs]
            res = {"rate": round(sum(o["rate"] for o in outs), 1),
                   "conns": sum(o["conns"] for o in outs), "errors": sum(o["errors"] for o in outs)}
        else:
            _wrk(env, env.warmup, threads=2, cores="0,1")
            with measured(env, sluice) as m:
                res = _wrk(env, env.duration, threads=2, cores="0,1")
        res.update(m.cpu)
        if res.get("conns"):
            res["proxy_cpu_ms_per_hs"] = round(1000 * res["proxy_cpu_s"] / res["conns"], 3)
        if res.get("requests"):
            res["proxy_cpu_us_per_req"] = round(1e6 * res["proxy_cpu_s"] / res["requests"], 2)
        return res
    finally:
        sluice.stop()
