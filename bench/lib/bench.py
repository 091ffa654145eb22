"""The benchmark's driver: sets up the namespaces, PKI and origin, runs every workload against
every contender, prints the table and writes bench/results/<date>.json.

Called by bench/run, which parses the user's options, installs what is missing, builds the
helpers and raises the open-file limit. All contenders run side by side; a rate workload is
split into rounds that go through every contender in turn, so a change in the machine's other
load hits them alike, and a round during which other work took a core's share is measured
again. The memory workload starts each proxy anew.
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

import contenders
import procstat
import report
import workloads
from origin import Origin
from pki import Pki
from topology import Topology


class Env:
    """Paths and options of one run, shared by the adapters and workloads."""

    def __init__(self, args):
        self.args = args
        self.tmp = args.tmp
        self.lib = os.path.dirname(os.path.abspath(__file__))
        self.hsload_bin = args.hsload
        self.relay_bin = args.relay
        self.sluice_bin = os.path.abspath(args.sluice)
        self.python = args.python
        self.quick = args.quick
        self.duration = args.duration
        self.warmup = 0.5 if args.quick else 1
        self.rounds = args.rounds
        self.wait_left = args.wait_budget  # seconds of waiting for a quiet machine left
        self.hs_conc = 16
        self.download_tries = 2 if args.quick else max(3, args.rounds)
        self.idle_budget = 120 if args.quick else 400
        self.topo = Topology()
        self.pki = Pki(self.tmp, args.rsa)
        self.origin = Origin(self.tmp, self.pki)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


QUIET_PCT, NOISY_PCT, NOISY_RETRIES = 15, 15, 2


def wait_quiet(env, results):
    """Waits (up to --max-wait seconds, and --wait-budget in all) until other work on the
    machine uses less than QUIET_PCT of a core: the two cores are shared, so another job's load
    would be measured as the contender's slowness. Returns the background load it last saw,
    in % of one core."""
    start = time.monotonic()
    deadline = start + min(env.args.max_wait, env.wait_left)
    waited = False
    while True:
        b0, t0 = procstat.machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        pct = 100 * (procstat.machine_busy_seconds() - b0) / (time.monotonic() - t0)
        if pct < QUIET_PCT or time.monotonic() > deadline:
            break
        if not waited:
            log(f"the machine is busy with other work ({pct:.0f}% of a core); waiting for it")
            waited = True
    spent = time.monotonic() - start
    env.wait_left = max(env.wait_left - spent, 0)
    if waited:
        results["waited_for_quiet_s"] = round(results.get("waited_for_quiet_s", 0) + spent)
        if env.wait_left <= 0:
            log("the waiting budget is spent: measuring whatever else runs on the machine")
    return round(pct, 1)


def interleave(env, results, chosen, workload, fn, rounds, *fn_args):
    """Runs `rounds` rounds of a workload, each round going through every contender in turn
    (rotated), so that a change in the machine's other load hits all of them alike. A
    contender's failure is recorded, not fatal."""
    per = {c.name: [] for c in chosen}
    duration = env.duration / rounds
    for r in range(rounds):
        before = wait_quiet(env, results) if env.args.max_wait > 0 else None
        k = r % len(chosen)
        for c in chosen[k:] + chosen[:k]:
            for attempt in range(1 + NOISY_RETRIES):
                log(f"{workload:<11} {c.name} (round {r + 1}/{rounds})")
                try:
                    if c.proc and c.proc.poll() is not None:
                        raise RuntimeError(f"{c.name} has exited ({c.proc.returncode}); "
                                           f"see {c.log_path}")
                    c.select()
                    res = fn(env, c, duration, r == 0 and attempt == 0, *fn_args)
                    why = contenders.still_intercepting(c)
                    if why:
                        raise RuntimeError(f"{c.name} stopped intercepting: {why}")
                except Exception as e:
                    traceback.print_exc()
                    res = {"failed": str(e)[:300]}
                res["background_before_pct"] = before
                # other work took more than NOISY_PCT of a core meanwhile: measure again
                if (res.get("background_cpu_pct", 0) <= NOISY_PCT or env.args.max_wait <= 0
                        or env.wait_left <= 0):
                    break
                if attempt < NOISY_RETRIES:
                    log(f"  other work took {res['background_cpu_pct']:.0f}% of a core "
                        "meanwhile; this round again")
                    results["noisy_retries"] = results.get("noisy_retries", 0) + 1
                    before = wait_quiet(env, results)
            res["attempts"] = attempt + 1
            per[c.name].append(res)
    for c in chosen:
        results["contenders"][c.name].setdefault("workloads", {})[workload] = \
            workloads.combine(per[c.name])


