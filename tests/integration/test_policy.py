"""Policy in the connection path: selective interception, passthrough, block (alert, reset,
page), reload under load, and clients that refuse the forged certificate (pinning)."""
import concurrent.futures
import os
import re
import signal
import socket
import ssl
import threading
import time

import pytest

import support
from support import T, curl, s_client, verify_code, handshake_done


def write_config(path, body):
    path.write_text(body)
    return path


def leaf_of(out):
    certs = support.pem_blocks(out)
    assert certs, "no certificate in s_client output:\n" + out[-3000:]
    return certs[0]


def fetch(gw, origin, servername, *extra):
    """s_client through the explicit proxy to origin with the given SNI."""
    return s_client("localhost:%d" % origin.port, "-servername", servername, *extra,
                    proxy=gw.port, ign_eof=True,
                    data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")


SELECTIVE = """
policy:
  default: passthrough
  rules:
    - name: listed
      sni: ["localhost", "*.intercepted.test"]
      action: intercept
"""


def test_selective_interception(sluice, origin, pki, tmp_path):
    """Listed names show sluice's CA; other names reach the client with the origin's own
    certificate, the same one a direct connection sees."""
    o = origin("good")
    gw = sluice("--config", write_config(tmp_path / "sel.yaml", SELECTIVE))
    ca_subject = support.x509_name(str(gw.ca_pem), "subject") if gw.ca_pem.exists() else None

    rc, out = fetch(gw, o, "localhost", "-CAfile", str(gw.ca_pem))
    assert verify_code(out) == (0, "ok") and o.marker in out, out[-2000:]
    leaf = leaf_of(out)
    assert support.x509_name(leaf, "issuer") == support.x509_name(str(gw.ca_pem), "subject")

    rc, direct = s_client("127.0.0.1:%d" % o.port, "-servername", "other.test",
                          data=b"", ign_eof=False)
    rc, out = fetch(gw, o, "other.test")
    passed = leaf_of(out)
    assert support.cert_sha256(passed) == support.cert_sha256(leaf_of(direct))
    assert support.cert_sha256(passed) == pki.sha256("good")
    assert support.x509_name(passed, "issuer") != ca_subject

    recs = gw.wait_records(2)
    for r in recs:
        support.check_record_schema(r)
    by_sni = {r["sni"]: r for r in recs}
    assert by_sni["localhost"]["action"] == "intercept" and by_sni["localhost"]["rule"] == "listed"
    other = by_sni["other.test"]
    assert other["action"] == "passthrough" and other["rule"] is None, other
    assert other["client_tls"] is None and other["bytes_down"] > 0, other


BLOCKING = """
policy:
  default: intercept
  rules:
    - name: no-alerts
      sni: ["alert.test"]
      action: block
      how: alert
    - name: no-resets
      sni: ["reset.test"]
      action: block
      how: reset
    - name: page-for-sni
      sni: ["page.test"]
      action: block
      how: page
    - name: forbidden-host
      host: ["forbidden.test"]
      action: block
      how: page
    - name: plain-reset
      host: ["plain-reset.test"]
      action: block
      how: reset
    - name: plain-alert
      host: ["plain-alert.test"]
      action: block
      how: alert
"""


@pytest.fixture(scope="module")
def blocking_gw(sluice_mod, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("blk") / "blk.yaml", BLOCKING)
    return sluice_mod("--config", cfg)


def test_block_by_sni_with_an_alert(blocking_gw, origin_mod):
    o = origin_mod("good")
    rc, out = fetch(blocking_gw, o, "alert.test")
    assert "access denied" in out and not handshake_done(out), out[-2000:]
    assert o.marker not in out
    rec = blocking_gw.wait_record(lambda r: r.get("sni") == "alert.test")
    assert rec["action"] == "block" and rec["rule"] == "no-alerts", rec


def test_block_by_sni_with_a_reset(blocking_gw, origin_mod):
    o = origin_mod("good")
    rc, out = fetch(blocking_gw, o, "reset.test")
    assert not handshake_done(out) and o.marker not in out
    assert re.search(r"reset by peer|errno=104|Connection reset", out), out[-2000:]
    rec = blocking_gw.wait_record(lambda r: r.get("sni") == "reset.test")
    assert rec["action"] == "block" and rec["rule"] == "no-resets", rec


def test_block_by_sni_with_the_page(blocking_gw, origin_mod):
    o = origin_mod("good")
    r = curl("https://page.test:%d/secret" % o.port, "--resolve",
             "page.test:%d:127.0.0.1" % o.port, proxy=blocking_gw.port,
             cacert=blocking_gw.ca_pem)
    assert r.http_code == 403 and "page-for-sni" in r.text and o.marker not in r.text, r
    rec = blocking_gw.wait_record(lambda x: x.get("sni") == "page.test")
    assert rec["action"] == "block" and rec["rule"] == "page-for-sni", rec
    assert rec["upstream_tls"] is None, rec


def test_connect_to_a_blocked_host_gets_the_403_page(blocking_gw):
    t = support.ProxyTunnel(blocking_gw.port, "forbidden.test:443", timeout=T(10))
    try:
        data, closed = t.recv_until_close(T(10))
    finally:
        t.close()
    assert t.status.startswith("HTTP/1.1 403"), t.head
    assert b"forbidden-host" in data and closed, data[:500]
    rec = blocking_gw.wait_record(lambda r: r.get("dst") == "forbidden.test:443")
    assert rec["action"] == "block" and rec["rule"] == "forbidden-host", rec


def test_plain_http_to_a_blocked_host_is_refused(blocking_gw, origin_mod):
    """Plain http:// through the explicit proxy obeys the connection rules too: the page (an
    alert has no TLS to ride on, so it becomes the page), or a reset; the origin is never
    contacted."""
    o = origin_mod("good", kind="http")
    for host, rule in (("forbidden.test", "forbidden-host"), ("plain-alert.test", "plain-alert")):
        r = curl("http://%s:%d/x" % (host, o.port), proxy=blocking_gw.port)
        assert r.http_code == 403 and rule in r.text and o.marker not in r.text, r
        rec = blocking_gw.wait_record(lambda x: x.get("dst") == "%s:%d" % (host, o.port))
        assert rec["action"] == "block" and rec["rule"] == rule, rec
    r = curl("http://plain-reset.test:%d/x" % o.port, proxy=blocking_gw.port)
    assert r.rc != 0 and r.http_code == 0, r
    rec = blocking_gw.wait_record(lambda x: x.get("dst") == "plain-reset.test:%d" % o.port)
    assert rec["action"] == "block" and rec["rule"] == "plain-reset", rec
    ok = curl("http://127.0.0.1:%d/" % o.port, proxy=blocking_gw.port)
    assert ok.http_code == 200 and o.marker in ok.text, ok
    assert "/x" not in o.log_text()


@pytest.mark.parametrize("case", ["blocked", "unreachable"])
def test_plain_http_upload_sent_whole_gets_the_proxy_answer(case, blocking_gw, origin_mod):
    """A plain http:// POST that Python's http.client writes whole before reading gets the
    proxy's own answer (the 403 page of a blocked host, the 502 of an origin that refuses the
    connection), not a reset: the gateway reads and drops the upload after answering."""
    if case == "blocked":
        host, port, want = "forbidden.test", origin_mod("good", kind="http").port, 403
    else:
        host, port, want = "127.0.0.1", support.free_port(), 502
    status, text, client_port = support.post_whole(blocking_gw, host, port, "/x",
                                                   b"upload-bytes " * 240000, tls=False)
    assert status == want, (status, text[:300])
    blocking_gw.wait_record(support.client_port_is(client_port))


RELOAD_BEFORE = """
log_level: info
policy:
  default: intercept
"""

RELOAD_AFTER = """
log_level: info
policy:
  default: intercept
  rules:
    - name: added-by-reload
      sni: ["blocked-after-reload.test"]
      action: block
      how: alert
"""


def one_request(gw_port, origin_port, cafile):
    """A new connection through the proxy, one HTTPS request; returns the status line."""
    raw = socket.create_connection(("127.0.0.1", gw_port), timeout=T(10))
    try:
        raw.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % origin_port)
        head = b""
        while b"\r\n\r\n" not in head:
            b = raw.recv(1)
            if not b:
                return "closed during CONNECT"
            head += b
        ctx = ssl.create_default_context(cafile=str(cafile))
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.split(b"\r\n", 1)[0].decode(errors="replace")
    except (OSError, ssl.SSLError) as e:
        return "error: %s" % e
    finally:
        raw.close()


