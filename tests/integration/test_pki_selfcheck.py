"""Self-checks of the test fixtures (PKI, origins, namespaces) without the gateway.

If these fail, a gateway test failing would prove nothing: each bad origin must be bad for
exactly the documented reason, and good for a client that tolerates that one defect.
"""
import json
import re
import socket
import time

import pytest

import support
from support import T, curl, s_client, verify_code, handshake_done

# origin cert -> OpenSSL's verify message for it (what sluice must report)
BAD_CERTS = {
    "expired": "certificate has expired",
    "notyet": "certificate is not yet valid",
    "wronghost": "hostname mismatch",
    "selfsigned": "self-signed certificate",
    "untrusted": "unable to get local issuer certificate",
    "rsa1024": "EE certificate key too weak",
    "sha1": "CA signature digest algorithm too weak",
}


def test_root_is_an_ec_p256_ca(pki):
    text = support.x509_text(pki.root, "-text")
    assert "CN = sluice-test-root" in text or "CN=sluice-test-root" in text
    assert "CA:TRUE" in text
    assert "prime256v1" in text or "P-256" in text
    assert support.x509_name(pki.root, "subject") == support.x509_name(pki.root, "issuer")


def test_leaves_have_the_intended_defects(pki):
    assert support.x509_sans(pki.cert("good")) == {"DNS:localhost", "IP:127.0.0.1", "IP:::1"}
    assert support.x509_sans(pki.cert("good_rsa")) == support.x509_sans(pki.cert("good"))
    assert support.x509_sans(pki.cert("wronghost")) == {"DNS:wrong.example"}
    assert "Public-Key: (2048 bit)" in support.x509_text(pki.cert("good_rsa"), "-text")
    assert "Public-Key: (1024 bit)" in support.x509_text(pki.cert("rsa1024"), "-text")
    sha1_text = support.x509_text(pki.cert("sha1"), "-text")
    assert re.search(r"Signature Algorithm: ecdsa-with-SHA1", sha1_text), sha1_text
    assert "Public-Key: (2048 bit)" in sha1_text
    assert "2021 GMT" in support.x509_text(pki.cert("expired"), "-enddate")
    assert "2090 GMT" in support.x509_text(pki.cert("notyet"), "-startdate")
    assert support.x509_name(pki.cert("untrusted"), "issuer") == "CN=sluice-test-untrusted-root"
    ss = pki.cert("selfsigned")
    assert support.x509_name(ss, "issuer") == support.x509_name(ss, "subject") == "CN=localhost"
    for name in ("good", "expired", "notyet", "rsa1024", "sha1"):
        assert support.x509_name(pki.cert(name), "issuer") == "CN=sluice-test-root", name
    assert len({pki.sha256(n) for n in support.LEAVES}) == len(support.LEAVES)


def test_good_origin_serves_every_route(origin, pki, tmp_path):
    o = origin("good")
    r = curl(o.url("/"), cacert=pki.root)
    assert r.rc == 0 and r.http_code == 200, r
    assert r.text == "hello from origin\n%s\n" % o.marker
    r = curl(o.url("/bytes/1024"), cacert=pki.root)
    assert support.hashlib.sha256(r.body).hexdigest() == support.pattern_sha256(1024)
    out = tmp_path / "big"
    n = 5 * 1024 * 1024 + 17
    r = curl(o.url("/bytes/%d" % n), cacert=pki.root, out=out)
    assert r.rc == 0, r
    assert support.file_sha256(out) == support.pattern_sha256(n)
    r = curl(o.url("/slow/100000?chunk=7000&delay=0.01"), cacert=pki.root)
    assert support.hashlib.sha256(r.body).hexdigest() == support.pattern_sha256(100000)
    r = curl(o.url("/echo"), "--data-binary", "posted body \x01", cacert=pki.root)
    assert r.body == b"posted body \x01"
    r = curl(o.url("/headers"), "-H", "X-Sluice-Test: yes", cacert=pki.root)
    assert "X-Sluice-Test: yes" in r.text
    r = curl(o.url("/info"), "--http1.1", cacert=pki.root)
    info = json.loads(r.body)
    assert info["alpn"] == "http/1.1" and info["sni"] == "localhost", info
    assert info["tls_version"] == "TLSv1.3"
    # keep-alive: two requests on one connection
    r = curl(o.url("/"), "-v", o.url("/bytes/10"), cacert=pki.root)
    assert "Re-using existing connection" in r.stderr, r.stderr


def test_good_origin_over_ipv6(origin, pki):
    if not support.ipv6_loopback_ok():
        pytest.skip("no IPv6 loopback")
    o = origin("good")
    r = curl("https://[::1]:%d/" % o.port, cacert=pki.root)
    assert r.rc == 0 and o.marker in r.text, r


def test_good_rsa_origin(origin, pki):
    o = origin("good_rsa")
    rc, out = s_client("127.0.0.1:%d" % o.port, servername="localhost", cafile=pki.root)
    assert verify_code(out) == (0, "ok"), out


