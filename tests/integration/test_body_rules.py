"""Body rules: keywords and regexes found in decoded request and response bodies (gzip,
deflate, br, stacked), the block page while the message is held, a cut connection or a reset
stream once it went out, captures, and bodies that pass byte-identical. HTTP/1.1 against
origin.py (its /enc/ and /sink routes), HTTP/2 against nginx."""
import base64
import gzip
import hashlib
import json
import ssl
import time

import pytest

from support import T, ProxyTunnel, client_port_is, curl, post_whole

RULES = """
policy:
  default: intercept
  http:
    - name: allow-internal
      path: ["/enc/identity/internal"]
      action: allow
    - name: no-secrets-down
      body: ["TOP-SECRET-MARKER"]
      body_in: response
      action: block
    - name: no-exfil
      body_regex: ["EXFIL-[0-9]{4}"]
      body_in: request
      capture: 4
      action: block
    - name: capture-down
      path: ["/enc/identity/capture", "/gz/capture"]
      body: ["CAPTURE-ME"]
      capture: 2
      action: block
"""

MARKER = "TOP-SECRET-MARKER"
KWX = "kwx=" + MARKER.encode().hex()  # the keyword for origin.py, not readable in the URL


def write_config(path, body):
    path.write_text(body)
    return path


def read_jsonl(path, n, timeout=None, pred=None):
    """The file's JSON lines (those matching pred), once there are at least n."""
    deadline = time.monotonic() + (timeout or T(10))
    recs = []
    while time.monotonic() < deadline:
        try:
            recs = [json.loads(l) for l in path.read_text().splitlines() if l]
        except (OSError, ValueError):
            recs = []
        recs = [r for r in recs if pred is None or pred(r)]
        if len(recs) >= n:
            return recs
        time.sleep(0.05)
    raise AssertionError("wanted %d records in %s, got %d: %s" % (n, path, len(recs), recs[-5:]))


@pytest.fixture(scope="module")
def gw(sluice_mod, tmp_path_factory):
    d = tmp_path_factory.mktemp("body")
    reqlog, capture = d / "requests.jsonl", d / "capture.jsonl"
    g = sluice_mod("--config", write_config(d / "body.yaml", RULES), "--request-log", reqlog,
                   "--capture-file", capture)
    g.reqlog, g.capture = reqlog, capture
    return g


@pytest.fixture(scope="module")
def o(origin_mod):
    return origin_mod("good")


def get(gw, url, *args, out=None):
    return curl(url, "--http1.1", *args, proxy=gw.port, cacert=gw.ca_pem, out=out)


def request_record(gw, path_prefix):
    (rec,) = read_jsonl(gw.reqlog, 1, pred=lambda r: r["path"].startswith(path_prefix))
    return rec


# --- responses -------------------------------------------------------------------------------

@pytest.mark.parametrize("coding", ["gzip", "br", "deflate", "deflate-raw", "zstd", "gzip,br"])
def test_encoded_response_with_a_match_gets_the_block_page(gw, o, coding):
    """The origin sends the keyword compressed (curl without --compressed: the client would
    get the encoded bytes as they are); the gateway decodes, finds it while the response is
    held, and the client gets the 403 page instead, named in the request log."""
    path = "/enc/%s/page-%s?size=50000&pos=30000&%s" % (coding, coding.replace(",", "-"), KWX)
    r = get(gw, o.url(path))
    assert r.http_code == 403 and "no-secrets-down" in r.text, r
    assert MARKER.encode() not in r.body and b"lorem ipsum" not in r.body, r
    rec = request_record(gw, path.split("?")[0])
    assert rec["action"] == "block" and rec["rule"] == "no-secrets-down", rec
    assert rec["status"] == 403, rec


@pytest.mark.parametrize("coding,why", [
    ("compress", "content coding 'compress' is not supported"),
    (",".join(["identity"] * 20 + ["gzip"]), "content coding 'too-long-to-read' is not supported"),
])
def test_body_that_cannot_be_decoded_passes_and_is_logged(gw, o, coding, why):
    """A coding sluice cannot undo (here origin.py sends the text as it is, labelled compress), or a
    list of codings too long to read whole, is not inspected: the response passes, and the
    log names the connection, the site and why."""
    r = get(gw, o.url("/enc/%s/undecodable?size=3000&%s" % (coding, KWX)))
    assert r.http_code == 200, r
    deadline = time.monotonic() + T(10)
    while why not in gw.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = [l for l in gw.stderr_text().splitlines() if why in l]
    assert line and "/enc/" in line[-1] and "not (wholly) inspected" in line[-1], line


