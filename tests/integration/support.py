"""support: helpers shared by the integration tests — test PKI, processes, clients, records.

Everything here talks only to loopback or to network namespaces a test creates itself.
Every subprocess call is bounded by a timeout; every process started is stopped by its PID.
"""
import datetime
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ORIGIN_PY = HERE / "origin.py"
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

# An ASan+UBSan build is several times slower: every wait in the suite goes through T().
SANITIZE = os.environ.get("SLUICE_SANITIZE", "0") == "1"
SCALE = 3 if SANITIZE else 1
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")


def T(seconds):
    """A timeout in seconds, scaled for sanitizer builds."""
    return seconds * SCALE


def clean_env(extra=None):
    """The environment for client subprocesses: no proxy variables that could reroute curl."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy",
                                "ftp_proxy", "curl_ca_bundle", "ssl_cert_file", "ssl_cert_dir")}
    env.setdefault("LC_ALL", "C")
    if extra:
        env.update(extra)
    return env


def run(cmd, timeout, input=None, env=None, cwd=None):
    """Runs cmd to completion with a hard timeout (the child is killed when it runs over).
    Returns CompletedProcess with bytes stdout/stderr; raises subprocess.TimeoutExpired."""
    return subprocess.run([str(c) for c in cmd], input=input, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout, env=env or clean_env(),
                          cwd=cwd)


def check_run(cmd, timeout, input=None, env=None):
    """run() that raises with the command's stderr when it exits non-zero."""
    p = run(cmd, timeout, input=input, env=env)
    if p.returncode != 0:
        raise RuntimeError("%s exited %d: %s" % (" ".join(map(str, cmd)), p.returncode,
                                                 p.stderr.decode(errors="replace")))
    return p


def sanitizer_report(text):
    """The sanitizer marker found in text, or None."""
    for m in SANITIZER_MARKERS:
        if m in text:
            return m
    return None


def assert_no_sanitizer(text, what="sluice"):
    m = sanitizer_report(text)
    assert m is None, "%s: sanitizer report (%r) on stderr:\n%s" % (what, m, text[-6000:])


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (bind to port 0, read it, close)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_ok():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def listening_pid_port(pid, port):
    """True when process pid owns a TCP socket listening on port (in the process's own
    network namespace). Reads /proc, so it never opens a connection that would show up
    in the gateway's connection log."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path("/proc/%d/net/%s" % (pid, table)).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":
                continue
            if int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    if not inodes:
        return False
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def stop_pid(proc, sig=signal.SIGTERM, timeout=5.0):
    """Sends sig to proc (a Popen) by its PID and waits; SIGKILL after timeout.
    Returns the exit status, or None when it had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        os.kill(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return None


# ---------------------------------------------------------------------------------------
# Deterministic content served by origin.py (/bytes/N, /slow/N)
# ---------------------------------------------------------------------------------------

def _pattern_block():
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(2048))


PATTERN_BLOCK = _pattern_block()  # 64 KiB; byte i of any body is PATTERN_BLOCK[i % 65536]


def pattern_chunks(n):
    """Yields the n-byte deterministic body in chunks of at most 64 KiB."""
    full, rest = divmod(n, len(PATTERN_BLOCK))
    for _ in range(full):
        yield PATTERN_BLOCK
    if rest:
        yield PATTERN_BLOCK[:rest]


def pattern_sha256(n):
    h = hashlib.sha256()
    for c in pattern_chunks(n):
        h.update(c)
    return h.hexdigest()


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for c in iter(lambda: f.read(1 << 20), b""):
            h.update(c)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# Test PKI, made per run with the openssl CLI
# ---------------------------------------------------------------------------------------

OPENSSL_CNF = """\
[ ca ]
default_ca = testca

[ testca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
default_md = sha256
policy = policy_any
copy_extensions = none
unique_subject = no
email_in_dn = no
default_days = 825

[ policy_any ]
commonName = supplied

[ req ]
distinguished_name = dn
prompt = no

[ dn ]
CN = unused

[ v3_root ]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[ v3_leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${{ENV::SAN}}

[ v3_self ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = ${{ENV::SAN}}
"""