@pytest.mark.parametrize("cert,message", sorted(BAD_CERTS.items()))
def test_bad_origin_fails_for_its_reason(origin, pki, cert, message):
    o = origin(cert)
    rc, out = s_client("127.0.0.1:%d" % o.port, "-verify_hostname", "localhost",
                       "-verify_return_error",
                       servername="localhost", cafile=pki.root)
    code = verify_code(out)
    assert code and code[0] != 0, out
    assert message.lower() in code[1].lower(), (message, code, out[-2000:])
    r = curl(o.url("/"), cacert=pki.root)
    assert r.rc in (35, 51, 58, 60), r
    assert o.marker not in r.text


@pytest.mark.parametrize("cert,relax", [
    ("untrusted", ["-CAfile", "OTHER_ROOT"]),
    ("rsa1024", ["-cipher", "DEFAULT:@SECLEVEL=0"]),
    ("sha1", ["-cipher", "DEFAULT:@SECLEVEL=0"]),
    ("wronghost", []),
])
def test_bad_origin_is_fine_apart_from_its_defect(origin, pki, cert, relax):
    o = origin(cert)
    relax = [str(pki.other_root) if a == "OTHER_ROOT" else a for a in relax]
    cafile = None if "-CAfile" in relax else pki.root
    rc, out = s_client("127.0.0.1:%d" % o.port, *relax, servername="localhost", cafile=cafile,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       ign_eof=True)
    assert verify_code(out) == (0, "ok"), out[-3000:]
    assert o.marker in out


def test_tls10_origin_speaks_only_tls10(origin, pki):
    o = origin("good", tls_max="1.0")
    rc, out = s_client("127.0.0.1:%d" % o.port, servername="localhost", cafile=pki.root)
    assert not handshake_done(out), out
    r = curl(o.url("/"), cacert=pki.root)
    assert r.rc == 35 and o.marker not in r.text, r
    rc, out = s_client("127.0.0.1:%d" % o.port, "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0",
                       servername="localhost", cafile=pki.root,
                       data=b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                       ign_eof=True)
    assert re.search(r"Protocol\s*: TLSv1\n", out), out[-3000:]
    assert o.marker in out


def test_tls12_max_origin(origin, pki):
    o = origin("good", tls_max="1.2")
    r = curl(o.url("/"), cacert=pki.root, verbose=True)
    assert r.rc == 0 and r.tls_version() == "TLSv1.2", r


def test_alpn_choice_of_origin(origin, pki):
    o = origin("good", alpn="h2,http/1.1")
    rc, out = s_client("127.0.0.1:%d" % o.port, "-alpn", "h2,http/1.1", servername="localhost",
                       cafile=pki.root)
    assert "ALPN protocol: h2" in out, out
    rc, out = s_client("127.0.0.1:%d" % o.port, "-alpn", "http/1.1", servername="localhost",
                       cafile=pki.root)
    assert "ALPN protocol: http/1.1" in out, out
    o2 = origin("good", alpn=None)
    rc, out = s_client("127.0.0.1:%d" % o2.port, "-alpn", "h2,http/1.1", servername="localhost",
                       cafile=pki.root)
    assert "No ALPN negotiated" in out, out


def test_plain_http_origin(origin):
    o = origin(kind="http")
    r = curl("http://127.0.0.1:%d/" % o.port)
    assert r.http_code == 200 and o.marker in r.text, r


def test_tcp_echo_and_banner_servers(origin):
    echo = origin(kind="tcp-echo")
    with socket.create_connection(("127.0.0.1", echo.port), timeout=T(5)) as s:
        s.sendall(b"ping\x00\xff")
        assert s.recv(100) == b"ping\x00\xff"
    banner = origin(kind="banner")
    with socket.create_connection(("127.0.0.1", banner.port), timeout=T(5)) as s:
        f = s.makefile("rb")
        assert f.readline() == ("220 %s banner ready\r\n" % banner.marker).encode()
        s.sendall(b"HELO x\r\nQUIT\r\n")
        assert f.readline() == b"250 echo HELO x\r\n"
        assert f.readline() == b"221 bye\r\n"


def test_wedged_port_times_out_connects():
    port, held = support.wedge_port()
    try:
        c = socket.socket()
        c.settimeout(1.0)
        t0 = time.monotonic()
        with pytest.raises(socket.timeout):
            c.connect(("127.0.0.1", port))
        assert time.monotonic() - t0 >= 0.9
        c.close()
    finally:
        for s in held:
            s.close()


def test_client_hello_bytes():
    hello = support.client_hello_bytes("localhost")
    assert hello[0] == 0x16 and hello[1] == 0x03 and hello[5] == 0x01
    assert b"localhost" in hello


def test_netns_redirect_plumbing(netns_pair, origin, pki):
    """The transparent-mode topology with the origin in place of sluice: traffic from the
    client namespace to gw:443 is redirected to a local port in the gw namespace, and
    SO_ORIGINAL_DST is what the gateway will read."""
    ns = netns_pair
    o = origin("good", hosts=("0.0.0.0",), netns=ns.gw)
    ns.redirect(443, o.port)
    r = curl("https://localhost/", "--resolve", "localhost:443:%s" % ns.gw_addr,
             cacert=pki.root, netns=ns.cli)
    assert r.rc == 0 and o.marker in r.text, r
