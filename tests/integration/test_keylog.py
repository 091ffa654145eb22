"""--keylog: NSS key-log lines for both legs (TLS 1.2 and 1.3), off by default, warned about."""
import os
import re
import stat
import time

from support import T, curl


def key_lines(path):
    deadline = time.monotonic() + T(5)
    while time.monotonic() < deadline:
        text = path.read_text() if path.exists() else ""
        if text:
            return text.splitlines()
        time.sleep(0.05)
    return []


def test_keylog_covers_both_legs(sluice, origin, tmp_path):
    o = origin("good")
    keylog = tmp_path / "keys.log"
    gw = sluice("--keylog", keylog)
    assert "keylog is ON" in gw.stderr_text()
    assert stat.S_IMODE(os.stat(keylog).st_mode) == 0o600
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.http_code == 200, r
    lines = key_lines(keylog)
    randoms = {l.split()[1] for l in lines if l.startswith("CLIENT_HANDSHAKE_TRAFFIC_SECRET")}
    assert len(randoms) == 2, lines  # one TLS 1.3 handshake per leg
    r12 = curl(o.url("/"), "--tls-max", "1.2", proxy=gw.port, cacert=gw.ca_pem)
    assert r12.http_code == 200, r12
    time.sleep(0.3)
    assert any(l.startswith("CLIENT_RANDOM ") for l in key_lines(keylog)), "no TLS 1.2 line"
    for l in key_lines(keylog):
        assert re.match(r"^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+$", l), l


def test_keylog_off_by_default(sluice, origin, tmp_path):
    o = origin("good")
    gw = sluice()
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.http_code == 200 and "keylog is ON" not in gw.stderr_text()
    assert not any(p.name.endswith(".log") for p in gw.workdir.iterdir())
