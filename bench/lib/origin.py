"""The origin: Debian's nginx in the gateway netns on 10.251.0.2:443, TLS 1.2 and 1.3.

Serves /1k, /100k and /64m (random bytes) over keep-alive, with timeouts long enough that
idle held connections are not closed during the memory workload. Besides origin.bench it
serves rogue.bench (a certificate from an untrusted root) and wrong.bench (a trusted
certificate for another name), which the checks use to see whether a proxy verifies its
upstream. A minimal log of each connection's first request ($ssl_session_reused) tells
whether the upstream handshakes of a workload were full or resumed.
"""
import hashlib
import os
import signal
import subprocess
import time

from topology import GW_ADDR, GW_NS, in_ns, pinned

FILES = {"1k": 1024, "100k": 100 * 1024, "64m": 64 * 1024 * 1024}

CONF = """\
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
events {{ worker_connections 19000; multi_accept on; }}
http {{
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 900s; keepalive_requests 100000000;
  client_header_timeout 900s; client_body_timeout 900s; send_timeout 900s;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  types {{ }}
  default_type application/octet-stream;
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_session_cache shared:bench:20m;
  ssl_session_tickets on;
  map $connection_requests $first_request {{ 1 1; default 0; }}
  log_format hs '$ssl_session_reused $ssl_protocol $ssl_server_name';
  server {{
    listen {addr}:443 ssl default_server;
    server_name origin.bench;
    ssl_certificate {origin_cert}; ssl_certificate_key {key};
    access_log {d}/conns.log hs buffer=64k flush=200ms if=$first_request;
    root {d}/www;
  }}
  server {{
    listen {addr}:443 ssl;
    server_name rogue.bench;
    ssl_certificate {rogue_cert}; ssl_certificate_key {key};
    root {d}/www;
  }}
  server {{
    listen {addr}:443 ssl;
    server_name wrong.bench;
    ssl_certificate {wrong_cert}; ssl_certificate_key {key};
    root {d}/www;
  }}
}}
"""


class Origin:
    def __init__(self, base, pki):
        self.dir = os.path.join(base, "origin")
        self.pki = pki
        self.proc = None
        self.sha256 = {}
        os.makedirs(os.path.join(self.dir, "www"), exist_ok=True)
        os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)

    def make_files(self):
        for name, size in FILES.items():
            path = os.path.join(self.dir, "www", name)
            h = hashlib.sha256()
            with open(path, "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    f.write(chunk)
                    h.update(chunk)
                    left -= len(chunk)
            self.sha256[name] = h.hexdigest()

    def start(self, workers=1, cores="0"):
        """Starts nginx with `workers` worker processes pinned to `cores`."""
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(workers=workers, d=self.dir, addr=GW_ADDR,
                                origin_cert=self.pki.origin_cert, key=self.pki.origin_key,
                                rogue_cert=self.pki.rogue_cert, wrong_cert=self.pki.wrong_cert))
        self.proc = subprocess.Popen(in_ns(GW_NS, pinned(cores, ["nginx", "-c", conf, "-e",
                                                                 f"{self.dir}/error.log"])),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if os.path.exists(os.path.join(self.dir, "nginx.pid")):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"nginx did not start; see {self.dir}/error.log")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        try:
            os.unlink(os.path.join(self.dir, "nginx.pid"))
        except FileNotFoundError:
            pass

    def pids(self):
        from procstat import tree
        return tree(self.proc.pid) if self.proc else []

    def conns_log_mark(self):
        """Where the connection log ends now (nginx flushes it within 200 ms)."""
        time.sleep(0.4)
        try:
            return os.path.getsize(os.path.join(self.dir, "conns.log"))
        except FileNotFoundError:
            return 0

    def conns_since(self, mark):
        """Counts upstream connections logged since mark: (full, resumed)."""
        time.sleep(0.4)
        full = resumed = 0
        try:
            with open(os.path.join(self.dir, "conns.log"), "rb") as f:
                f.seek(mark)
                for line in f:
                    if line.startswith(b"r "):
                        resumed += 1
                    else:
                        full += 1
        except FileNotFoundError:
            pass
        return full, resumed