def test_reload_under_load_drops_nothing_and_applies_the_new_rule(sluice, origin, tmp_path):
    o = origin("good")
    cfg = write_config(tmp_path / "reload.yaml", RELOAD_BEFORE)
    gw = sluice("--config", cfg, workers=2)
    stop = threading.Event()
    results = []

    def load():
        while not stop.is_set():
            results.append(one_request(gw.port, o.port, gw.ca_pem))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(load) for _ in range(4)]
        time.sleep(T(1))
        cfg.write_text(RELOAD_AFTER)
        gw.signal(signal.SIGHUP)
        deadline = time.monotonic() + T(10)
        while "reloaded the configuration" not in gw.stderr_text():
            assert time.monotonic() < deadline, gw.stderr_text()
            time.sleep(0.05)
        time.sleep(T(1))
        stop.set()
        for f in futures:
            f.result()
    failed = [r for r in results if not r.startswith("HTTP/1.1 200")]
    assert len(results) > 20 and not failed, (len(results), failed[:5])
    # The new rule is in force for new connections.
    rc, out = fetch(gw, o, "blocked-after-reload.test")
    assert "access denied" in out, out[-2000:]
    rec = gw.wait_record(lambda r: r.get("sni") == "blocked-after-reload.test")
    assert rec["rule"] == "added-by-reload", rec
    # A broken config is refused and the running one stays.
    cfg.write_text(RELOAD_AFTER + "    - name: broken\n      action: explode\n")
    gw.signal(signal.SIGHUP)
    deadline = time.monotonic() + T(10)
    while "reload refused" not in gw.stderr_text():
        assert time.monotonic() < deadline, gw.stderr_text()
        time.sleep(0.05)
    assert "reload.yaml:" in gw.stderr_text()
    assert one_request(gw.port, o.port, gw.ca_pem).startswith("HTTP/1.1 200")
    rc, out = fetch(gw, o, "blocked-after-reload.test")
    assert "access denied" in out


