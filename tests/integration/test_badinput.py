"""Bad input and bad upstreams: each connection ends with a clear record, and the gateway
keeps serving everyone else."""
import concurrent.futures
import re
import socket
import time

import pytest

import support
from support import T, curl, client_port_is, ProxyTunnel

HANDSHAKE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def gw(sluice_mod):
    return sluice_mod("--handshake-timeout", "%gs" % HANDSHAKE_TIMEOUT, "--connect-timeout", "3s")


@pytest.fixture(scope="module")
def good(origin_mod):
    return origin_mod("good")


def assert_serves(gw, good):
    gw.assert_alive()
    r = curl(good.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and r.http_code == 200 and good.marker in r.text, r


def assert_bad_gateway(r):
    """sluice may refuse the CONNECT itself with 502, or accept it and answer 502 over TLS."""
    assert 502 in (r.connect_code, r.http_code), r


def raw_connect(port, timeout=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout or T(10))
    return s, s.getsockname()[1]


def read_until_close(sock, timeout):
    """(data, closed, seconds waited)."""
    t0 = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - t0 < timeout:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return data, True, time.monotonic() - t0
        if not chunk:
            return data, True, time.monotonic() - t0
        data += chunk
    return data, False, time.monotonic() - t0


def test_malformed_client_hello_after_connect(gw, good):
    t = ProxyTunnel(gw.port, "localhost:%d" % good.port)
    try:
        assert t.status.startswith("HTTP/1.1 200"), t.head
        # A handshake record holding a "ClientHello" whose body is nonsense.
        t.sock.sendall(b"\x16\x03\x01\x00\x30" + b"\x01\x00\x00\x2c" + b"\xff" * 44)
        data, closed = t.recv_until_close(T(5))
    finally:
        t.close()
    assert closed, "sluice kept a connection open after a malformed ClientHello"
    assert good.marker.encode() not in data
    rec = gw.wait_record(client_port_is(t.local_port))
    support.check_record_schema(rec)
    assert rec["error"]["stage"] in ("client_hello", "client_handshake"), rec
    assert_serves(gw, good)


def test_non_tls_bytes_to_a_tls_origin_are_relayed_as_tcp(gw, good):
    garbage = b"\x00this is not TLS\r\n"
    t = ProxyTunnel(gw.port, "localhost:%d" % good.port)
    try:
        assert t.status.startswith("HTTP/1.1 200"), t.head
        t.sock.sendall(garbage)
        data, closed = t.recv_until_close(T(8))
    finally:
        t.close()
    assert closed, "the origin rejects the bytes and closes; sluice should close too"
    rec = gw.wait_record(client_port_is(t.local_port))
    assert rec["action"] == "tcp" and rec["bytes_up"] == len(garbage), rec
    assert_serves(gw, good)


@pytest.mark.parametrize("request_bytes", [
    b"BLAH BLAH BLAH\r\n\r\n",
    b"CONNECT\r\n\r\n",
    b"CONNECT localhost:99999 HTTP/1.1\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
], ids=["nonsense", "connect-without-target", "bad-port", "tls-instead-of-http"])
def test_bad_proxy_request(gw, good, request_bytes):
    s, lport = raw_connect(gw.port)
    try:
        s.sendall(request_bytes)
        data, closed, _ = read_until_close(s, T(5))
    finally:
        s.close()
    assert not re.match(rb"HTTP/1\.[01] 2", data), data
    assert closed, "connection left open after a bad proxy request: %r" % data
    rec = gw.wait_record(client_port_is(lport))
    support.check_record_schema(rec)
    assert rec["error"]["stage"] == "proxy_request", rec
    assert_serves(gw, good)


def test_stalled_client_hello_closed_at_handshake_timeout(gw, good):
    partial = support.client_hello_bytes("localhost")[:60]
    t0 = time.monotonic()
    t = ProxyTunnel(gw.port, "localhost:%d" % good.port)
    try:
        assert t.status.startswith("HTTP/1.1 200"), t.head
        t.sock.sendall(partial)
        # While this client stalls, others are served.
        assert_serves(gw, good)
        data, closed = t.recv_until_close(HANDSHAKE_TIMEOUT + T(6))
        elapsed = time.monotonic() - t0
    finally:
        t.close()
    assert closed, "stalled handshake not closed"
    assert elapsed >= HANDSHAKE_TIMEOUT * 0.75, "closed after %.2fs, before the timeout" % elapsed
    rec = gw.wait_record(client_port_is(t.local_port))
    assert rec["error"]["stage"] in ("client_hello", "client_handshake"), rec
    assert "timeout" in rec["error"]["reason"].lower(), rec
    assert_serves(gw, good)


def test_stalled_proxy_request_closed_at_handshake_timeout(gw, good):
    s, lport = raw_connect(gw.port)
    t0 = time.monotonic()
    try:
        s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: local" % good.port)
        data, closed, _ = read_until_close(s, HANDSHAKE_TIMEOUT + T(6))
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert closed, "a half-sent proxy request kept the connection open"
    assert elapsed >= HANDSHAKE_TIMEOUT * 0.75, elapsed
    rec = gw.wait_record(client_port_is(lport))
    assert rec["error"]["stage"] == "proxy_request", rec
    assert "timeout" in rec["error"]["reason"].lower(), rec


def test_upstream_connection_refused(gw, good):
    port = support.free_port()
    r = curl("https://localhost:%d/" % port, proxy=gw.port, cacert=gw.ca_pem)
    assert_bad_gateway(r)
    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert rec["error"]["stage"] == "connect", rec
    assert "refused" in rec["error"]["reason"].lower(), rec
    assert_serves(gw, good)


def test_unknown_host(gw, good):
    t0 = time.monotonic()
    r = curl("https://nonexistent.invalid/", proxy=gw.port, cacert=gw.ca_pem, timeout=T(20))
    elapsed = time.monotonic() - t0
    assert_bad_gateway(r)
    assert elapsed < 3 + T(4), "connect timeout of 3s not applied to DNS (%.1fs)" % elapsed
    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert rec["error"]["stage"] == "dns", rec
    assert rec["sni"] in (None, "nonexistent.invalid"), rec
    assert_serves(gw, good)


def test_upstream_connect_timeout(gw, good):
    port, held = support.wedge_port()
    try:
        t0 = time.monotonic()
        r = curl("https://127.0.0.1:%d/" % port, proxy=gw.port, cacert=gw.ca_pem, timeout=T(20))
        elapsed = time.monotonic() - t0
    finally:
        for s in held:
            s.close()
    assert_bad_gateway(r)
    assert 2.5 <= elapsed <= 3 + T(5), "connect timeout is 3s; took %.1fs" % elapsed
    rec = gw.wait_record(client_port_is(r.local_port))
    assert rec["error"]["stage"] == "connect", rec
    assert "timeout" in rec["error"]["reason"].lower(), rec
    assert_serves(gw, good)


def test_client_aborts_mid_transfer(gw, origin, good):
    o = origin("good")
    total = 20 * 1024 * 1024
    r = curl(o.url("/slow/%d?chunk=65536&delay=0.05" % total), "--max-time", "1.5",
             proxy=gw.port, cacert=gw.ca_pem, timeout=T(20))
    assert r.rc == 28, r  # curl: operation timed out
    rec = gw.wait_record(client_port_is(r.local_port), timeout=T(15))
    support.check_record_schema(rec)
    assert 0 < rec["bytes_down"] < total, rec
    assert_serves(gw, good)


def test_burst_of_abandoned_connections(gw, good):

    def abandon(i):
        s, _ = raw_connect(gw.port)
        if i % 3 == 1:
            s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % good.port)
        elif i % 3 == 2:
            s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\n\r\n" % good.port)
            s.recv(100)
            s.sendall(support.client_hello_bytes("localhost")[:30])
        s.close()

    with concurrent.futures.ThreadPoolExecutor(6) as ex:
        list(ex.map(abandon, range(60)))
    assert_serves(gw, good)
    gw.wait_records(61)


def test_idle_tunnel_closed_at_idle_timeout(sluice, origin):
    gw = sluice("--idle-timeout", "1s")
    echo = origin(kind="tcp-echo")
    t = ProxyTunnel(gw.port, "127.0.0.1:%d" % echo.port)
    try:
        t.sock.sendall(b"ping\n")
        assert t.recv_exact(5, T(5)) == b"ping\n"
        t0 = time.monotonic()
        data, closed = t.recv_until_close(T(8))
        elapsed = time.monotonic() - t0
    finally:
        t.close()
    assert closed and data == b"", data
    assert 0.7 <= elapsed <= 1 + T(4), elapsed
    rec = gw.wait_record(client_port_is(t.local_port))
    assert rec["error"]["stage"] == "relay" and "timeout" in rec["error"]["reason"].lower(), rec
