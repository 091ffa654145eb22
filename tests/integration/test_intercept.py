"""Interception in explicit mode: forged leaves, bodies, TLS versions, ALPN, the conn log."""
import concurrent.futures
import datetime
import hashlib
import json
import os
import re
import time

import pytest

import support
from support import T, curl, s_client, verify_code, handshake_done, client_port_is, dst_port_is

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def gw(sluice_mod):
    return sluice_mod()


@pytest.fixture(scope="module")
def good(origin_mod):
    return origin_mod("good")


def sluice_leaf(out):
    certs = support.pem_blocks(out)
    assert certs, "no certificate in s_client output:\n" + out[-3000:]
    return certs[0]


@pytest.mark.parametrize("cert", ["good", "good_rsa"])
def test_client_sees_a_leaf_from_sluice_ca_with_the_origin_sans(gw, origin, pki, cert):
    o = origin(cert)
    rc, out = s_client("localhost:%d" % o.port, proxy=gw.port, servername="localhost",
                       cafile=gw.ca_pem)
    assert verify_code(out) == (0, "ok"), out[-3000:]
    leaf = sluice_leaf(out)
    assert support.x509_name(leaf, "issuer") == support.x509_name(gw.ca_pem, "subject")
    assert support.x509_name(leaf, "issuer") != "CN=sluice-test-root"
    assert support.cert_sha256(leaf) != pki.sha256(cert), "the origin's own cert got through"
    assert support.x509_sans(leaf) >= {"DNS:localhost", "IP:127.0.0.1", "IP:::1"}
    text = support.x509_text(leaf, "-text")
    assert "CA:FALSE" in text
    assert "TLS Web Server Authentication" in text


def test_leaf_for_an_ip_literal_without_sni(gw, good):
    rc, out = s_client("127.0.0.1:%d" % good.port, "-noservername", "-verify_ip", "127.0.0.1",
                       proxy=gw.port, cafile=gw.ca_pem)
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert "IP:127.0.0.1" in support.x509_sans(sluice_leaf(out))