PINNING = """
policy:
  default: intercept
  pinning:
    enabled: true
    threshold: 2
    window: 60s
    ttl: 60s
"""


def test_client_rejecting_the_forged_certificate_is_passed_through(sluice, origin, pki,
                                                                   tmp_path):
    o = origin("good")
    gw = sluice("--config", write_config(tmp_path / "pin.yaml", PINNING))
    # A pinning client: trusts only the real root, aborts with an alert on anything else.
    for _ in range(2):
        rc, out = fetch(gw, o, "localhost", "-CAfile", str(pki.root), "-verify_return_error")
        assert not handshake_done(out) or verify_code(out)[0] != 0, out[-2000:]
        assert o.marker not in out
    rc, out = fetch(gw, o, "localhost", "-CAfile", str(pki.root), "-verify_return_error")
    assert verify_code(out) == (0, "ok") and o.marker in out, out[-2000:]
    assert support.cert_sha256(leaf_of(out)) == pki.sha256("good")
    recs = gw.wait_records(3)
    last = recs[-1]
    assert last["action"] == "passthrough" and last["rule"] == "pinning_suspected", last
    assert gw.stderr_text().count("pinning_suspected") == 1, gw.stderr_text()
    assert "client 127.0.0.1 refused" in gw.stderr_text(), gw.stderr_text()
    # Another client address is still intercepted: one client's refusals do not switch
    # inspection off for everyone.
    other = other_client_fetch(gw, o)
    assert o.marker in other, other[-2000:]
    rec = gw.wait_record(lambda r: r["client"].startswith("127.0.0.2:"))
    assert rec["action"] == "intercept" and rec["rule"] is None, rec