def run_fresh(env, results, contender, workload, fn, *fn_args):
    """Starts the contender anew (its own process, nothing cached), runs fn, stops it."""
    before = wait_quiet(env, results) if env.args.max_wait > 0 else None
    log(f"{workload:<11} {contender.name}")
    try:
        contender.start()
        try:
            contender.select()
            res = fn(env, contender, *fn_args)
        finally:
            contender.stop()
    except Exception as e:
        traceback.print_exc()
        res = {"failed": str(e)[:300]}
    res["background_before_pct"] = before
    results["contenders"][contender.name].setdefault("workloads", {})[workload] = res
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--hsload", required=True)
    ap.add_argument("--relay", required=True)
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--sluice-origin", help="where the copy in --sluice came from")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--contenders", default="direct,tcprelay,sluice,sslsplit,mitmproxy")
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rsa", action="store_true")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--no-scale", action="store_true")
    ap.add_argument("--update-doc")
    ap.add_argument("--max-wait", type=float, default=120)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--wait-budget", type=float, default=600)
    args = ap.parse_args()
    env = Env(args)

    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    results = {"date": stamp, "quick": args.quick, "key_type": env.pki.key_type,
               "duration_s": args.duration, "machine": machine_info(env),
               "contenders": {}, "scale": {}, "notes": []}
    names = [n for n in args.contenders.split(",") if n]
    chosen = []
    for name in names:
        c = contenders.ALL[name](env)
        why = c.available()
        results["contenders"][name] = {"description": c.description}
        if why:
            log(f"skipping {name}: {why}")
            results["contenders"][name]["skipped"] = why
        else:
            chosen.append(c)

    def on_signal(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    try:
        log(f"setting up: namespaces, {env.pki.key_type} PKI, nginx origin")
        env.topo.setup()
        env.pki.make()
        env.origin.make_files()
        env.origin.start()
        run_all(env, results, chosen)
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        results["notes"].append("interrupted")
    finally:
        for c in chosen:
            c.stop()
        env.origin.stop()
        env.topo.teardown()

    path = os.path.join(args.out, f"{stamp}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    table = report.render(results)
    print(table)
    md_path = os.path.join(args.out, f"{stamp}.md")
    with open(md_path, "w") as f:
        f.write(report.render_markdown(results))
    if args.update_doc:
        report.update_doc(args.update_doc, results)
        log(f"updated {args.update_doc}")
    log(f"results: {path} (markdown table: {md_path})")


def run_all(env, results, chosen):
    by_name = {c.name: c for c in chosen}
    # --quick: the 64 MiB download without mitmproxy, idle connections for sluice only
    downloads = [c for c in chosen if not (env.quick and c.name == "mitmproxy")]
    idles = [c for c in chosen if c.name == "sluice" or not env.quick and c.name != "direct"]

    # all contenders run side by side, each on its own port; select() redirects to one.
    # Each is checked first: it works, it re-signs, it verifies its upstream.
    for c in list(chosen):
        log(f"check       {c.name}")
        try:
            c.start()
            c.select()
            results["contenders"][c.name]["check"] = contenders.check(env, c)
        except Exception as e:
            log(f"{c.name} does not work here, leaving it out: {e}")
            results["contenders"][c.name]["skipped"] = f"check failed: {str(e)[:300]}"
            c.stop()
            chosen.remove(c)
            downloads = [d for d in downloads if d is not c]
            idles = [d for d in idles if d is not c]

    for wl in ("full_hs", "resumed_hs", "keepalive"):
        interleave(env, results, chosen, wl, getattr(workloads, wl), env.rounds)

    # latency at a fixed rate every contender but the slowest can sustain: half direct's
    direct_rate = (results["contenders"].get("direct", {}).get("workloads", {})
                   .get("keepalive", {}).get("rate"))
    rate = max(int(direct_rate * 0.5 / 100) * 100, 100) if direct_rate else 2000
    results["fixed_rate"] = rate
    interleave(env, results, chosen, "fixed_rate", workloads.fixed_rate, env.rounds, rate)
    interleave(env, results, downloads, "download", workloads.download, env.download_tries)
    for c in chosen:
        c.stop()

    # memory: each proxy anew, so that nothing earlier workloads left behind is reused
    for c in idles:
        run_fresh(env, results, c, "idle", workloads.idle, [1000, 9000])

    if "sluice" in by_name and env.args.perf:
        out = os.path.join(env.args.out, f"{results['date']}-perf-sluice.txt")
        res = run_fresh(env, results, by_name["sluice"], "perf", workloads.perf_profile, out)
        results["perf_report"] = res.get("report")
        results["contenders"]["sluice"]["workloads"].pop("perf", None)

    if "sluice" in by_name and not env.args.no_scale:
        # both cores for everything: nginx gets two workers, the load two processes/threads
        env.origin.stop()
        env.origin.start(workers=2, cores="0,1")
        sluice = by_name["sluice"]
        for kind in ("full_hs", "keepalive"):
            for workers in (1, 2):
                if env.args.max_wait > 0:
                    wait_quiet(env, results)
                log(f"scale       sluice --workers {workers} {kind}")
                try:
                    res = workloads.scale(env, sluice, workers, kind)
                except Exception as e:
                    traceback.print_exc()
                    res = {"failed": str(e)[:300]}
                results["scale"].setdefault(kind, {})[f"workers_{workers}"] = res


def machine_info(env):
    def version(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    origin = env.args.sluice_origin or env.sluice_bin
    repo = os.path.dirname(os.path.dirname(os.path.abspath(origin)))
    git = subprocess.run(["git", "-C", repo, "log", "-1", "--format=%h %cI %s"],
                         capture_output=True, text=True)
    head = git.stdout.strip() if git.returncode == 0 else None  # not built in a checkout
    dirty = head and subprocess.run(["git", "-C", repo, "status", "--porcelain", "--", "src",
                                     "CMakeLists.txt"], capture_output=True, text=True).stdout.strip()
    try:
        with open(env.sluice_bin, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        digest = None
    return {"cpu": model, "cores": os.cpu_count(), "kernel": platform.release(),
            "sluice_binary": origin, "sluice_sha256": digest,
            "sluice_repo_head": head, "sluice_src_modified": bool(dirty),
            "openssl": version(["openssl", "version"]), "nginx": version(["nginx", "-v"]),
            "sluice": version([env.sluice_bin, "--version"]),
            "sslsplit": version(["sslsplit", "-V"]), "mitmdump": version(["mitmdump", "--version"]),
            "wrk": version(["wrk", "-v"])}


if __name__ == "__main__":
    main()