def test_openssl_s_client_through_proxy_fetches_the_page(gw, good):
    rc, out = s_client("localhost:%d" % good.port, proxy=gw.port, servername="localhost",
                       cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert good.marker in out


@pytest.mark.parametrize("size", [1024, 50 * MiB], ids=["1KiB", "50MiB"])
def test_body_arrives_intact(gw, origin, tmp_path, size):
    o = origin("good")
    out = tmp_path / "body"
    r = curl(o.url("/bytes/%d" % size), proxy=gw.port, cacert=gw.ca_pem, out=out,
             timeout=T(60))
    assert r.rc == 0 and r.http_code == 200, r
    assert os.path.getsize(out) == size
    assert support.file_sha256(out) == support.pattern_sha256(size)
    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert "error" not in rec, rec
    # bytes_* count application payload (HTTP), not TLS records: body + headers.
    assert size <= rec["bytes_down"] <= size + 4096, rec
    assert 0 < rec["bytes_up"] <= 4096, rec


def test_upload_arrives_intact(gw, origin, tmp_path):
    o = origin("good")
    data = os.urandom(3 * MiB + 5)
    src = tmp_path / "up"
    src.write_bytes(data)
    out = tmp_path / "echo"
    r = curl(o.url("/echo"), "--data-binary", "@%s" % src, "-H",
             "Content-Type: application/octet-stream", proxy=gw.port, cacert=gw.ca_pem, out=out,
             timeout=T(60))
    assert r.rc == 0 and r.http_code == 200, r
    assert out.read_bytes() == data
    rec = gw.wait_record(client_port_is(r.local_port))
    assert len(data) <= rec["bytes_up"] <= len(data) + 4096, rec
    assert len(data) <= rec["bytes_down"] <= len(data) + 4096, rec


@pytest.mark.parametrize("flags,version", [
    (["--tls-max", "1.2"], "TLSv1.2"),
    (["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
    (["--tlsv1.3"], "TLSv1.3"),
], ids=["tls-max-1.2", "tls-1.2-only", "tls-1.3-only"])
def test_client_tls_version(gw, origin, flags, version):
    o = origin("good")
    r = curl(o.url("/"), *flags, proxy=gw.port, cacert=gw.ca_pem, verbose=True)
    assert r.rc == 0 and o.marker in r.text, r
    assert r.tls_version() == version, r.stderr[-2000:]
    rec = gw.wait_record(client_port_is(r.local_port))
    assert rec["client_tls"]["version"] == version, rec
    if version == "TLSv1.3":
        assert rec["client_tls"]["cipher"].startswith("TLS_"), rec


def test_client_leg_never_above_upstream(gw, origin):
    o = origin("good", tls_max="1.2")
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem, verbose=True)
    assert r.rc == 0 and o.marker in r.text, r
    assert r.tls_version() == "TLSv1.2", r.stderr[-2000:]
    rec = gw.wait_record(client_port_is(r.local_port))
    assert rec["upstream_tls"]["version"] == "TLSv1.2", rec
    assert rec["client_tls"]["version"] == "TLSv1.2", rec


def test_client_below_tls12_is_refused(gw, origin):
    o = origin("good")
    rc, out = s_client("localhost:%d" % o.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0",
                       proxy=gw.port, servername="localhost", cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert not handshake_done(out), out[-3000:]
    assert o.marker not in out
    gw.assert_alive()


def test_conn_log_record_for_an_intercepted_request(gw, origin, pki):
    o = origin("good")
    before = datetime.datetime.now(datetime.timezone.utc)
    r = curl(o.url("/bytes/2000"), "--http1.1", proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and r.http_code == 200, r
    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert rec["client"] == "127.0.0.1:%d" % r.local_port
    assert rec["dst"] in ("127.0.0.1:%d" % o.port, "[::1]:%d" % o.port), rec
    assert rec["sni"] == "localhost"
    assert rec["mode"] == "explicit"
    assert rec["action"] == "intercept"
    assert rec["alpn"] == "http/1.1"
    assert rec["client_tls"]["version"] == "TLSv1.3"
    assert rec["upstream_tls"]["version"] == "TLSv1.3"
    cert = rec["upstream_cert"]
    assert cert["sha256"] == pki.sha256("good")
    assert "localhost" in cert["subject"] and "sluice-test-root" in cert["issuer"], cert
    not_after = datetime.datetime.strptime(
        support.x509_text(pki.cert("good"), "-enddate").split("=", 1)[1].strip(),
        "%b %d %H:%M:%S %Y GMT").replace(tzinfo=datetime.timezone.utc)
    assert support.parse_ts(cert["not_after"]) == not_after, cert
    assert rec["verify"] == {"ok": True, "error": None}
    assert "error" not in rec, rec
    assert 2000 <= rec["bytes_down"] <= 2000 + 4096
    ts = support.parse_ts(rec["ts"])
    after = datetime.datetime.now(datetime.timezone.utc)
    assert before - datetime.timedelta(seconds=2) <= ts <= after + datetime.timedelta(seconds=2)
    assert rec["duration_ms"] <= (after - before).total_seconds() * 1000 + 1000
    ids = [x["id"] for x in gw.records()]
    assert len(ids) == len(set(ids)), "ids must be unique: %s" % ids


def test_request_by_ip_literal_has_no_sni(gw, good):
    r = curl("https://127.0.0.1:%d/" % good.port, proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and good.marker in r.text, r
    rec = gw.wait_record(client_port_is(r.local_port))
    assert rec["sni"] is None and rec["dst"] == "127.0.0.1:%d" % good.port, rec


def test_ipv6_destination(gw, good):
    if not support.ipv6_loopback_ok():
        pytest.skip("no IPv6 loopback")
    r = curl("https://[::1]:%d/" % good.port, proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and good.marker in r.text, r
    rec = gw.wait_record(client_port_is(r.local_port))
    assert rec["dst"] == "[::1]:%d" % good.port, rec


def test_keep_alive_requests_share_one_connection(gw, origin):
    o = origin("good")
    r = curl(o.url("/"), "-v", o.url("/bytes/100"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0, r
    assert r.body.count(o.marker.encode()) == 1
    assert "Re-using existing connection" in r.stderr, r.stderr[-2000:]
    gw.wait_records(1, pred=dst_port_is(o.port))
    time.sleep(0.3)
    assert len([x for x in gw.records() if dst_port_is(o.port)(x)]) == 1


def test_request_headers_reach_the_origin(gw, good):
    r = curl(good.url("/headers"), "-H", "X-Sluice-Test: through", proxy=gw.port,
             cacert=gw.ca_pem)
    assert r.rc == 0, r
    assert "X-Sluice-Test: through" in r.text
    assert re.search(r"(?im)^Host: localhost:%d" % good.port, r.text), r.text


def test_alpn_offer_is_mirrored_upstream(gw, origin):
    """The origin prefers h2: it only answers http/1.1 when that is all sluice offered, so a
    client offering http/1.1 alone proves the client's offer went upstream unchanged."""
    o = origin("good", alpn="h2,http/1.1")
    r = curl(o.url("/info"), "--http1.1", proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0, r
    info = json.loads(r.body)
    assert info["alpn"] == "http/1.1", info
    assert info["sni"] == "localhost", info
    rc, out = s_client("localhost:%d" % o.port, "-alpn", "h2,http/1.1", proxy=gw.port,
                       servername="localhost", cafile=gw.ca_pem)
    assert "ALPN protocol: h2" in out, out[-2000:]


def test_alpn_none_when_the_origin_chooses_none(gw, origin):
    o = origin("good", alpn=None)
    rc, out = s_client("localhost:%d" % o.port, "-alpn", "h2,http/1.1", proxy=gw.port,
                       servername="localhost", cafile=gw.ca_pem)
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert "No ALPN negotiated" in out, out[-2000:]
    rec = gw.wait_record(dst_port_is(o.port))
    assert rec["alpn"] is None, rec


def test_concurrent_clients(gw, origin):
    o = origin("good")
    size = 300 * 1024

    def one(i):
        return curl(o.url("/bytes/%d" % size), proxy=gw.port, cacert=gw.ca_pem, timeout=T(30))

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        results = list(ex.map(one, range(12)))
    want = support.pattern_sha256(size)
    for r in results:
        assert r.rc == 0 and hashlib.sha256(r.body).hexdigest() == want, r
    gw.wait_records(12, pred=dst_port_is(o.port))


def test_two_workers(sluice, origin):
    gw2 = sluice(workers=2)
    o = origin("good")

    def one(i):
        return curl(o.url("/bytes/65536"), proxy=gw2.port, cacert=gw2.ca_pem)

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        results = list(ex.map(one, range(12)))
    for r in results:
        assert r.rc == 0 and hashlib.sha256(r.body).hexdigest() == support.pattern_sha256(65536), r
    recs = gw2.wait_records(12, pred=dst_port_is(o.port))
    assert len({x["id"] for x in recs}) == 12


def test_client_hello_larger_than_16k_over_several_records(gw, good):
    """Post-quantum-sized hellos: a ClientHello of more than 16 KiB (a long ALPN list) spans
    two TLS records and many TCP segments; sluice reads all of it before deciding."""
    protos = ["x%03d" % i + "-" * 240 for i in range(70)] + ["http/1.1"]
    alpn = ",".join(protos)
    assert len(alpn) > 16384
    rc, out = s_client("localhost:%d" % good.port, "-alpn", alpn, proxy=gw.port,
                       servername="localhost", cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert good.marker in out, out[-3000:]
    rec = gw.wait_record(dst_port_is(good.port))
    assert rec["action"] == "intercept" and "error" not in rec, rec.get("error")