def test_body_uninspectable_block_refuses_what_cannot_be_read(sluice, tmp_path, o):
    """With body_uninspectable: block, a body the rules cannot decode is blocked in the name of
    the first rule that wanted to read it, instead of passing unread; a readable clean body
    still passes."""
    reqlog = tmp_path / "requests.jsonl"
    g = sluice("--config", write_config(tmp_path / "strict.yaml", RULES), "--request-log",
               reqlog, "--capture-file", tmp_path / "cap.jsonl", "--body-uninspectable", "block")
    r = curl(o.url("/enc/compress/odd?size=3000"), "--http1.1", proxy=g.port, cacert=g.ca_pem)
    assert r.http_code == 403 and "no-secrets-down" in r.text, r
    ok = curl(o.url("/enc/gzip/fine?size=3000"), "--http1.1", proxy=g.port, cacert=g.ca_pem)
    assert ok.http_code == 200, ok
    recs = read_jsonl(reqlog, 2)
    odd = [x for x in recs if x["path"].startswith("/enc/compress/")][0]
    assert odd["action"] == "block" and odd["rule"] == "no-secrets-down", odd
    assert "blocked (body_uninspectable: block)" in g.stderr_text()


def test_allow_rule_before_a_body_rule_disarms_it(gw, o):
    r = get(gw, o.url("/enc/identity/internal?size=5000&%s" % KWX))
    assert r.http_code == 200 and MARKER in r.text, r


@pytest.mark.parametrize("coding,chunked", [("identity", "0"), ("gzip", "1"), ("br", "0")])
def test_response_without_a_match_passes_byte_identical(gw, o, coding, chunked, tmp_path):
    """Bodies pass as they came: not decoded, not re-encoded (the checksum of the bytes the
    client got is the origin's), past the hold and past the inspected maximum (1 MiB)."""
    out = tmp_path / "body"
    r = get(gw, o.url("/enc/%s/clean?size=1500000&chunked=%s" % (coding, chunked)), "-D",
            str(tmp_path / "head"), out=out)
    assert r.http_code == 200, r
    head = (tmp_path / "head").read_text().lower()
    want = [l.split(":", 1)[1].strip() for l in head.splitlines()
            if l.startswith("x-body-sha256:")][0]
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want


def test_match_after_the_response_head_went_out_closes_the_connection(gw, o, tmp_path):
    """Past the response hold (64 KiB by default) the head is on its way: a match then cuts
    the connection. The client has the head and part of the body, never the keyword."""
    out = tmp_path / "body"
    path = "/enc/identity/late?size=400000&pos=300000&%s&delay=0.01" % KWX
    r = get(gw, o.url(path), out=out)
    assert r.http_code == 200 and r.rc != 0, r
    body = out.read_bytes()
    assert MARKER.encode() not in body and len(body) < 300000, len(body)
    rec = request_record(gw, "/enc/identity/late")
    assert rec["action"] == "block" and rec["rule"] == "no-secrets-down", rec
    assert rec["status"] == 200, rec


# --- requests -------------------------------------------------------------------------------

def upload(gw, o, data, *args, tmp_path, name="up"):
    f = tmp_path / name
    f.write_bytes(data)
    return get(gw, o.url("/sink"), "--data-binary", "@%s" % f, "-H",
               "Content-Type: text/plain", *args)


