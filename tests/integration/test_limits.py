"""The open-file limit: when sluice runs out of descriptors it says so in a clear log line,
pauses accepting instead of spinning on a listener that stays readable, fails the connection
it cannot dial with a record naming why, and serves again once descriptors are free."""
import os
import resource
import socket
import time

from support import T, curl, client_port_is

CLK_TCK = os.sysconf("SC_CLK_TCK")
LIMIT_LINE = "Too many open files"


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settled_fd_count(g):
    """The gateway's descriptors once the connections before are closed: its record of the
    last one is written just before its two sockets close, and under load that can come
    after the client saw the response end. So: wait for the record, then for two equal counts
    in a row."""
    g.wait_records(1)
    last, deadline = -1, time.monotonic() + T(5)
    while time.monotonic() < deadline:
        n = fd_count(g.proc.pid)
        if n == last:
            return n
        last = n
        time.sleep(0.1)
    return last


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def set_fd_limit(pid, n):
    """Sets the soft limit only: raising a hard limit again needs CAP_SYS_RESOURCE."""
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (n, hard))


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(0.05)


def hold(port, n):
    """n TCP connections to the gateway that send nothing (the kernel completes them even when
    sluice cannot accept)."""
    return [socket.create_connection(("127.0.0.1", port), timeout=T(10)) for _ in range(n)]


def test_out_of_descriptors_is_logged_paused_and_recovered(sluice, origin):
    o = origin("good")
    g = sluice("--handshake-timeout", "30s")
    assert curl(o.url("/"), proxy=g.port, cacert=g.ca_pem).http_code == 200
    pid = g.proc.pid
    set_fd_limit(pid, settled_fd_count(g) + 8)
    held = hold(g.port, 30)
    try:
        wait_for(lambda: LIMIT_LINE in g.stderr_text(), T(10), "the open-file limit log line")
        line = [l for l in g.stderr_text().splitlines() if LIMIT_LINE in l][0]
        assert "accept on 127.0.0.1:%d failed" % g.port in line, line
        assert "pausing accepts" in line and "ulimit -n" in line, line
        # Paused, not spinning: a loop on the readable listener would burn the whole core.
        c0 = cpu_seconds(pid)
        time.sleep(2)
        used = cpu_seconds(pid) - c0
        assert used < 0.5, "%.2f s of CPU in 2 s while out of descriptors" % used
        # One line per 10 s, not one per failed accept.
        assert g.stderr_text().count(LIMIT_LINE) == 1, g.stderr_text()[-2000:]
        g.assert_alive()
    finally:
        for s in held:
            s.close()
    # The held connections close, their descriptors come back, and accepting resumes.
    r = curl(o.url("/"), proxy=g.port, cacert=g.ca_pem, timeout=T(20))
    assert r.http_code == 200 and o.marker in r.text, r


def test_no_descriptor_for_the_upstream_fails_that_connection_clearly(sluice, origin):
    o = origin("good")
    g = sluice("--handshake-timeout", "30s")
    assert curl(o.url("/"), proxy=g.port, cacert=g.ca_pem).http_code == 200
    pid = g.proc.pid
    base = settled_fd_count(g)
    held = hold(g.port, 3)
    try:
        wait_for(lambda: fd_count(pid) >= base + 3, T(10), "sluice to accept 3 connections")
        # One descriptor left: the client's connection is accepted, the upstream's is not.
        set_fd_limit(pid, fd_count(pid) + 1)
        r = curl("https://127.0.0.1:%d/" % o.port, proxy=g.port, cacert=g.ca_pem)
        assert 502 in (r.connect_code, r.http_code), r
        rec = g.wait_record(client_port_is(r.local_port))
        assert rec["error"]["stage"] == "connect", rec
        assert LIMIT_LINE.lower() in rec["error"]["reason"].lower(), rec
        g.assert_alive()
    finally:
        for s in held:
            s.close()
    set_fd_limit(pid, base + 64)
    r = curl(o.url("/"), proxy=g.port, cacert=g.ca_pem, timeout=T(20))
    assert r.http_code == 200 and o.marker in r.text, r