GOOD_SAN = "DNS:localhost,IP:127.0.0.1,IP:::1"

# name: (key spec, issuing root or "self", SAN, extra `openssl ca` args)
LEAVES = {
    "good": ("ec", "root", GOOD_SAN, []),
    "good_rsa": ("rsa:2048", "root", GOOD_SAN, []),
    "expired": ("ec", "root", GOOD_SAN, ["-startdate", "20200101000000Z",
                                         "-enddate", "20210101000000Z"]),
    "notyet": ("ec", "root", GOOD_SAN, ["-startdate", "20900101000000Z",
                                        "-enddate", "20910101000000Z"]),
    "wronghost": ("ec", "root", "DNS:wrong.example", []),
    "selfsigned": ("ec", "self", GOOD_SAN, []),
    "untrusted": ("ec", "other_root", GOOD_SAN, []),
    "rsa1024": ("rsa:1024", "root", GOOD_SAN, []),
    "sha1": ("rsa:2048", "root", GOOD_SAN, ["-md", "sha1"]),
}


class PKI:
    """A test root "sluice-test-root" (EC P-256), a second, untrusted root, and origin leaves.
    cert(name)/key(name) give file paths; root is the trusted root's PEM path."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cnf = self.dir / "openssl.cnf"
        self.cnf.write_text(OPENSSL_CNF.format(dir=self.dir))
        self.root = self.dir / "root.pem"
        self.root_key = self.dir / "root.key"
        self.other_root = self.dir / "other_root.pem"
        self.other_root_key = self.dir / "other_root.key"
        (self.dir / "newcerts").mkdir(exist_ok=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")

    def _ossl(self, *args, san=None):
        env = clean_env({"SAN": san or "DNS:unused"})
        return check_run(["openssl"] + list(args), timeout=60, env=env)

    def _genkey(self, spec, path):
        if spec == "ec":
            self._ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                       "-out", path)
        else:
            bits = spec.split(":")[1]
            self._ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:" + bits,
                       "-out", path)
        os.chmod(path, 0o600)

    def _make_root(self, cn, pem, key):
        self._genkey("ec", key)
        self._ossl("req", "-config", self.cnf, "-new", "-x509", "-key", key, "-subj", "/CN=" + cn,
                   "-days", "3650", "-sha256", "-extensions", "v3_root", "-out", pem)

    def build(self):
        self._make_root("sluice-test-root", self.root, self.root_key)
        self._make_root("sluice-test-untrusted-root", self.other_root, self.other_root_key)
        for name, (keyspec, issuer, san, extra) in LEAVES.items():
            key, crt, csr = self.key(name), self.cert(name), self.dir / (name + ".csr")
            self._genkey(keyspec, key)
            subj = "/CN=localhost" if name != "wronghost" else "/CN=wrong.example"
            if issuer == "self":
                self._ossl("req", "-config", self.cnf, "-new", "-x509", "-key", key,
                           "-subj", subj, "-days", "365", "-sha256", "-extensions", "v3_self",
                           "-out", crt, san=san)
                continue
            ca_pem, ca_key = ((self.root, self.root_key) if issuer == "root"
                              else (self.other_root, self.other_root_key))
            self._ossl("req", "-config", self.cnf, "-new", "-key", key, "-subj", subj,
                       "-out", csr, san=san)
            self._ossl("ca", "-batch", "-config", self.cnf, "-cert", ca_pem, "-keyfile", ca_key,
                       "-extensions", "v3_leaf", "-notext", "-in", csr, "-out", crt,
                       *extra, san=san)
        return self

    def cert(self, name):
        return self.dir / (name + ".pem")

    def key(self, name):
        return self.dir / (name + ".key")

    def sha256(self, name):
        """Lowercase hex SHA-256 of the leaf's DER."""
        return cert_sha256(self.cert(name))


def cert_sha256(pem):
    """Lowercase hex SHA-256 of a certificate's DER (given a PEM path or PEM text)."""
    data = pem.encode() if isinstance(pem, str) else pem
    if isinstance(data, bytes) and b"-----BEGIN" in data:
        p = check_run(["openssl", "x509", "-outform", "DER"], timeout=30, input=data)
    else:
        p = check_run(["openssl", "x509", "-in", pem, "-outform", "DER"], timeout=30)
    return hashlib.sha256(p.stdout).hexdigest()