def other_client_fetch(gw, o):
    """A request from source address 127.0.0.2 through the explicit proxy; returns the reply."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.settimeout(T(10))
    raw.bind(("127.0.0.2", 0))
    raw.connect(("127.0.0.1", gw.port))
    raw.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % o.port)
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode(errors="replace")


HTTP_RULES = """
policy:
  default: intercept
  http:
    - name: no-uploads
      method: [POST, PUT]
      action: block
    - name: no-admin
      path: "/admin"
      action: block
"""


@pytest.fixture(scope="module")
def http_gw(sluice_mod, tmp_path_factory):
    cfg = write_config(tmp_path_factory.mktemp("http") / "http.yaml", HTTP_RULES)
    return sluice_mod("--config", cfg)


def test_http_path_rule_gives_the_block_page(http_gw, origin_mod):
    o = origin_mod("good")
    ok = curl(o.url("/"), "--http1.1", proxy=http_gw.port, cacert=http_gw.ca_pem)
    assert ok.http_code == 200 and o.marker in ok.text, ok
    assert "GET / HTTP/1.1" in o.log_text(), "the origin's log should show requests it got"
    r = curl(o.url("/admin/users"), "--http1.1", proxy=http_gw.port, cacert=http_gw.ca_pem)
    assert r.http_code == 403 and "no-admin" in r.text and o.marker not in r.text, r
    assert "/admin/users" not in o.log_text(), "the blocked request reached the origin"


def test_http_method_rule_blocks_an_upload_before_it_is_sent(http_gw, origin_mod, tmp_path):
    o = origin_mod("good")
    (tmp_path / "up").write_bytes(b"secret-upload-" * 1000)
    r = curl(o.url("/echo"), "--http1.1", "--data-binary", "@%s" % (tmp_path / "up"),
             proxy=http_gw.port, cacert=http_gw.ca_pem)
    assert r.http_code == 403 and "no-uploads" in r.text and "secret-upload" not in r.text, r
    assert "POST /echo" not in o.log_text()


@pytest.mark.parametrize("where", ["sni", "method"])
def test_block_page_reaches_a_client_that_sends_its_whole_upload_first(
        where, blocking_gw, http_gw, origin_mod):
    """Python's http.client writes a whole 3 MB POST before reading. Blocked by SNI (the page
    from the connection layer) or by the HTTP method rule (the page from the HTTP layer), it
    still gets the page, not a reset: the gateway drops the upload it does not want until the
    client is done."""
    o = origin_mod("good")
    gw, host, rule = ((blocking_gw, "page.test", "page-for-sni") if where == "sni"
                      else (http_gw, "localhost", "no-uploads"))
    body = b"upload-bytes " * 240000
    status, page, port = support.post_whole(gw, host, o.port, "/echo", body)
    assert status == 403 and rule in page, (status, page[:300])
    assert "POST /echo" not in o.log_text()
    gw.wait_record(support.client_port_is(port))  # the connection is over


def test_http_framing_attack_is_refused(http_gw, origin_mod):
    o = origin_mod("good")
    raw = socket.create_connection(("127.0.0.1", http_gw.port), timeout=T(10))
    port = raw.getsockname()[1]
    raw.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % o.port)
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    ctx = ssl.create_default_context(cafile=str(http_gw.ca_pem))
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    data = b""
    s.settimeout(T(10))
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 400"), data[:300]
    rec = http_gw.wait_record(support.client_port_is(port))
    assert rec["error"]["stage"] == "http" and rec["error"]["reason"], rec


def test_request_log_records_rule_and_action(sluice, origin, tmp_path):
    o = origin("good")
    cfg = write_config(tmp_path / "req.yaml", HTTP_RULES)
    reqlog = tmp_path / "requests.jsonl"
    gw = sluice("--config", cfg, "--request-log", reqlog, "--request-log-drop-query", "yes")
    ok = curl(o.url("/bytes/1000?token=secret"), "--http1.1", proxy=gw.port, cacert=gw.ca_pem)
    assert ok.http_code == 200, ok
    blocked = curl(o.url("/admin/x"), "--http1.1", proxy=gw.port, cacert=gw.ca_pem)
    assert blocked.http_code == 403, blocked
    deadline = time.monotonic() + T(10)
    recs = []
    while len(recs) < 2 and time.monotonic() < deadline:
        recs = [__import__("json").loads(l) for l in reqlog.read_text().splitlines() if l]
        time.sleep(0.05)
    assert len(recs) == 2, recs
    first, second = recs
    assert first["method"] == "GET" and first["path"] == "/bytes/1000", first
    assert "secret" not in reqlog.read_text()
    assert first["status"] == 200 and first["resp_bytes"] == 1000, first
    assert first["action"] == "allow" and first["rule"] is None, first
    assert first["scheme"] == "https" and first["http"] == "1.1", first
    assert first["authority"] == "localhost:%d" % o.port, first
    assert second["status"] == 403 and second["action"] == "block", second
    assert second["rule"] == "no-admin", second
    conn = gw.wait_record(lambda r: r["id"] == second["conn"])
    assert conn["action"] == "intercept", conn


RESPONSE_RULES = """
policy:
  default: intercept
  http:
    - name: no-binaries
      content_type: ["application/octet-stream"]
      action: block
