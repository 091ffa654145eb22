"""The three ways to learn the destination (explicit, fixed, transparent), plain-HTTP
forwarding, and TCP tunnels (non-TLS bytes, server-speaks-first protocols)."""
import json
import os
import time

import pytest

import support
from support import T, curl, s_client, verify_code, client_port_is, dst_port_is, ProxyTunnel


@pytest.fixture(scope="module")
def gw(sluice_mod):
    # A short first-byte timeout keeps the server-speaks-first test quick.
    return sluice_mod("--first-byte-timeout", "500ms")


# --- fixed ----------------------------------------------------------------------------------

def test_fixed_mode_with_sni(sluice, origin):
    o = origin("good")
    gw = sluice(mode="fixed:127.0.0.1:%d" % o.port)
    r = curl("https://localhost:%d/info" % gw.port, "--resolve",
             "localhost:%d:127.0.0.1" % gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and r.http_code == 200, r
    info = json.loads(r.body)
    assert info["marker"] == o.marker and info["sni"] == "localhost", info
    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert rec["mode"] == "fixed" and rec["action"] == "intercept", rec
    assert rec["sni"] == "localhost" and rec["dst"] == "127.0.0.1:%d" % o.port, rec
    assert rec["verify"]["ok"] is True and "error" not in rec, rec


def test_fixed_mode_without_sni_names_the_fixed_host(sluice, origin):
    o = origin("good")
    gw = sluice(mode="fixed:localhost:%d" % o.port)
    rc, out = s_client("127.0.0.1:%d" % gw.port, "-noservername", "-verify_hostname",
                       "localhost", cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET /info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert '"sni": "localhost"' in out, "sluice should send the fixed HOST as SNI:\n" + out[-2000:]
    assert "DNS:localhost" in support.x509_sans(support.pem_blocks(out)[0])
    rec = gw.wait_record(dst_port_is(o.port))
    assert rec["mode"] == "fixed" and rec["sni"] is None, rec


def test_fixed_mode_to_an_ip_without_sni(sluice, origin):
    o = origin("good")
    gw = sluice(mode="fixed:127.0.0.1:%d" % o.port)
    rc, out = s_client("127.0.0.1:%d" % gw.port, "-noservername", "-verify_ip", "127.0.0.1",
                       cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert o.marker in out
    assert "IP:127.0.0.1" in support.x509_sans(support.pem_blocks(out)[0])


def test_fixed_mode_bad_origin(sluice, origin):
    o = origin("expired")
    gw = sluice(mode="fixed:127.0.0.1:%d" % o.port)
    r = curl("https://localhost:%d/" % gw.port, "--resolve", "localhost:%d:127.0.0.1" % gw.port,
             cacert=gw.ca_pem)
    assert o.marker not in r.text
    assert r.http_code == 502 and "certificate has expired" in r.text.lower(), r
    rec = gw.wait_record(client_port_is(r.local_port))
    assert rec["error"]["stage"] == "upstream_handshake", rec


# --- transparent ----------------------------------------------------------------------------

def test_transparent_mode(netns_pair, origin, sluice, pki):
    ns = netns_pair
    o = origin("good", hosts=(ns.gw_addr,), port=443, netns=ns.gw)
    gw = sluice(mode="transparent", netns=ns.gw, listen_host="0.0.0.0")
    ns.redirect(443, gw.port)
    resolve = ["--resolve", "localhost:443:%s" % ns.gw_addr]
    r = curl("https://localhost/", *resolve, cacert=gw.ca_pem, netns=ns.cli)
    assert r.rc == 0 and r.http_code == 200 and o.marker in r.text, r
    rec = gw.wait_record(client_port_is(r.local_port))
    # The client really talked to sluice: the root it trusted is sluice's, not the origin's.
    r2 = curl("https://localhost/", *resolve, cacert=pki.root, netns=ns.cli)
    assert r2.rc == 60 and o.marker not in r2.text, r2
    support.check_record_schema(rec)
    assert rec["mode"] == "transparent" and rec["action"] == "intercept", rec
    assert rec["dst"] == "%s:443" % ns.gw_addr, rec
    assert rec["client"] == "%s:%d" % (ns.cli_addr, r.local_port), rec
    assert rec["sni"] == "localhost", rec
    assert rec["verify"]["ok"] is True, rec


# --- plain HTTP through the explicit proxy --------------------------------------------------

def test_plain_http_is_forwarded(gw, origin):
    o = origin(kind="http")
    r = curl("http://127.0.0.1:%d/headers" % o.port, "-H", "X-Sluice-Plain: 1", proxy=gw.port)
    assert r.rc == 0 and r.http_code == 200, r
    assert "X-Sluice-Plain: 1" in r.text and "hello" not in r.text
    gw.wait_records(1)
    gw.mark()
    r = curl("http://127.0.0.1:%d/" % o.port, proxy=gw.port)
    assert r.http_code == 200 and o.marker in r.text, r
    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert rec["action"] == "http" and rec["mode"] == "explicit", rec
    assert rec["dst"] == "127.0.0.1:%d" % o.port, rec
    assert rec["client_tls"] is None and rec["upstream_tls"] is None and rec["verify"] is None
    assert rec["bytes_down"] >= len(r.body)


def test_plain_http_post_is_forwarded(gw, origin, tmp_path):
    o = origin(kind="http")
    data = os.urandom(256 * 1024)
    (tmp_path / "up").write_bytes(data)
    r = curl("http://127.0.0.1:%d/echo" % o.port, "--data-binary", "@%s" % (tmp_path / "up"),
             proxy=gw.port, out=tmp_path / "down")
    assert r.rc == 0 and r.http_code == 200, r
    assert (tmp_path / "down").read_bytes() == data


# --- TCP tunnels ------------------------------------------------------------------------------

def test_non_tls_tunnel_relays_bytes(gw, origin):
    echo = origin(kind="tcp-echo")
    t = ProxyTunnel(gw.port, "127.0.0.1:%d" % echo.port, timeout=T(10))
    try:
        assert t.status == "HTTP/1.1 200 Connection established", t.head
        total = 0
        for i in range(20):
            chunk = (b"line %d of plain bytes\n" % i) * 300
            t.sock.sendall(chunk)
            assert t.recv_exact(len(chunk), T(10)) == chunk
            total += len(chunk)
    finally:
        t.close()
    rec = gw.wait_record(client_port_is(t.local_port))
    support.check_record_schema(rec)
    assert rec["action"] == "tcp", rec
    assert rec["client_tls"] is None and rec["upstream_tls"] is None and rec["verify"] is None
    assert rec["bytes_up"] == total and rec["bytes_down"] == total, rec


def test_server_speaks_first_through_connect(gw, origin):
    banner = origin(kind="banner")
    t0 = time.monotonic()
    t = ProxyTunnel(gw.port, "127.0.0.1:%d" % banner.port, timeout=T(10))
    try:
        assert t.status == "HTTP/1.1 200 Connection established", t.head
        line = t.recv_line(T(5))
        waited = time.monotonic() - t0
        assert line == ("220 %s banner ready\r\n" % banner.marker).encode(), line
        assert waited >= 0.4, "relayed before the first-byte timeout (%.2fs)" % waited
        t.sock.sendall(b"HELO sluice\r\n")
        assert t.recv_line(T(5)) == b"250 echo HELO sluice\r\n"
        t.sock.sendall(b"QUIT\r\n")
        assert t.recv_line(T(5)) == b"221 bye\r\n"
    finally:
        t.close()
    rec = gw.wait_record(client_port_is(t.local_port))
    assert rec["action"] == "tcp" and rec["dst"] == "127.0.0.1:%d" % banner.port, rec