def x509_text(pem, *opts):
    """`openssl x509 -noout OPTS` of a PEM (path or text); returns stdout as str."""
    if isinstance(pem, Path) or (isinstance(pem, str) and "-----BEGIN" not in pem):
        p = check_run(["openssl", "x509", "-in", pem, "-noout", *opts], timeout=30)
    else:
        data = pem.encode() if isinstance(pem, str) else pem
        p = check_run(["openssl", "x509", "-noout", *opts], timeout=30, input=data)
    return p.stdout.decode()


def x509_sans(pem):
    """The subjectAltName entries of a certificate as a set: {"DNS:localhost",
    "IP:127.0.0.1", "IP:::1"} (IPv6 normalised with the ipaddress module)."""
    import ipaddress
    out = x509_text(pem, "-ext", "subjectAltName")
    lines = [l.strip() for l in out.splitlines()[1:] if l.strip()]
    sans = set()
    for entry in ",".join(lines).split(","):
        entry = entry.strip()
        if not entry:
            continue
        if entry.startswith("IP Address:"):
            sans.add("IP:" + str(ipaddress.ip_address(entry[len("IP Address:"):])))
        else:
            sans.add(entry)
    return sans


def x509_name(pem, which):
    """Subject or issuer ("subject"/"issuer") in RFC 2253 form."""
    out = x509_text(pem, "-" + which, "-nameopt", "RFC2253")
    return out.split("=", 1)[1].strip()


def x509_cn(pem, which="subject"):
    """The commonName of the subject or issuer."""
    m = re.search(r"(?:^|,)CN=((?:[^,\\]|\\.)+)", x509_name(pem, which))
    return m.group(1) if m else None


PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def pem_blocks(text):
    return PEM_RE.findall(text)


# ---------------------------------------------------------------------------------------
# Origin servers (origin.py subprocesses)
# ---------------------------------------------------------------------------------------

class Origin:
    """A running origin.py; .port, .marker, .host; .stop() by PID.
    kind: "https", "http", "tcp-echo", "banner", or the TLS modes "ws-echo" (WebSocket echo)
    and "raw" (answers GET /NAME with the bytes of raw_dir/NAME, see origin.py)."""

    TLS_KINDS = ("https", "ws-echo", "raw")

    def __init__(self, workdir, kind="https", cert=None, key=None, hosts=("127.0.0.1",),
                 port=0, tls_max=None, tls_min=None, alpn="http/1.1", marker=None,
                 netns=None, name="origin", raw_dir=None):
        import uuid
        self.kind = kind
        self.marker = marker or "ORIGIN-MARKER-" + uuid.uuid4().hex
        self.hosts = list(hosts)
        self.host = self.hosts[0]
        self.netns = netns
        wd = Path(workdir)
        wd.mkdir(parents=True, exist_ok=True)
        tag = "%s-%s" % (name, self.marker[-8:])
        self.ready_file = wd / (tag + ".ready")
        self.log_path = wd / (tag + ".log")
        cmd = [PYTHON, str(ORIGIN_PY), "--ready-file", str(self.ready_file),
               "--marker", self.marker, "--port", str(port)]
        for h in self.hosts:
            cmd += ["--host", h]
        if kind in self.TLS_KINDS:
            cmd += ["--cert", str(cert), "--key", str(key)]
            if tls_max:
                cmd += ["--tls-max", tls_max]
            if tls_min:
                cmd += ["--tls-min", tls_min]
            if alpn:
                cmd += ["--alpn", alpn]
            if kind == "ws-echo":
                cmd += ["--ws-echo"]
            elif kind == "raw":
                cmd += ["--raw-dir", str(raw_dir)]
        elif kind == "http":
            cmd += ["--plain"]
        elif kind == "tcp-echo":
            cmd += ["--tcp-echo"]
        elif kind == "banner":
            cmd += ["--banner"]
        else:
            raise ValueError(kind)
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=clean_env())
        deadline = time.monotonic() + T(15)
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("origin exited %d: %s" % (self.proc.returncode,
                                                             self.log_text()))
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("origin not ready: " + self.log_text())
            time.sleep(0.02)
        self.port = json.loads(self.ready_file.read_text())["port"]

    def url(self, path="/", host="localhost"):
        scheme = "http" if self.kind == "http" else "https"
        return "%s://%s:%d%s" % (scheme, host, self.port, path)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self):
        stop_pid(self.proc, timeout=5)
        self._log.close()


