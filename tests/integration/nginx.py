"""nginx: Debian's nginx (nginx-light) as an HTTPS origin for the integration tests.

A real, independent HTTP/2 and HTTP/1.1 implementation behind sluice: curl --http2, h2load,
Chromium and large downloads talk through the gateway to it. One Nginx object is one
`nginx -p PREFIX -c CONF -g 'daemon off;'` master process in the foreground, listening on
127.0.0.1 with a free port, TLS 1.2/1.3 with a certificate from the test PKI, serving a
docroot the test fills. Its pid file, error log, access log and temp directories all live in
the test's directory; it is stopped by its PID.

    o = Nginx(workdir, cert, key, h2=True, files={"big.bin": 1 << 30, "index.html": b"..."})
    o.port, o.url("/big.bin"), o.docroot, o.access_log()   # parsed JSON lines

The access log is one JSON object per request (fields in ACCESS_FIELDS): `proto` is nginx's
$server_protocol, so "HTTP/2.0" proves the origin was spoken to in HTTP/2.
"""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from support import PATTERN_BLOCK, T, clean_env, free_port, listening_pid_port, stop_pid

NGINX = "/usr/sbin/nginx"

# Access-log record: field -> nginx variable. Numbers are written unquoted.
ACCESS_FIELDS = (
    ("proto", "$server_protocol"),      # HTTP/2.0, HTTP/1.1
    ("method", "$request_method"),
    ("uri", "$request_uri"),
    ("host", "$host"),
    ("status", "$status"),
    ("bytes", "$body_bytes_sent"),
    ("tls", "$ssl_protocol"),           # TLSv1.3
    ("alpn", "$ssl_alpn_protocol"),     # h2, http/1.1, or empty
    ("sni", "$ssl_server_name"),
    ("conn", "$connection"),            # nginx's connection serial number
    ("conn_requests", "$connection_requests"),
    ("ua", "$http_user_agent"),
)
_NUMERIC = {"status", "bytes", "conn", "conn_requests"}

CONF = """\
{user}worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log {error_level};
events {{ worker_connections 1024; }}
http {{
    types {{
        text/html html htm; text/css css; application/javascript js; image/png png;
        application/json json; text/plain txt; application/octet-stream bin;
    }}
    default_type application/octet-stream;
    log_format sluice escape=json '{log_format}';
    access_log {dir}/access.log sluice;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen {host}:{port} ssl{http2};
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {protocols};
        root {docroot};
{extra}
    }}
}}
"""


class Sparse:
    """A files={} value: a file of n zero bytes made as a hole (instant, takes no disk)."""

    def __init__(self, n):
        self.n = n


