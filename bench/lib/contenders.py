"""The contenders: one small adapter each, with start, stop, pids and check.

Every contender but `direct` is a transparent interception proxy in the gateway netns,
listening on a port of its own. All of them run side by side, idle but for the one selected:
select() points the iptables REDIRECT of the client's port-443 traffic at it, so rounds of a
workload can alternate between contenders in a few milliseconds. Each is started pinned to
the cores it is given (core 1 by default) and stopped by its own PID.

  direct     no proxy, no REDIRECT rule: the client talks to nginx
  tcprelay   relay.c: a transparent TCP relay (SO_ORIGINAL_DST), no inspection: the floor
  sluice     build/sluice run --mode transparent, verifying upstreams against the bench root
  sslsplit   Debian's sslsplit in netfilter NAT mode. It verifies nothing by default; with
             -o VerifyPeer=yes it checks the upstream chain against OpenSSL's default store,
             which SSL_CERT_FILE points at the bench root. It does not check the upstream's
             name (the check below shows it), and it adds the client's SNI to the forged leaf.
  mitmproxy  Debian's mitmdump in transparent mode, verifying upstreams against the bench root,
             streaming bodies over 1 MiB instead of buffering them
"""
import hashlib
import os
import shutil
import signal
import subprocess
import time

from procstat import tree
from topology import CLI_NS, GW_NS, in_ns, pinned, sh