# ---------------------------------------------------------------------------------------
# The gateway under test
# ---------------------------------------------------------------------------------------

class Gateway:
    """A running `sluice run`. Started with a temporary --ca-dir, --conn-log and a free port
    unless told otherwise. .port, .ca_dir, .ca_pem, .conn_log; records(), wait_record(),
    stderr_text(), stop()."""

    LIVE = weakref.WeakSet()  # every gateway started in this process, for the mark fixture

    def __init__(self, binary, workdir, args=(), upstream_ca=None, workers=1, mode=None,
                 ca_dir=None, conn_log=True, listen_host="127.0.0.1", port=None, netns=None,
                 defaults=True, env=None, ready_timeout=None):
        self.binary = str(binary)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ca_dir = Path(ca_dir) if ca_dir else self.workdir / "ca"
        self.ca_pem = self.ca_dir / "ca.pem"
        # conn_log: True = a file in workdir; "-" = stdout (read back from the stdout file);
        # a path; or None for no connection log.
        self.conn_log = self.workdir / "conn.jsonl" if conn_log is True else conn_log
        self.netns = netns
        self.listen_host = listen_host
        self.connect_host = "127.0.0.1" if listen_host in ("0.0.0.0", "127.0.0.1") else listen_host
        self.stopped = False
        self.returncode = None
        self.since = 0
        self.reported = False  # a crash or sanitizer report was already blamed on a test
        Gateway.LIVE.add(self)
        self._n_start = 0
        self.env = clean_env(env)
        # Keep sanitizer reports on stderr, where stop() looks for them.
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        fixed_port = port
        for attempt in range(3):
            self.port = fixed_port or free_port(self.connect_host)
            argv = [self.binary, "run"]
            if defaults:
                argv += ["--listen", "%s:%d" % (self._fmt_host(listen_host), self.port),
                         "--ca-dir", str(self.ca_dir)]
                if upstream_ca:
                    argv += ["--upstream-ca", str(upstream_ca)]
                if self.conn_log:
                    argv += ["--conn-log", str(self.conn_log)]
                if workers is not None:
                    argv += ["--workers", str(workers)]
                if mode:
                    argv += ["--mode", mode]
            argv += [str(a) for a in args]
            self.argv = argv
            if self._start(argv, ready_timeout or T(15)):
                return
            if fixed_port or "in use" not in self.stderr_text().lower():
                break
        raise RuntimeError("sluice did not start listening on port %d (exit %r): argv %s\n"
                           "stderr:\n%s" % (self.port, self.proc.returncode, " ".join(self.argv),
                                           self.stderr_text()))

    @staticmethod
    def _fmt_host(h):
        return "[%s]" % h if ":" in h else h

    def _start(self, argv, timeout):
        self._n_start += 1
        self.stderr_path = self.workdir / ("stderr.%d.txt" % self._n_start)
        self.stdout_path = self.workdir / ("stdout.%d.txt" % self._n_start)
        cmd = (["ip", "netns", "exec", self.netns] if self.netns else []) + argv
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         env=self.env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if listening_pid_port(self.proc.pid, self.port):
                return True
            time.sleep(0.02)
        stop_pid(self.proc, signal.SIGKILL)
        return False

    # -- observing -----------------------------------------------------------------------
    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def records(self):
        """Parsed JSON lines of the connection log (a partial last line is ignored)."""
        path = self.stdout_path if str(self.conn_log) == "-" else Path(self.conn_log)
        try:
            data = path.read_text(errors="replace")
        except OSError:
            return []
        out = []
        for line in data.split("\n")[:-1]:
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    raise AssertionError("conn log line is not JSON (%s): %r" % (e, line))
        return out

    def mark(self):
        """From now on, wait_record(s) look only at records written after this point. A
        fixture marks every live gateway before each test: client ports get reused, so a
        module-scoped gateway's log can hold an earlier connection from the same port."""
        self.since = len(self.records())
        return self.since

    def wait_records(self, n, timeout=None, pred=None, since=None):
        """Polls until at least n records (matching pred, when given) written since the last
        mark() are in the log; returns them. Fails the test with what was there when the
        time runs out."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(10))
        start = self.since if since is None else since
        while True:
            recs = [r for r in self.records()[start:] if pred is None or pred(r)]
            if len(recs) >= n:
                return recs
            if time.monotonic() > deadline:
                raise AssertionError("wanted %d conn log record(s), got %d; log:\n%s\nstderr "
                                     "tail:\n%s" % (n, len(recs), "\n".join(
                                         json.dumps(r) for r in self.records()[-10:]),
                                         self.stderr_text()[-3000:]))
            time.sleep(0.05)

    def wait_record(self, pred, timeout=None, since=None):
        """The one record matching pred (waits for it; fails if more than one matches)."""
        recs = self.wait_records(1, timeout, pred, since)
        assert len(recs) == 1, "expected one matching record, got %d: %s" % (len(recs), recs)
        return recs[0]

    def alive(self):
        return self.proc.poll() is None

    def assert_alive(self):
        assert self.alive(), "sluice exited %r; stderr:\n%s" % (self.proc.returncode,
                                                                self.stderr_text()[-4000:])

    # -- stopping ------------------------------------------------------------------------
    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout):
        """Waits for exit (no signal sent); returns the exit status. SIGKILL + fail on
        timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_pid(self.proc, signal.SIGKILL)
            self.stopped = True
            raise AssertionError("sluice did not exit within %.1fs; stderr:\n%s"
                                 % (timeout, self.stderr_text()[-3000:]))
        self.stopped = True
        return self.returncode

    def stop(self, timeout=None, check=True):
        """SIGTERM, wait, then assert exit status 0 and no sanitizer report."""
        if not self.stopped:
            if self.proc.poll() is None:
                self.signal(signal.SIGTERM)
            self.wait_exit(timeout if timeout is not None else T(20))
        if check:
            self.check_clean_exit()
        return self.returncode

    def check_clean_exit(self):
        err = self.stderr_text()
        assert_no_sanitizer(err)
        assert self.returncode == 0, "sluice exited %r (wanted 0); stderr:\n%s" % (
            self.returncode, err[-4000:])


