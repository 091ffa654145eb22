"""Upstream verification: a bad origin's content never reaches the client; the client is told
why (502 page over a leaf naming only the requested name, or an alert); the log says why."""
import re

import pytest

import support
from support import curl, s_client, verify_code, handshake_done, client_port_is, dst_port_is

# case: (origin cert, origin options, regex for OpenSSL's verify message; None = not a
# verification error but a failed handshake)
CASES = {
    "expired": ("expired", {}, r"certificate has expired"),
    "not-yet-valid": ("notyet", {}, r"certificate is not yet valid"),
    "wrong-host": ("wronghost", {}, r"hostname mismatch"),
    "self-signed": ("selfsigned", {}, r"self[- ]signed certificate"),
    "untrusted-root": ("untrusted", {}, r"unable to get local issuer certificate"),
    "rsa-1024": ("rsa1024", {}, r"EE certificate key too weak"),
    "sha1": ("sha1", {}, r"CA signature digest algorithm too weak"),
    "tls1.0-only": ("good", {"tls_max": "1.0"}, None),
}
# What a page / log reason for the failed handshake with a TLS 1.0-only origin may say. The
# exact OpenSSL error depends on sluice's minimum version setting: "unsupported protocol" when
# TLS 1.2 is the configured minimum, "legacy sigalg disallowed or unsupported" when only
# Debian's SECLEVEL 2 stops it, or an alert "protocol version" / "handshake failure".
HANDSHAKE_FAILURE = r"protocol|version|handshake|sigalg"


@pytest.fixture(scope="module")
def gw(sluice_mod):
    return sluice_mod()


def bad_origin(origin, case):
    cert, opts, message = CASES[case]
    return origin(cert, **opts), message


def test_control_good_origin_passes(gw, origin):
    o = origin("good")
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and r.http_code == 200 and o.marker in r.text, r


@pytest.mark.parametrize("case", list(CASES))
def test_curl_gets_a_502_page_naming_the_reason(gw, origin, case):
    o, message = bad_origin(origin, case)
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert o.marker not in r.text, "origin content reached the client: %r" % r
    assert r.rc == 0, "curl should trust sluice's error page (rc %d): %r" % (r.rc, r)
    assert r.http_code == 502, r
    assert re.search(message or HANDSHAKE_FAILURE, r.text, re.I), \
        "the 502 page should say %r:\n%s" % (message or HANDSHAKE_FAILURE, r.text)

    rec = gw.wait_record(client_port_is(r.local_port))
    support.check_record_schema(rec)
    assert rec["error"]["stage"] == "upstream_handshake", rec
    if message:
        assert rec["verify"]["ok"] is False, rec
        assert re.search(message, rec["verify"]["error"], re.I), rec
        assert re.search(message, rec["error"]["reason"], re.I), rec
    else:
        assert rec["verify"] is None or rec["verify"]["ok"] is False, rec
        assert re.search(HANDSHAKE_FAILURE, rec["error"]["reason"], re.I), rec


@pytest.mark.parametrize("case", list(CASES))
def test_error_page_leaf_names_only_the_requested_name(gw, origin, case):
    o, _ = bad_origin(origin, case)
    rc, out = s_client("localhost:%d" % o.port, "-alpn", "http/1.1", proxy=gw.port,
                       servername="localhost", cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert o.marker not in out
    assert verify_code(out) == (0, "ok"), out[-3000:]
    leaf = support.pem_blocks(out)[0]
    assert support.x509_name(leaf, "issuer") == support.x509_name(gw.ca_pem, "subject")
    assert support.x509_sans(leaf) == {"DNS:localhost"}, \
        "a leaf for an unverified origin must not vouch for the origin's names"
    assert re.search(r"HTTP/1\.[01] 502", out), out[-3000:]


@pytest.mark.parametrize("case", list(CASES))
def test_client_without_alpn_gets_an_alert(gw, origin, case):
    o, message = bad_origin(origin, case)
    rc, out = s_client("localhost:%d" % o.port, proxy=gw.port, servername="localhost",
                       cafile=gw.ca_pem, ign_eof=True,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert o.marker not in out
    assert not handshake_done(out), "handshake completed without ALPN:\n" + out[-3000:]
    rec = gw.wait_record(dst_port_is(o.port))
    assert rec["error"]["stage"] == "upstream_handshake", rec
    if message:
        assert re.search(message, rec["error"]["reason"], re.I), rec


def test_bad_origin_in_between_good_requests(gw, origin):
    """A failure on one connection does not poison the leaf cache or the gateway."""
    good = origin("good")
    expired = origin("expired")
    for o, code in ((good, 200), (expired, 502), (good, 200), (expired, 502)):
        r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
        assert r.http_code == code, r
        assert (o.marker in r.text) == (code == 200), r