def text(n, kw=None, pos=0):
    line = b"the quick brown fox jumps over the lazy dog, again and again and again.\n"
    data = bytearray((line * (n // len(line) + 1))[:n])
    if kw:
        data[pos:pos + len(kw)] = kw
    return bytes(data)


@pytest.mark.parametrize("chunked", [False, True])
def test_request_body_match_is_not_forwarded(gw, o, tmp_path, chunked):
    """The upload is held while its body is scanned: the keyword at 300 KB of 600 KB means the
    origin never sees the request, and the client gets the 403 page."""
    path_mark = "EXFIL-%d" % (1000 + chunked)
    args = ["-H", "Transfer-Encoding: chunked"] if chunked else []
    r = upload(gw, o, text(600000, path_mark.encode(), 300000), *args, tmp_path=tmp_path)
    assert r.http_code == 403 and "no-exfil" in r.text, r
    time.sleep(0.2)
    assert "POST /sink" not in o.log_text(), "the blocked upload reached the origin"
    recs = read_jsonl(gw.reqlog, 1, pred=lambda x: x["method"] == "POST" and x["rule"])
    assert recs[-1]["rule"] == "no-exfil" and recs[-1]["action"] == "block", recs[-1]


@pytest.mark.parametrize("size", [4_000_000, 40_000_000])
def test_blocked_upload_sent_whole_before_reading_still_gets_the_page(gw, o, size):
    """A client that writes its whole request before it reads (Python's http.client, under
    requests) gets the 403 page: after the page the gateway reads and drops the rest of the
    upload until the client is done, since closing with the upload unread would reset the
    connection before the client read the page. Past 16 MiB it stops reading and closes, and
    the 40 MB upload is reset, as docs/HTTP1.md says."""
    path = "/sink-whole-%d" % size
    status, page, port = post_whole(gw, "localhost", o.port, path,
                                    text(size, b"EXFIL-3000", 300000))
    if size > 16 << 20:
        assert status is None, (status, page[:200])
    else:
        assert status == 403 and "no-exfil" in page, (status, page[:200])
    rec = read_jsonl(gw.reqlog, 1, pred=lambda x: x["path"] == path)[-1]
    assert rec["rule"] == "no-exfil" and rec["action"] == "block", rec
    gw.wait_record(client_port_is(port))  # the connection is over
    gw.assert_alive()


def test_client_that_stops_mid_upload_is_let_go_after_the_linger(gw, o):
    """A client that got the page but neither finishes its upload nor closes is held for the
    linger (5 s), not for idle_timeout (300 s): its connection record comes within seconds."""
    t = ProxyTunnel(gw.port, "localhost:%d" % o.port)
    ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(t.sock, server_hostname="localhost")
    try:
        s.sendall(b"POST /sink-stalled HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9000000"
                  b"\r\nContent-Type: text/plain\r\n\r\n" + text(400000, b"EXFIL-3001", 300000))
        s.settimeout(T(10))
        got = b""
        while b"no-exfil" not in got:
            chunk = s.recv(65536)
            assert chunk, got[:300]
            got += chunk
        assert got.startswith(b"HTTP/1.1 403"), got[:300]
        start = time.monotonic()
        rec = gw.wait_record(client_port_is(t.local_port),
                             timeout=T(15))
        held = time.monotonic() - start
    finally:
        s.close()
    assert 3 <= held < T(12), held
    assert rec.get("error") is None, rec


def test_request_body_without_a_match_arrives_byte_identical(gw, o, tmp_path):
    """2 MB: held for the first 1 MiB (body_inspect_max), then passed on as it comes."""
    data = text(2000000)
    r = upload(gw, o, data, tmp_path=tmp_path)
    assert r.http_code == 200, r
    got = json.loads(r.text)
    assert got == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, got


def test_gzip_request_body_is_decoded_and_captured(gw, o, tmp_path):
    """A gzip-encoded upload matches on its decoded text; the rule's capture (4 KiB) holds the
    first decoded bytes, with the request's id."""
    plain = text(50000, b"EXFIL-4242", 20000)
    r = upload(gw, o, gzip.compress(plain), "-H", "Content-Encoding: gzip", tmp_path=tmp_path)
    assert r.http_code == 403 and "no-exfil" in r.text, r
    rec = read_jsonl(gw.reqlog, 1, pred=lambda x: x["method"] == "POST" and x["rule"])[-1]
    (cap,) = read_jsonl(gw.capture, 1, pred=lambda c: c["conn"] == rec["conn"])
    assert cap["rule"] == "no-exfil" and cap["direction"] == "request", cap
    assert cap["stream"] == rec["stream"] and cap["ref"] == "%d-%d" % (rec["conn"],
                                                                        rec["stream"]), cap
    assert cap["content_encoding"] == "gzip" and cap["content_type"] == "text/plain", cap
    assert cap["bytes"] == 4096 and cap["truncated"] is True, cap
    assert base64.b64decode(cap["body_b64"]) == plain[:4096]


def test_response_capture_holds_the_first_kib(gw, o):
    r = get(gw, o.url("/enc/identity/capture?size=10000&pos=5000&kwx=" + b"CAPTURE-ME".hex()))
    assert r.http_code == 403 and "capture-down" in r.text, r
    (cap,) = read_jsonl(gw.capture, 1, pred=lambda c: c["path"].startswith("/enc/identity/capture"))
    assert cap["direction"] == "response" and cap["rule"] == "capture-down", cap
    assert cap["bytes"] == 2048 and cap["method"] == "GET", cap
    assert base64.b64decode(cap["body_b64"]).startswith(b"lorem ipsum dolor sit amet")


# --- configuration ------------------------------------------------------------------------

def test_capture_without_a_capture_file_is_refused_with_file_and_line(sluice_bin, tmp_path):
    from support import run_sluice
    cfg = write_config(tmp_path / "cap.yaml", RULES)
    rc, out, err = run_sluice(sluice_bin, "check-config", cfg)
    line = RULES.splitlines().index("      capture: 4") + 1
    assert rc == 1 and "%s:%d:" % (cfg, line) in err and "capture_file" in err, err
    rc, out, err = run_sluice(sluice_bin, "check-config", write_config(
        tmp_path / "ok.yaml", RULES + "capture_file: %s\n" % (tmp_path / "c.jsonl")))
    assert rc == 0, err
    assert "no-exfil: block if body has 1 regex [request bodies; capture 4 KiB]" in out, out


# --- HTTP/2 (nginx as the origin) ---------------------------------------------------------

H2_FILES = {
    "gz/secret.html": gzip.compress(text(40000, MARKER.encode(), 30000)),
    "gz/clean.html": gzip.compress(text(40000)),
    "late.html": text(600000, MARKER.encode(), 500000),
}
H2_EXTRA = ("location /gz/ { add_header Content-Encoding gzip; }\n"
            "location = /up/post { return 200 \"uploaded\\n\"; }")


@pytest.fixture
def h2site(nginx_origin):
    return nginx_origin(h2=True, files=H2_FILES, extra=H2_EXTRA)


def h2(gw, url, *args, out=None):
    return curl(url, "--http2", *args, proxy=gw.port, cacert=gw.ca_pem, out=out)


def test_h2_gzip_response_with_a_match_gets_the_block_page(gw, h2site):
    r = h2(gw, h2site.url("/gz/secret.html"))
    assert r.info.get("http_version") == "2", r
    assert r.http_code == 403 and "no-secrets-down" in r.text, r
    rec = request_record(gw, "/gz/secret.html")
    assert rec["http"] == "2" and rec["rule"] == "no-secrets-down", rec
    assert rec["action"] == "block", rec


def test_h2_clean_response_passes_byte_identical(gw, h2site, tmp_path):
    out = tmp_path / "b"
    r = h2(gw, h2site.url("/gz/clean.html"), out=out)
    assert r.http_code == 200 and r.info.get("http_version") == "2", r
    assert out.read_bytes() == H2_FILES["gz/clean.html"]


def test_h2_match_after_the_head_went_out_resets_the_stream(gw, h2site, tmp_path):
    out = tmp_path / "b"
    r = h2(gw, h2site.url("/late.html"), "--limit-rate", "2M", out=out)
    assert r.info.get("http_version") == "2", r
    assert r.http_code == 200 and r.rc != 0, r
    assert MARKER.encode() not in out.read_bytes()
    rec = request_record(gw, "/late.html")
    assert rec["rule"] == "no-secrets-down" and rec["action"] == "block", rec


def test_h2_request_body_match_is_not_forwarded(gw, h2site, tmp_path):
    f = tmp_path / "up"
    f.write_bytes(text(300000, b"EXFIL-7777", 250000))
    r = h2(gw, h2site.url("/up/post"), "--data-binary", "@%s" % f, "-H",
           "Content-Type: text/plain")
    assert r.info.get("http_version") == "2", r
    assert r.http_code == 403 and "no-exfil" in r.text, r
    time.sleep(0.2)
    assert not [a for a in h2site.access_log() if a["method"] == "POST"], h2site.access_log()
    f.write_bytes(text(300000))
    r = h2(gw, h2site.url("/up/post"), "--data-binary", "@%s" % f, "-H",
           "Content-Type: text/plain")
    assert r.http_code == 200 and r.text == "uploaded\n", r
    (seen,) = h2site.wait_access_log(lambda a: a["method"] == "POST")
    assert seen["proto"] == "HTTP/2.0" and seen["status"] == 200, seen