def run_sluice(binary, *args, timeout=None, env=None, input=None):
    """Runs a short sluice command (--help, ca init, a run that must refuse to start).
    Returns (returncode, stdout str, stderr str); checks stderr for sanitizer reports.
    A command that does not finish in time is killed and fails the test."""
    e = clean_env(env)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    try:
        p = run([str(binary)] + [str(a) for a in args], timeout=timeout or T(15), env=e,
                input=input)
    except subprocess.TimeoutExpired:
        raise AssertionError("`sluice %s` did not finish within %ss"
                             % (" ".join(map(str, args)), timeout or T(15)))
    out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
    assert_no_sanitizer(err, "sluice " + " ".join(map(str, args)))
    return p.returncode, out, err


# ---------------------------------------------------------------------------------------
# Clients
# ---------------------------------------------------------------------------------------

class CurlResult:
    def __init__(self, rc, body, stderr, info):
        self.rc = rc
        self.body = body
        self.stderr = stderr
        self.info = info

    @property
    def http_code(self):
        return int(self.info.get("http_code") or 0)

    @property
    def connect_code(self):
        return int(self.info.get("http_connect") or 0)

    @property
    def local_port(self):
        return int(self.info.get("local_port") or 0)

    @property
    def text(self):
        return self.body.decode(errors="replace")

    def tls_version(self):
        """The version from curl -v's "SSL connection using TLSv1.3 / ..." line, or None."""
        m = re.search(r"SSL connection using (TLSv[\d.]+)", self.stderr)
        return m.group(1) if m else None

    def __repr__(self):
        return "<curl rc=%d info=%s stderr=%r body=%r>" % (self.rc, self.info,
                                                           self.stderr[-800:], self.body[:300])


