"""Relay properties: half-close carried across, and backpressure with bounded memory."""
import hashlib
import socket
import ssl
import time

import pytest

import support
from support import T, ProxyTunnel, client_port_is


@pytest.fixture(scope="module")
def gw(sluice_mod):
    return sluice_mod()


def test_half_close_is_carried_across_a_tunnel(gw, origin):
    """The client shuts its write side; the echo server still answers everything it got, then
    closes; the client reads all of it and then the end of stream."""
    echo = origin(kind="tcp-echo")
    t = ProxyTunnel(gw.port, "127.0.0.1:%d" % echo.port, timeout=T(10))
    try:
        assert t.status == "HTTP/1.1 200 Connection established", t.head
        payload = bytes(range(256)) * 4096  # 1 MiB
        t.sock.sendall(payload)
        t.sock.shutdown(socket.SHUT_WR)
        data, closed = t.recv_until_close(T(15))
    finally:
        t.close()
    assert closed, "the end of stream never reached the client"
    assert data == payload, "got %d of %d bytes back after the half-close" % (len(data), len(payload))
    rec = gw.wait_record(client_port_is(t.local_port))
    assert rec["action"] == "tcp" and "error" not in rec, rec
    assert rec["bytes_up"] == len(payload) and rec["bytes_down"] == len(payload), rec


def _vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def test_slow_reader_gets_backpressure_not_buffering(gw, origin):
    """A client that stops reading during a large download: sluice stops reading from the
    origin instead of buffering (its memory stays flat), and every byte still arrives."""
    o = origin("good")
    size = 256 << 20
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=T(10))
    raw.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost\r\n\r\n" % o.port)
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    try:
        s.sendall(b"GET /bytes/%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % size)
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:200]
        before = _vm_rss_kib(gw.proc.pid)
        time.sleep(T(3))  # not reading: socket buffers fill, then the relay must pause
        grown = _vm_rss_kib(gw.proc.pid) - before
        assert grown < 32 * 1024, "sluice grew by %d KiB while the client did not read" % grown
        body = first.split(b"\r\n\r\n", 1)[1]
        h = hashlib.sha256(body)
        n = len(body)
        s.settimeout(T(60))
        while n < size:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
    finally:
        s.close()
    assert n == size, "got %d of %d bytes" % (n, size)
    assert h.hexdigest() == support.pattern_sha256(size)