"""


def test_http_response_rule_replaces_the_response_with_the_block_page(sluice, origin, tmp_path):
    o = origin("good")
    gw = sluice("--config", write_config(tmp_path / "resp.yaml", RESPONSE_RULES))
    text = curl(o.url("/"), "--http1.1", proxy=gw.port, cacert=gw.ca_pem)
    assert text.http_code == 200 and o.marker in text.text, text
    r = curl(o.url("/bytes/5000"), "--http1.1", proxy=gw.port, cacert=gw.ca_pem)
    assert r.http_code == 403 and "no-binaries" in r.text, r
    assert len(r.body) < 5000 and next(support.pattern_chunks(64))[:32] not in r.body, r


HEADER_RESPONSE_RULES = """
policy:
  default: intercept
  http:
    - name: exempt-by-header
      header: {name: X-Exempt, value: "yes"}
      action: allow
    - name: no-binaries-for-flagged
      header: {name: X-Flagged}
      content_type: ["application/octet-stream"]
      action: block
    - name: no-binaries
      path: ["/bytes/"]
      content_type: ["application/octet-stream"]
      action: block
"""


@pytest.mark.parametrize("version", ["--http1.1", "--http2"])
def test_response_rules_see_the_request_headers(sluice, origin, nginx_origin, tmp_path, version):
    """A rule's header keys are judged on the request even when the rule is decided at the
    response: an allow exception by header holds against a later response rule, and a
    response rule with a header key matches only requests that carry it."""
    gw = sluice("--config", write_config(tmp_path / "hdr.yaml", HEADER_RESPONSE_RULES))
    o = nginx_origin(h2=True, files={"bytes/5000": 5000, "other.bin": 5000})

    def get(path, *headers):
        args = [version]
        for h in headers:
            args += ["-H", h]
        return curl(o.url(path), *args, proxy=gw.port, cacert=gw.ca_pem)

    assert get("/bytes/5000").http_code == 403
    exempt = get("/bytes/5000", "X-Exempt: yes")
    assert exempt.http_code == 200 and len(exempt.body) == 5000, exempt
    assert get("/other.bin").http_code == 200
    flagged = get("/other.bin", "X-Flagged: 1")
    assert flagged.http_code == 403 and "no-binaries-for-flagged" in flagged.text, flagged