CURL_WRITE_OUT = "\n%{json}"


def curl(url, *args, proxy=None, cacert=None, timeout=None, out=None, netns=None, verbose=False):
    """Runs curl once. proxy: sluice's port (int) or a URL. Returns CurlResult; body is the
    response body (read back from `out` when given, which is better for large bodies).
    curl's own --max-time is set below the subprocess timeout so curl reports the stall."""
    timeout = timeout or T(20)
    cmd = ["curl", "-sS", "--max-time", "%.1f" % (timeout * 0.9), "-w", CURL_WRITE_OUT]
    if verbose:
        cmd.append("-v")
    if proxy is not None:
        cmd += ["--proxy", proxy if isinstance(proxy, str) else "http://127.0.0.1:%d" % proxy]
    if cacert:
        cmd += ["--cacert", str(cacert)]
    body_file = out
    if body_file:
        cmd += ["-o", str(body_file)]
    cmd += [str(a) for a in args] + [url]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    p = run(cmd, timeout=timeout)
    stdout = p.stdout
    # -w output follows the body on stdout: the JSON is on the last line.
    idx = stdout.rfind(b"\n{")
    info = {}
    if idx >= 0:
        try:
            info = json.loads(stdout[idx + 1:])
            stdout = stdout[:idx]
        except ValueError:
            info = {}
    if body_file:
        try:
            body = Path(body_file).read_bytes() if os.path.getsize(body_file) < (4 << 20) else b""
        except OSError:
            body = b""
    else:
        body = stdout
    return CurlResult(p.returncode, body, p.stderr.decode(errors="replace"), info)


def post_whole(gw, host, port, path, body, tls=True, timeout=None):
    """POSTs body with Python's http.client through sluice's explicit proxy: like requests, it
    writes the whole request before it reads. tls: CONNECT host:port, then TLS trusting only
    the gateway's CA; else a plain http://host:port request to the proxy. Returns (status,
    response text, client port), with status None and the error for text when the
    connection was reset or cut under it."""
    import http.client
    import ssl
    if tls:
        ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
        ctx.set_alpn_protocols(["http/1.1"])
        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, context=ctx,
                                           timeout=timeout or T(20))
        conn.set_tunnel(host, port)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout or T(20))
        path = "http://%s:%d%s" % (host, port, path)
    local_port = None
    try:
        conn.connect()
        local_port = conn.sock.getsockname()[1]
        conn.request("POST", path, body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace"), local_port
    except (ConnectionError, ssl.SSLError) as e:
        return None, repr(e), local_port
    finally:
        conn.close()


def s_client(connect, *args, proxy=None, servername=None, cafile=None, data=b"", ign_eof=False,
             timeout=None, netns=None):
    """Runs `openssl s_client`; returns (returncode, combined output str)."""
    cmd = ["openssl", "s_client", "-connect", connect, "-showcerts"]
    if proxy is not None:
        cmd += ["-proxy", "127.0.0.1:%d" % proxy if isinstance(proxy, int) else proxy]
    if servername:
        cmd += ["-servername", servername]
    if cafile:
        cmd += ["-CAfile", str(cafile)]
    cmd += ["-ign_eof"] if ign_eof else ["-no_ign_eof"]
    cmd += [str(a) for a in args]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    p = run(cmd, timeout=timeout or T(20), input=data)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


def verify_code(s_client_output):
    """s_client's final "Verify return code: N (text)" as (N, text), or None."""
    m = re.findall(r"Verify return code: (\d+) \(([^)]*)\)", s_client_output)
    return (int(m[-1][0]), m[-1][1]) if m else None


def handshake_done(s_client_output):
    """True when s_client reports an established session with a real cipher."""
    return re.search(r"\n(New|Reused), TLSv1\.[0-3], Cipher is (?!\(NONE\))", s_client_output) \
        is not None


class ProxyTunnel:
    """A raw client socket that sent CONNECT to sluice. .status is the status line,
    .rest the bytes read after the header."""

    def __init__(self, gw_port, target, timeout=None, host="127.0.0.1"):
        self.sock = socket.create_connection((host, gw_port), timeout=timeout or T(10))
        self.sock.settimeout(timeout or T(10))
        self.local_port = self.sock.getsockname()[1]
        self.sock.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            buf += chunk
        head, _, self.rest = buf.partition(b"\r\n\r\n")
        self.head = head.decode(errors="replace")
        self.status = self.head.split("\r\n", 1)[0]

    def recv_until_close(self, timeout):
        """Reads until EOF/reset or timeout; returns (data, closed: bool)."""
        data = self.rest
        self.rest = b""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                return data, True
            if not chunk:
                return data, True
            data += chunk
        return data, False

    def recv_exact(self, n, timeout):
        data = self.rest[:n]
        self.rest = self.rest[n:]
        self.sock.settimeout(timeout)
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return data

    def recv_line(self, timeout):
        self.sock.settimeout(timeout)
        data = self.rest
        while b"\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        line, sep, self.rest = data.partition(b"\n")
        return line + sep

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def client_hello_bytes(servername="localhost"):
    """The first flight of a real TLS client: a ClientHello from Python's ssl module, made in
    memory (no socket)."""
    import ssl
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_hostname=servername)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outg.read()


