"""HTTP/2 through the gateway while HTTP is inspected: ALPN mirrored on both legs, the HTTP/2
bridge (src/h2.c) between a real h2 client (curl, h2load) and a real h2 origin (Debian's
nginx), the policy's HTTP rules and the request log on h2 streams, flow control end to end,
graceful shutdown with GOAWAY."""
import hashlib
import json
import signal
import subprocess
import time

import pytest

import support
from support import T, curl

RULES = """
policy:
  default: intercept
  http:
    - name: no-admin
      path: ["/admin/"]
      action: block
    - name: no-binaries
      content_type: ["application/x-blocked"]
      action: block
"""

INDEX = b"<html><body>HELLO-H2</body></html>\n"


def write_config(path, body):
    path.write_text(body)
    return path


def read_requests(path, n, timeout=None):
    """The request log's records, once there are at least n."""
    deadline = time.monotonic() + (timeout or T(10))
    recs = []
    while time.monotonic() < deadline:
        try:
            recs = [json.loads(l) for l in path.read_text().splitlines() if l]
        except (OSError, ValueError):
            recs = []
        if len(recs) >= n:
            return recs
        time.sleep(0.05)
    raise AssertionError("wanted %d request records, got %d: %s" % (n, len(recs), recs[-5:]))


REQUEST_KEYS = {"ts", "conn", "stream", "http", "method", "scheme", "authority", "path",
                "status", "req_bytes", "resp_bytes", "content_type", "duration_ms", "rule",
                "action", "req_headers", "resp_headers"}


@pytest.fixture
def h2gw(sluice, tmp_path):
    reqlog = tmp_path / "requests.jsonl"
    gw = sluice("--config", write_config(tmp_path / "rules.yaml", RULES), "--request-log",
                reqlog, "--redact-header", "x-api-key")
    gw.reqlog = reqlog
    return gw


@pytest.fixture
def site(nginx_origin):
    return nginx_origin(h2=True, files={"index.html": INDEX, "admin/x.html": b"secret admin",
                                        "blocked.bin": 5000},
                        extra='location = /blocked.bin { types { } default_type application/x-blocked; }\n'
                              'location = /cookie { add_header Set-Cookie "sid=SETCOOKIE-SECRET"; '
                              'return 200 "ok"; }')


def test_curl_http2_is_bridged_as_http2_on_both_legs(h2gw, site):
    r = curl(site.url("/index.html"), "--http2", proxy=h2gw.port, cacert=h2gw.ca_pem)
    assert r.http_code == 200 and r.body == INDEX, r
    assert r.info.get("http_version") == "2", r.info
    rec = h2gw.wait_record(lambda x: x.get("dst") == "127.0.0.1:%d" % site.port)
    assert rec["alpn"] == "h2" and "error" not in rec, rec
    (req,) = read_requests(h2gw.reqlog, 1)
    assert not REQUEST_KEYS - set(req), req
    assert req["http"] == "2" and req["stream"] == 1 and req["conn"] == rec["id"], req
    assert req["method"] == "GET" and req["path"] == "/index.html", req
    assert req["status"] == 200 and req["resp_bytes"] == len(INDEX), req
    assert req["content_type"] == "text/html" and req["action"] == "allow", req
    (seen,) = site.wait_access_log(lambda a: a["uri"] == "/index.html")
    assert seen["proto"] == "HTTP/2.0" and seen["alpn"] == "h2", seen


def test_curl_http11_stays_http11_on_both_legs(h2gw, site):
    r = curl(site.url("/index.html"), "--http1.1", proxy=h2gw.port, cacert=h2gw.ca_pem)
    assert r.http_code == 200 and r.body == INDEX, r
    assert r.info.get("http_version") == "1.1", r.info
    (seen,) = site.wait_access_log(lambda a: a["uri"] == "/index.html")
    assert seen["proto"] == "HTTP/1.1" and seen["alpn"] == "http/1.1", seen
    (req,) = read_requests(h2gw.reqlog, 1)
    assert req["http"] == "1.1" and req["status"] == 200, req


