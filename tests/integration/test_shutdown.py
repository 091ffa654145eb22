"""Graceful shutdown: SIGTERM/SIGINT stop accepting, let open connections finish up to
shutdown_timeout, exit 0."""
import os
import signal
import socket
import subprocess
import time

import pytest

import support
from support import T


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def wait_refused(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if refuses(port):
            return True
        time.sleep(0.05)
    return False


def start_download(gw, o, path, out):
    """curl in the background (Popen, stopped by PID at the end of the test)."""
    cmd = ["curl", "-sS", "--max-time", str(T(60)), "--proxy", "http://127.0.0.1:%d" % gw.port,
           "--cacert", str(gw.ca_pem), "-o", str(out), "-w", "%{http_code}", o.url(path)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=support.clean_env())


def wait_for_bytes(path, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.02)
    raise AssertionError("download did not start")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_gateway_exits_0(sluice, sig):
    gw = sluice()
    gw.signal(sig)
    assert gw.wait_exit(T(10)) == 0, gw.stderr_text()
    gw.check_clean_exit()
    assert refuses(gw.port)


def test_sigterm_lets_an_open_download_finish(sluice, origin, tmp_path):
    gw = sluice("--shutdown-timeout", "%ds" % T(20))
    o = origin("good")
    size = 4 * 1024 * 1024  # 64 chunks of 64 KiB, one every 50 ms: about 3.2 s
    out = tmp_path / "download"
    p = start_download(gw, o, "/slow/%d?chunk=65536&delay=0.05" % size, out)
    try:
        wait_for_bytes(out, T(10))
        gw.signal(signal.SIGTERM)
        assert wait_refused(gw.port, T(2)), "still accepting connections after SIGTERM"
        assert p.poll() is None, "download ended before the listener was checked"
        assert gw.alive(), "sluice exited with a download still open"
        stdout, stderr = p.communicate(timeout=T(30))
    finally:
        support.stop_pid(p)
    assert p.returncode == 0 and stdout == b"200", (p.returncode, stdout, stderr)
    assert support.file_sha256(out) == support.pattern_sha256(size)
    assert gw.wait_exit(T(10)) == 0
    gw.check_clean_exit()
    assert refuses(gw.port)
    recs = gw.records()
    assert any(r["dst"] and r["dst"].endswith(":%d" % o.port) for r in recs), \
        "the drained connection must still be logged"


def test_shutdown_timeout_cuts_off_a_long_download(sluice, origin, tmp_path):
    gw = sluice("--shutdown-timeout", "1s")
    o = origin("good")
    size = 64 * 1024 * 1024  # at 64 KiB per 100 ms: far longer than the shutdown timeout
    out = tmp_path / "download"
    p = start_download(gw, o, "/slow/%d?chunk=65536&delay=0.1" % size, out)
    try:
        wait_for_bytes(out, T(10))
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        rc = gw.wait_exit(1 + T(5))
        elapsed = time.monotonic() - t0
        stdout, stderr = p.communicate(timeout=T(10))
    finally:
        support.stop_pid(p)
    assert rc == 0, gw.stderr_text()
    gw.check_clean_exit()
    assert elapsed >= 0.8, "exited after %.2fs without waiting for the open download" % elapsed
    assert p.returncode != 0 and os.path.getsize(out) < size, "download should be cut off"
    assert refuses(gw.port)
