"""Session resumption on both legs: every connection after the first resumes, toward the
client (sluice's tickets) and toward the origin (sluice's upstream session cache).

A TLS 1.3 client uses each ticket once (OpenSSL and browsers do; RFC 8446 C.4), so a
connection can resume only if the one before it brought a fresh ticket. These tests check
that explicitly: every resumed connection must hand the client a ticket it did not offer.
"""
import concurrent.futures
import ssl

import pytest

from support import ProxyTunnel, T

REQUEST = b"GET /info HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


@pytest.fixture
def gw(sluice):
    return sluice()


@pytest.fixture
def good(origin):
    return origin("good")


def client_ctx(gw, tls_max=None):
    ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
    if tls_max:
        ctx.maximum_version = tls_max
    return ctx


def fetch(gw, o, ctx=None, session=None):
    """One connection through the proxy: handshake (offering session, which must come from
    ctx), GET /info, read to the end, which the origin marks by closing without close_notify.
    Returns (resumed, the session the connection ended with, response bytes)."""
    t = ProxyTunnel(gw.port, "localhost:%d" % o.port, timeout=T(10))
    assert t.status.startswith("HTTP/1.1 200"), t.status
    s = (ctx or client_ctx(gw)).wrap_socket(t.sock, server_hostname="localhost", session=session)
    try:
        s.sendall(REQUEST)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        return s.session_reused, s.session, data
    finally:
        s.close()


def by_id(recs):
    return sorted(recs, key=lambda r: r["id"])


@pytest.mark.parametrize("version", ["TLSv1.3", "TLSv1.2"])
def test_every_connection_after_the_first_resumes_on_both_legs(gw, good, version):
    tls_max = ssl.TLSVersion.TLSv1_3 if version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    n = 6
    ctx, session, resumed = client_ctx(gw, tls_max), None, []
    for i in range(n):
        reused, new, _ = fetch(gw, good, ctx, session)
        resumed.append(reused)
        if reused and version == "TLSv1.3":
            # A fresh ticket, not the one offered: else the next connection could not resume.
            assert new.id != session.id, "connection %d resumed but got no new ticket" % i
        session = new
    assert resumed == [False] + [True] * (n - 1), resumed
    recs = by_id(gw.wait_records(n))
    assert [r["client_tls"]["resumed"] for r in recs] == [False] + [True] * (n - 1)
    assert all(r["client_tls"]["version"] == version for r in recs)
    # Toward the origin (TLS 1.3 here: the client's version caps only the client leg).
    assert [r["upstream_tls"]["resumed"] for r in recs] == [False] + [True] * (n - 1), recs
    assert all(r["verify"] == {"ok": True, "error": None} for r in recs)
    assert all(r["upstream_cert"] is not None for r in recs), "resumed: no upstream_cert"


def test_a_client_without_a_session_still_gets_a_resumed_upstream(gw, good):
    n = 5
    for _ in range(n):
        reused, _, _ = fetch(gw, good)
        assert not reused
    recs = by_id(gw.wait_records(n))
    assert [r["upstream_tls"]["resumed"] for r in recs] == [False] + [True] * (n - 1)


def test_connections_opened_together_each_resume_upstream(gw, good):
    """TLS 1.3 tickets are used once: four connections at the same time need four tickets.
    The origin (OpenSSL) sends two after a full handshake and one after each resumed one; the
    cache keeps up to four per origin, so after a warm-up every connection of a burst of four
    resumes rather than every one after the first one that took the only ticket."""
    def burst():
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda _: fetch(gw, good), range(4)))

    fetch(gw, good)
    burst()
    burst()
    # A record is written when sluice closes its side, which can come after the client saw
    # the end of the response: mark only once the 9 earlier connections are all logged, or a
    # late one of them would be counted with the burst.
    gw.wait_records(9)
    since = gw.mark()
    burst()
    recs = gw.wait_records(4, since=since)
    assert [r["upstream_tls"]["resumed"] for r in recs] == [True] * 4, recs