def write_pattern_file(path, n):
    """Writes n bytes of the deterministic pattern (byte i = support.PATTERN_BLOCK[i % 64 KiB],
    the same body origin.py serves at /bytes/N, so support.pattern_sha256(n) is its hash) in
    1 MiB writes: 1 GiB takes about a second and never sits in memory."""
    mib = PATTERN_BLOCK * ((1 << 20) // len(PATTERN_BLOCK))
    with open(path, "wb") as f:
        left = n
        while left >= len(mib):
            f.write(mib)
            left -= len(mib)
        f.write(mib[:left])


def write_docroot_file(path, content):
    """content: bytes/str (written as is), int n (n pattern bytes), or Sparse(n)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, Sparse):
        with open(path, "wb") as f:
            f.truncate(content.n)
    elif isinstance(content, int):
        write_pattern_file(path, content)
    else:
        raise TypeError("file content must be bytes, str, int or Sparse: %r" % (content,))


class Nginx:
    """A running nginx origin. .port, .host, .docroot, .dir, .url(path), .access_log(),
    .access_log_lines(), .error_log_text(), .add_files(), .stop() (by PID).

    h2: offer HTTP/2 (ALPN h2, http/1.1) or only HTTP/1.1. files: {relative path: content}
    (see write_docroot_file). tls: the ssl_protocols. extra: lines added to the server block
    (e.g. 'location /x { return 204; }'). workers: worker_processes."""

    def __init__(self, workdir, cert, key, h2=True, files=None, host="127.0.0.1", port=0,
                 tls=("TLSv1.2", "TLSv1.3"), extra="", workers=1, error_level="warn",
                 name="nginx"):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "tmp").mkdir(exist_ok=True)
        self.docroot = self.dir / "docroot"
        self.docroot.mkdir(exist_ok=True)
        self.host = host
        self.h2 = h2
        self.name = name
        self.access_log_path = self.dir / "access.log"
        self.error_log_path = self.dir / "error.log"
        self.conf_path = self.dir / "nginx.conf"
        self.stderr_path = self.dir / "stderr.txt"
        self.proc = None
        self.add_files(files or {})
        log_format = "{%s}" % ",".join(
            ('"%s":%s' if k in _NUMERIC else '"%s":"%s"') % (k, v) for k, v in ACCESS_FIELDS)
        # As root, workers would otherwise switch to nobody, who cannot read pytest's 0700
        # temporary directories. As another user the directive is ignored with a warning.
        user = "user root;\n" if os.geteuid() == 0 else ""
        fixed = port
        for attempt in range(3):
            self.port = fixed or free_port(host)
            self.conf_path.write_text(CONF.format(
                user=user, workers=workers, dir=self.dir, error_level=error_level,
                log_format=log_format, host=host, port=self.port,
                http2=" http2" if h2 else "", cert=cert, key=key, protocols=" ".join(tls),
                docroot=self.docroot, extra="".join("        %s\n" % l for l in
                                                    extra.splitlines())))
            if self._start():
                return
            if fixed or "in use" not in self.error_log_text() + self.stderr_text():
                break
        raise RuntimeError("nginx did not start on port %d (exit %r):\nstderr: %s\nerror.log: %s"
                           % (self.port, self.proc.returncode, self.stderr_text(),
                              self.error_log_text()))

    def _start(self):
        cmd = [NGINX, "-p", str(self.dir), "-c", str(self.conf_path), "-e",
               str(self.error_log_path), "-g", "daemon off;"]
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                         env=clean_env(), cwd=self.dir)
        deadline = time.monotonic() + T(15)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if listening_pid_port(self.proc.pid, self.port):
                return True
            time.sleep(0.02)
        stop_pid(self.proc, signal.SIGKILL)
        return False

    def add_files(self, files):
        """Writes {relative path: content} into the docroot (nginx serves them at once)."""
        for rel, content in files.items():
            write_docroot_file(self.docroot / rel.lstrip("/"), content)

    def url(self, path="/", host="localhost"):
        return "https://%s:%d%s" % (host, self.port, path)

    def access_log_lines(self):
        """The access log's complete lines (str), oldest first."""
        try:
            data = self.access_log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in data.split("\n")[:-1] if line.strip()]

    def access_log(self):
        """The access log as dicts (see ACCESS_FIELDS)."""
        return [json.loads(line) for line in self.access_log_lines()]

    def wait_access_log(self, pred, n=1, timeout=None):
        """Polls until n access-log records match pred; returns them (fails with the log)."""
        deadline = time.monotonic() + (timeout if timeout is not None else T(10))
        while True:
            recs = [r for r in self.access_log() if pred(r)]
            if len(recs) >= n or time.monotonic() > deadline:
                assert len(recs) >= n, "wanted %d nginx access-log record(s), got %d:\n%s" % (
                    n, len(recs), "\n".join(self.access_log_lines()[-20:]))
                return recs
            time.sleep(0.05)

    def error_log_text(self):
        try:
            return self.error_log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        """SIGTERM to the master (fast shutdown: it stops its workers), SIGKILL after 5 s."""
        if self.proc is not None:
            stop_pid(self.proc, signal.SIGTERM, timeout=5)