def test_h2_client_gets_http11_from_an_http11_only_origin(h2gw, nginx_origin):
    o = nginx_origin(h2=False, files={"index.html": INDEX})
    r = curl(o.url("/index.html"), "--http2", proxy=h2gw.port, cacert=h2gw.ca_pem)
    assert r.http_code == 200 and r.body == INDEX, r
    assert r.info.get("http_version") == "1.1", r.info
    (seen,) = o.wait_access_log(lambda a: a["uri"] == "/index.html")
    assert seen["proto"] == "HTTP/1.1", seen
    rec = h2gw.wait_record(lambda x: x.get("dst") == "127.0.0.1:%d" % o.port)
    assert rec["alpn"] == "http/1.1", rec


def test_http_rules_apply_to_each_h2_stream(h2gw, site):
    """Three requests on one h2 connection: the blocked ones get the 403 page on their stream,
    the allowed one its body; none of the blocked requests reaches the origin."""
    urls = [site.url("/admin/x.html"), site.url("/index.html"), site.url("/blocked.bin")]
    cmd = ["curl", "-sS", "--http2", "--proxy", "http://127.0.0.1:%d" % h2gw.port, "--cacert",
           str(h2gw.ca_pem), "--max-time", str(T(20)), "-w", "%{http_code} %{http_version}\\n"]
    for u in urls:
        cmd += [u, "-o", "/dev/null"]
    p = support.run(cmd, timeout=T(25))
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().split("\n")[:3] == ["403 2", "200 2", "403 2"], p.stdout
    recs = read_requests(h2gw.reqlog, 3)
    assert len({r["conn"] for r in recs}) == 1, recs
    by_path = {r["path"]: r for r in recs}
    assert by_path["/admin/x.html"]["action"] == "block", by_path
    assert by_path["/admin/x.html"]["rule"] == "no-admin", by_path
    assert by_path["/blocked.bin"]["rule"] == "no-binaries", by_path
    assert by_path["/blocked.bin"]["status"] == 403, by_path
    assert by_path["/index.html"]["action"] == "allow", by_path
    seen = [a["uri"] for a in site.access_log()]
    assert "/admin/x.html" not in seen and "/index.html" in seen, seen
    page = curl(site.url("/admin/x.html"), "--http2", proxy=h2gw.port, cacert=h2gw.ca_pem)
    assert page.http_code == 403 and "no-admin" in page.text, page


def test_request_log_redacts_credentials_and_cookies(h2gw, site):
    secrets = ["AUTH-SECRET", "COOKIE-SECRET", "APIKEY-SECRET", "SETCOOKIE-SECRET"]
    for version in ("--http2", "--http1.1"):
        r = curl(site.url("/cookie"), version, "-H", "Authorization: Bearer AUTH-SECRET",
                 "-H", "Cookie: sid=COOKIE-SECRET", "-H", "X-Api-Key: APIKEY-SECRET",
                 "-H", "X-Visible: shown", proxy=h2gw.port, cacert=h2gw.ca_pem)
        assert r.http_code == 200, r
    recs = read_requests(h2gw.reqlog, 2)
    assert {r["http"] for r in recs} == {"2", "1.1"}, recs
    for rec in recs:
        req = dict(rec["req_headers"])
        resp = dict(rec["resp_headers"])
        assert req["authorization"] == "[redacted]", rec
        assert req["cookie"] == "[redacted]" and req["x-api-key"] == "[redacted]", rec
        assert req["x-visible"] == "shown", rec
        assert resp["set-cookie"] == "[redacted]", rec
    text = h2gw.reqlog.read_text()
    for s in secrets:
        assert s not in text, s


def test_h2load_100_streams_over_several_connections(sluice, site, tmp_path):
    """h2load speaks to the gateway in fixed mode (it has no proxy support): 4 connections,
    100 concurrent streams each, every request answered and logged."""
    reqlog = tmp_path / "requests.jsonl"
    gw = sluice("--request-log", reqlog, mode="fixed:localhost:%d" % site.port)
    n = 2000
    p = support.run(["h2load", "-n", str(n), "-c", "4", "-m", "100", "-t", "1",
                     "https://localhost:%d/index.html" % gw.port], timeout=T(60))
    out = p.stdout.decode()
    assert p.returncode == 0, out + p.stderr.decode()
    assert ("requests: %d total, %d started, %d done, %d succeeded, 0 failed, 0 errored, "
            "0 timeout" % (n, n, n, n)) in out, out
    assert "status codes: %d 2xx" % n in out, out
    recs = read_requests(reqlog, n)
    assert all(r["http"] == "2" and r["status"] == 200 for r in recs), recs[:3]
    assert len({r["conn"] for r in recs}) == 4, {r["conn"] for r in recs}
    assert max(r["stream"] for r in recs) > 100
    h2 = [a for a in site.access_log() if a["proto"] == "HTTP/2.0"]
    assert len(h2) == n