class Contender:
    name = "?"
    intercepts = True
    description = ""
    port = None

    def __init__(self, env):
        self.env = env  # paths and options of the run (bench.Env)
        self.proc = None
        self.log_path = os.path.join(env.tmp, f"{self.name}.log")

    # --- what each adapter says -------------------------------------------------------
    def argv(self, workers):
        raise NotImplementedError

    def extra_env(self):
        return {}

    def client_ca(self):
        """The roots the client trusts while this contender is in the path."""
        return self.env.pki.icpt_cert if self.intercepts else self.env.pki.root

    def available(self):
        """None when the contender can run here, else why not."""
        return None

    # --- common life cycle ------------------------------------------------------------
    def start(self, cores="1", workers=1):
        env = dict(os.environ, **self.extra_env())
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(in_ns(GW_NS, pinned(cores, self.argv(workers))),
                                         stdin=subprocess.DEVNULL, stdout=self.stdout(log),
                                         stderr=log, env=env)
        self._wait_listening()

    def select(self):
        """Sends the client's port-443 traffic to this contender from now on."""
        self.env.topo.redirect(self.port)

    def stdout(self, log):
        return log

    def _wait_listening(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            out = sh(*in_ns(GW_NS, ["ss", "-Hltn", f"sport = :{self.port}"]), check=False)
            if out.strip():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} is not listening on {self.port} after {timeout}s")

    def stop(self):
        if self.env.topo.redirect_port == self.port:
            self.env.topo.unredirect()
        if not self.proc:
            return
        pids = tree(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids[1:]:  # descendants that outlived their parent, by PID
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def pids(self):
        return tree(self.proc.pid) if self.proc else []


class Direct(Contender):
    name = "direct"
    intercepts = False
    description = "no proxy: the client talks to nginx"

    def start(self, cores="1", workers=1):
        pass

    def select(self):
        self.env.topo.unredirect()

    def stop(self):
        pass


class TcpRelay(Contender):
    name = "tcprelay"
    intercepts = False
    port = 8441
    description = "transparent TCP relay (bench/lib/relay.c, epoll, SO_ORIGINAL_DST), no TLS"

    def argv(self, workers):
        return [self.env.relay_bin, "-l", str(self.port), "-t", "10.251.0.2:443"]


class Sluice(Contender):
    name = "sluice"
    port = 8442
    description = "build/sluice, transparent mode, no connection log"

    def argv(self, workers):
        ca_dir = os.path.join(self.env.tmp, "sluice-ca")
        if not os.path.isdir(ca_dir):
            os.makedirs(ca_dir, mode=0o700)
            shutil.copy(self.env.pki.icpt_cert, os.path.join(ca_dir, "ca.pem"))
            shutil.copy(self.env.pki.icpt_key, os.path.join(ca_dir, "ca.key"))
            os.chmod(os.path.join(ca_dir, "ca.key"), 0o600)
        return [self.env.sluice_bin, "run", "--mode", "transparent",
                "--listen", f"0.0.0.0:{self.port}", "--workers", str(workers),
                "--upstream-ca", self.env.pki.root, "--ca-dir", ca_dir,
                "--leaf-key", "rsa-2048" if self.env.pki.rsa else "ec-p256",
                "--log-level", "warn"]

    def available(self):
        if not os.access(self.env.sluice_bin, os.X_OK):
            return f"{self.env.sluice_bin} is not built"
        return None


class Sslsplit(Contender):
    name = "sslsplit"
    port = 8443
    description = "Debian sslsplit 0.5.5, netfilter NAT, -o VerifyPeer=yes (chain only)"

    def argv(self, workers):
        p = self.env.pki
        return ["sslsplit", "-k", p.icpt_key, "-c", p.icpt_cert, "-K", p.leaf_key,
                "-o", "VerifyPeer=yes", "ssl", "0.0.0.0", str(self.port)]

    def extra_env(self):
        return {"SSL_CERT_FILE": self.env.pki.root, "SSL_CERT_DIR": "/nonexistent"}

    def stdout(self, log):
        return subprocess.DEVNULL  # its connect log goes to stdout when no -l is given

    def available(self):
        return None if shutil.which("sslsplit") else "sslsplit is not installed"


class Mitmproxy(Contender):
    name = "mitmproxy"
    port = 8444
    description = "Debian mitmdump 8.1, transparent mode, streams bodies > 1 MiB"

    def argv(self, workers):
        conf = os.path.join(self.env.tmp, "mitmproxy")
        if not os.path.isdir(conf):
            os.makedirs(conf, mode=0o700)
            with open(os.path.join(conf, "mitmproxy-ca.pem"), "w") as f:
                for path in (self.env.pki.icpt_key, self.env.pki.icpt_cert):
                    with open(path) as src:
                        f.write(src.read())
        return ["mitmdump", "--mode", "transparent", "--listen-port", str(self.port),
                "--set", f"confdir={conf}",
                "--set", f"ssl_verify_upstream_trusted_ca={self.env.pki.root}",
                "--set", "stream_large_bodies=1m",
                "--set", "flow_detail=0", "--set", "termlog_verbosity=warn"]

    def available(self):
        return None if shutil.which("mitmdump") else "mitmproxy is not installed"


ALL = {c.name: c for c in (Direct, TcpRelay, Sluice, Sslsplit, Mitmproxy)}


# --- the check: does the contender work, re-sign, and verify its upstream? -------------------
def _curl(env, contender, host, path):
    """(http status or 0 on a TLS/connection failure, sha256 of the body)."""
    out = subprocess.run(in_ns(CLI_NS, ["curl", "-s", "--http1.1", "--max-time", "20",
                                        "--cacert", contender.client_ca(),
                                        f"https://{host}{path}", "-o", "-",
                                        "-w", "\n%{http_code}"]),
                         capture_output=True)
    body, _, code = out.stdout.rpartition(b"\n")
    return int(code or 0), hashlib.sha256(body).hexdigest()


def check(env, contender):
    """What the client sees through the contender (started and selected); raises if it does
    not work at all."""
    res = {}
    out = subprocess.run(in_ns(CLI_NS, ["openssl", "s_client", "-connect", "origin.bench:443",
                                        "-servername", "origin.bench",
                                        "-CAfile", contender.client_ca(),
                                        "-verify_return_error", "-brief"]),
                         input="", capture_output=True, text=True, timeout=30)
    for line in out.stderr.splitlines() + out.stdout.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key in ("Protocol version", "Ciphersuite", "Verification", "Peer certificate",
                   "Server Temp Key", "Signature type"):
            res[key.lower().replace(" ", "_")] = val.strip()
    issuer = _issuer_seen(contender)
    res["issuer_seen"] = issuer
    expected = "bench interception CA" if contender.intercepts else "bench origin root"
    res["resigned"] = ("bench interception CA" in issuer) if contender.intercepts else None
    res["issuer_ok"] = expected in issuer
    code, digest = _curl(env, contender, "origin.bench", "/100k")
    res["relay_ok"] = code == 200 and digest == env.origin.sha256["100k"]
    if contender.intercepts:
        for host, what in (("rogue.bench", "rejects_untrusted_origin"),
                           ("wrong.bench", "rejects_wrong_name")):
            code, digest = _curl(env, contender, host, "/100k")
            masked = code == 200 and digest == env.origin.sha256["100k"]
            res[what] = not masked
    if not (res["relay_ok"] and res["issuer_ok"] and res.get("verification") == "OK"):
        raise RuntimeError(f"{contender.name} check failed: {res}; see {contender.log_path}")
    return res


def _issuer_seen(contender):
    """The issuer of the leaf the client receives, as one line."""
    s_client = subprocess.run(in_ns(CLI_NS, ["openssl", "s_client", "-connect", "origin.bench:443",
                                             "-servername", "origin.bench"]),
                              input="", capture_output=True, text=True, timeout=30)
    x509 = subprocess.run(["openssl", "x509", "-noout", "-issuer"], input=s_client.stdout,
                          capture_output=True, text=True)
    return x509.stdout.strip().removeprefix("issuer=").strip()


def still_intercepting(contender):
    """None while the client still gets a leaf from the interception CA, else what it gets:
    a proxy that starts passing a name through (sluice's pinning detection, for one) would
    otherwise be measured as a relay."""
    if not contender.intercepts:
        return None
    issuer = _issuer_seen(contender)
    return None if "bench interception CA" in issuer else f"the client now sees issuer '{issuer}'"
