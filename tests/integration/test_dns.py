"""Name resolution through a resolver that never answers: the lookup is abandoned at the
connect timeout (regression: a cancelled lookup must be freed by its deferred callback, not at
cancel time), the client gets the 502 page naming the timeout, and the gateway keeps serving
and exits cleanly (LeakSanitizer checks the abandoned lookup under SANITIZE=1)."""
import os
import shutil
import subprocess
import sys
import time

import support
from support import T, curl


SILENT_DNS = ("import socket,time\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
              "s.bind(('127.0.0.1',53))\n"
              "open(%r,'w').write('ready')\n"
              "while True:\n"
              "    s.recvfrom(4096)\n")


def test_dns_timeout_abandons_the_lookup(netns_pair, origin, sluice, tmp_path):
    ns = netns_pair
    etc = "/etc/netns/%s" % ns.gw
    os.makedirs(etc, exist_ok=True)
    dns = None
    try:
        # `ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf over /etc/resolv.conf.
        with open(os.path.join(etc, "resolv.conf"), "w") as f:
            f.write("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n")
        ready = tmp_path / "dns.ready"
        dns = subprocess.Popen(["ip", "netns", "exec", ns.gw, sys.executable, "-c",
                                SILENT_DNS % str(ready)], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + T(10)
        while not ready.exists():
            assert time.monotonic() < deadline and dns.poll() is None, "silent DNS server"
            time.sleep(0.05)
        o = origin("good", hosts=("127.0.0.1",), netns=ns.gw)
        gw = sluice("--connect-timeout", "1s", netns=ns.gw)
        url = "https://never-answered.test/"
        started = time.monotonic()
        r = curl(url, proxy=gw.port, cacert=gw.ca_pem, netns=ns.gw, timeout=T(20))
        assert time.monotonic() - started < T(8), "not ended by the 1 s connect timeout"
        assert r.http_code == 502 and "timeout" in r.text, r
        rec = gw.wait_record(lambda x: x.get("sni") == "never-answered.test")
        assert rec["error"]["stage"] == "dns" and "timeout" in rec["error"]["reason"], rec
        # Still serving: a name from /etc/hosts resolves without the silent server.
        good = curl("https://localhost:%d/" % o.port, proxy=gw.port, cacert=gw.ca_pem,
                    netns=ns.gw)
        assert good.http_code == 200 and o.marker in good.text, good
        # A lookup still in flight at shutdown is cleaned up too.
        pending = subprocess.Popen(
            ["ip", "netns", "exec", ns.gw, "curl", "-s", "--max-time", "10", "--proxy",
             "http://127.0.0.1:%d" % gw.port, "--cacert", str(gw.ca_pem),
             "https://in-flight.test/"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            gw.stop()
        finally:
            support.stop_pid(pending)
    finally:
        if dns is not None:
            support.stop_pid(dns)
        shutil.rmtree(etc, ignore_errors=True)