def wedge_port():
    """A loopback listening socket whose accept queue is full, so a new connect(2) to it
    hangs (the kernel drops SYNs): a reliable connect timeout without leaving loopback.
    Returns (port, [sockets to close])."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    held = [lsock]
    for _ in range(8):
        c = socket.socket()
        c.settimeout(0.3)
        held.append(c)
        try:
            c.connect(("127.0.0.1", port))
        except (socket.timeout, OSError):
            return port, held
    for s in held:
        s.close()
    raise RuntimeError("could not fill the accept queue of a loopback listener")


class NetnsPair:
    """Two network namespaces joined by a veth pair: the gateway side ("gw", 10.251.N.1/30)
    and the client side ("cli", 10.251.N.2/30). Names carry the test process's PID so
    parallel runs do not collide. close() deletes both (and with them the veth pair)."""

    def __init__(self, tag="0"):
        pid = os.getpid()
        self.gw = "sl-gw-%d-%s" % (pid, tag)
        self.cli = "sl-cli-%d-%s" % (pid, tag)
        n = (pid + int(tag, 36)) % 250 + 1
        self.gw_addr = "10.251.%d.1" % n
        self.cli_addr = "10.251.%d.2" % n
        # Interface names are limited to 15 bytes.
        short = "%x%s" % (pid, tag)
        self.gw_if = ("slg" + short)[:15]
        self.cli_if = ("slc" + short)[:15]
        self.created = []
        try:
            self._setup()
        except Exception:
            self.close()
            raise

    def _ip(self, *args):
        check_run(["ip"] + list(args), timeout=15)

    def ns(self, ns, *cmd):
        check_run(["ip", "netns", "exec", ns] + list(cmd), timeout=15)

    def _setup(self):
        for ns in (self.gw, self.cli):
            self._ip("netns", "add", ns)
            self.created.append(ns)
        self._ip("link", "add", self.gw_if, "type", "veth", "peer", "name", self.cli_if)
        self._ip("link", "set", self.gw_if, "netns", self.gw)
        self._ip("link", "set", self.cli_if, "netns", self.cli)
        for ns, ifc, addr in ((self.gw, self.gw_if, self.gw_addr),
                              (self.cli, self.cli_if, self.cli_addr)):
            self.ns(ns, "ip", "link", "set", "lo", "up")
            self.ns(ns, "ip", "addr", "add", addr + "/30", "dev", ifc)
            self.ns(ns, "ip", "link", "set", ifc, "up")

    def redirect(self, dport, to_port):
        """In the gw namespace: TCP arriving on the veth for dport goes to local to_port."""
        self.ns(self.gw, "iptables", "-t", "nat", "-A", "PREROUTING", "-i", self.gw_if, "-p",
                "tcp", "--dport", str(dport), "-j", "REDIRECT", "--to-ports", str(to_port))

    def close(self):
        for ns in reversed(self.created):
            run(["ip", "netns", "del", ns], timeout=15)
        self.created = []


def netns_unavailable_reason():
    """Why network-namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespace tests need root"
    try:
        p = run(["ip", "netns", "list"], timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "`ip netns` unavailable: %s" % e
    if p.returncode != 0:
        return "`ip netns` unavailable: %s" % p.stderr.decode(errors="replace").strip()
    return None


# ---------------------------------------------------------------------------------------
# Connection-log records
# ---------------------------------------------------------------------------------------

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(Z|[+-]\d\d:\d\d)$")
RFC3339_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
ADDR_RE = re.compile(r"^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]+\]):\d{1,5}$")
HOSTPORT_RE = re.compile(r"^[A-Za-z0-9._-]+:\d{1,5}$")
STAGES = {"accept", "proxy_request", "client_hello", "dns", "connect", "upstream_handshake",
          "client_handshake", "relay", "http"}
RECORD_KEYS = {"ts", "id", "client", "dst", "sni", "mode", "action", "rule", "alpn", "client_tls",
               "upstream_tls", "upstream_cert", "verify", "bytes_up", "bytes_down",
               "duration_ms"}


def check_record_schema(r):
    """Asserts the documented shape of one connection-log record."""
    missing = RECORD_KEYS - set(r)
    assert not missing, "record lacks %s: %s" % (sorted(missing), r)
    assert TS_RE.match(r["ts"]), "ts not RFC 3339 with ms: %r" % r["ts"]
    assert isinstance(r["id"], int) and not isinstance(r["id"], bool), r
    assert ADDR_RE.match(r["client"]), "client: %r" % r["client"]
    # dst: the connected address; the requested host:port when no connection was made
    # (docs/LOGS.md); null when the connection ended before sluice learned it.
    assert r["dst"] is None or ADDR_RE.match(r["dst"]) or HOSTPORT_RE.match(r["dst"]), \
        "dst: %r" % r["dst"]
    assert r["sni"] is None or isinstance(r["sni"], str)
    assert r["mode"] in ("explicit", "transparent", "fixed"), r["mode"]
    assert r["action"] is None or r["action"] in ("intercept", "passthrough", "block", "tcp",
                                                  "http"), r["action"]
    assert r["rule"] is None or isinstance(r["rule"], str), r["rule"]
    assert r["alpn"] is None or isinstance(r["alpn"], str)
    for leg in ("client_tls", "upstream_tls"):
        v = r[leg]
        assert v is None or (isinstance(v, dict) and re.match(r"^TLSv1(\.[0-3])?$", v["version"])
                             and isinstance(v["cipher"], str) and v["cipher"]), (leg, v)
    c = r["upstream_cert"]
    if c is not None:
        assert {"subject", "issuer", "sha256", "not_after"} <= set(c), c
        assert re.match(r"^[0-9a-f]{64}$", c["sha256"]), c
        assert RFC3339_RE.match(c["not_after"]), c
    v = r["verify"]
    if v is not None:
        assert isinstance(v["ok"], bool), v
        assert v["error"] is None or isinstance(v["error"], str), v
        assert (v["error"] is None) == v["ok"], "verify.error must be set iff not ok: %s" % v
    for k in ("bytes_up", "bytes_down", "duration_ms"):
        assert isinstance(r[k], (int, float)) and not isinstance(r[k], bool) and r[k] >= 0, (k, r)
    if "error" in r:
        e = r["error"]
        assert isinstance(e, dict) and e.get("stage") in STAGES, "error: %r" % (e,)
        assert isinstance(e.get("reason"), str) and e["reason"], "error.reason: %r" % (e,)


def _port_of(addr):
    return addr.rsplit(":", 1)[-1] if isinstance(addr, str) else None


def dst_port_is(port):
    """Record predicate: the upstream (dst) port is port."""
    return lambda r: _port_of(r.get("dst")) == str(port)


def client_port_is(port):
    """Record predicate: the client's source port is port (curl reports it as local_port)."""
    return lambda r: _port_of(r.get("client")) == str(port)


def parse_ts(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