def _stream_sha256(cmd, timeout):
    """Runs cmd (curl writing the body to stdout), hashing the body as it streams."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=support.clean_env())
    h, n = hashlib.sha256(), 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            chunk = proc.stdout.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
            assert time.monotonic() < deadline, "download too slow: %d bytes" % n
        err = proc.stderr.read().decode(errors="replace")
        proc.wait(timeout=T(10))
    finally:
        support.stop_pid(proc)
    return h.hexdigest(), n, proc.returncode, err


def test_one_gib_download_over_h2_arrives_intact(h2gw, nginx_origin):
    size = 1 << 30
    o = nginx_origin(h2=True, files={"big.bin": size})
    cmd = ["curl", "-sS", "--http2", "--proxy", "http://127.0.0.1:%d" % h2gw.port, "--cacert",
           str(h2gw.ca_pem), "--max-time", str(T(240)), "-w", "%{stderr}%{http_version}",
           o.url("/big.bin")]
    digest, n, rc, err = _stream_sha256(cmd, T(240))
    assert rc == 0 and err.endswith("2"), err
    assert n == size and digest == support.pattern_sha256(size)
    (req,) = read_requests(h2gw.reqlog, 1)
    assert req["http"] == "2" and req["resp_bytes"] == size, req


def _vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def test_slow_h2_reader_is_flow_controlled_not_buffered(h2gw, nginx_origin, tmp_path):
    """curl reads at 1 MB/s from a fast origin: the bridge gives the origin window only as
    the client takes bytes, so the gateway's memory stays flat."""
    o = nginx_origin(h2=True, files={"big.bin": 256 << 20})
    out = tmp_path / "slow.bin"
    proc = subprocess.Popen(["curl", "-sS", "--http2", "--limit-rate", "1M", "--proxy",
                             "http://127.0.0.1:%d" % h2gw.port, "--cacert", str(h2gw.ca_pem),
                             "-o", str(out), o.url("/big.bin")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=support.clean_env())
    try:
        deadline = time.monotonic() + T(10)
        while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert out.exists() and out.stat().st_size > 0, "download did not start"
        before = _vm_rss_kib(h2gw.proc.pid)
        time.sleep(T(3))
        grown = _vm_rss_kib(h2gw.proc.pid) - before
        got = out.stat().st_size
    finally:
        support.stop_pid(proc)
    assert got < 64 << 20, got
    rec = h2gw.wait_record(lambda x: x.get("dst") == "127.0.0.1:%d" % o.port)
    # The bridge's own count of what it and nghttp2 hold: about one stream window (1 MiB)
    # and the output marks, whatever the origin sent.
    assert rec["h2"]["mem_peak"] < 4 << 20, rec
    if not support.SANITIZE:  # ASan's quarantine keeps freed memory resident
        assert grown < 24 * 1024, "sluice grew by %d KiB for a slow h2 reader" % grown


def test_sigterm_sends_goaway_and_lets_the_h2_stream_finish(h2gw, nginx_origin, tmp_path):
    size = 64 << 20
    o = nginx_origin(h2=True, files={"big.bin": size})
    out = tmp_path / "big.bin"
    proc = subprocess.Popen(["curl", "-sS", "--http2", "--limit-rate", "16M", "--proxy",
                             "http://127.0.0.1:%d" % h2gw.port, "--cacert", str(h2gw.ca_pem),
                             "-o", str(out), "-w", "%{http_code}", o.url("/big.bin")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=support.clean_env())
    try:
        deadline = time.monotonic() + T(10)
        while not (out.exists() and out.stat().st_size > 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        h2gw.signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=T(30))
    finally:
        support.stop_pid(proc)
    assert proc.returncode == 0 and stdout == b"200", stderr
    assert support.file_sha256(out) == support.pattern_sha256(size)
    assert h2gw.wait_exit(T(15)) == 0, h2gw.stderr_text()
    h2gw.check_clean_exit()
    (req,) = read_requests(h2gw.reqlog, 1)
    assert req["status"] == 200 and req["resp_bytes"] == size, req
