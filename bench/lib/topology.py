"""Network namespaces of the benchmark: a client netns and a gateway netns joined by a veth.

    slb-cli (client, 10.251.0.1/30) --veth-- slb-gw (gateway, 10.251.0.2/30)

nginx listens on the gateway's veth address, port 443. A contender that intercepts adds
    iptables -t nat -A PREROUTING -i slb-g0 -p tcp --dport 443 -j REDIRECT --to-ports PORT
in the gateway netns: the client's port-443 traffic reaches the proxy, whose own upstream
connections start in the gateway netns (OUTPUT, not PREROUTING) and so are not redirected.
`ip netns exec` bind-mounts /etc/netns/NAME/hosts over /etc/hosts, which is how the client
resolves origin.bench without touching the machine's /etc/hosts.
"""
import os
import shutil
import subprocess

CLI_NS, GW_NS = "slb-cli", "slb-gw"
CLI_IF, GW_IF = "slb-c0", "slb-g0"
CLI_ADDR, GW_ADDR = "10.251.0.1", "10.251.0.2"
HOSTNAMES = ("origin.bench", "rogue.bench", "wrong.bench")
NETNS_ETC = "/etc/netns"


def sh(*cmd, check=True, quiet=False):
    """Runs a command; returns its stdout. Raises with its stderr when check fails."""
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip() or res.returncode}")
    return res.stdout


def in_ns(ns, cmd):
    """The argv that runs cmd inside netns ns (ip netns exec execs, so the PID is cmd's)."""
    return ["ip", "netns", "exec", ns] + list(cmd)


def pinned(cores, cmd):
    """The argv that runs cmd on the given cores, e.g. "1" or "0,1" (taskset execs too)."""
    return ["taskset", "-c", cores] + list(cmd)


class Topology:
    def __init__(self):
        self.redirect_port = None
        self.created_etc = False

    def setup(self):
        self.teardown()  # leftovers of a run that was killed
        sh("ip", "netns", "add", CLI_NS)
        sh("ip", "netns", "add", GW_NS)
        sh("ip", "link", "add", CLI_IF, "type", "veth", "peer", "name", GW_IF)
        sh("ip", "link", "set", CLI_IF, "netns", CLI_NS)
        sh("ip", "link", "set", GW_IF, "netns", GW_NS)
        sh("ip", "-n", CLI_NS, "addr", "add", f"{CLI_ADDR}/30", "dev", CLI_IF)
        sh("ip", "-n", GW_NS, "addr", "add", f"{GW_ADDR}/30", "dev", GW_IF)
        for ns, ifname in ((CLI_NS, CLI_IF), (GW_NS, GW_IF)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        # a dedicated hosts file per netns; the machine's /etc/hosts is left alone
        self.created_etc = not os.path.isdir(NETNS_ETC)
        for ns in (CLI_NS, GW_NS):
            os.makedirs(f"{NETNS_ETC}/{ns}", exist_ok=True)
            with open(f"{NETNS_ETC}/{ns}/hosts", "w") as f:
                f.write(f"127.0.0.1 localhost\n{GW_ADDR} {' '.join(HOSTNAMES)}\n")
        # many short connections: let the client reuse ports quickly
        sh(*in_ns(CLI_NS, ["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000"]))
        sh(*in_ns(CLI_NS, ["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"]))
        for ns in (CLI_NS, GW_NS):
            sh(*in_ns(ns, ["sysctl", "-q", "-w", "net.core.somaxconn=8192"]))

    def teardown(self):
        """Removes what setup made; safe to call more than once and after a crash."""
        for ns in (CLI_NS, GW_NS):
            sh("ip", "netns", "del", ns, check=False)
            shutil.rmtree(f"{NETNS_ETC}/{ns}", ignore_errors=True)
        if os.path.isdir(NETNS_ETC) and not os.listdir(NETNS_ETC):
            os.rmdir(NETNS_ETC)
        self.redirect_port = None

    def _rule(self, op, port):
        return in_ns(GW_NS, ["iptables", "-t", "nat", op, "PREROUTING", "-i", GW_IF, "-p", "tcp",
                             "--dport", "443", "-j", "REDIRECT", "--to-ports", str(port)])

    def redirect(self, port):
        """Sends the client's port-443 traffic to a local proxy on `port`."""
        self.unredirect()
        sh(*self._rule("-A", port))
        self.redirect_port = port

    def unredirect(self):
        if self.redirect_port is not None:
            sh(*self._rule("-D", self.redirect_port), check=False)
            self.redirect_port = None
        self.flush_conntrack()

    def flush_conntrack(self):
        """Forgets the gateway's tracked connections. An entry left by an earlier
        connection keeps its NAT mapping, and in some states a new SYN from the same client
        port is matched to it instead of a new entry: it would go to the port of a contender
        that is no longer selected, or no longer running, and be refused."""
        sh(*in_ns(GW_NS, ["conntrack", "-F"]), check=False)

    def netns_inodes(self):
        """Inode numbers of both namespaces, to tell our processes from the machine's others."""
        return {os.stat(f"/run/netns/{ns}").st_ino for ns in (CLI_NS, GW_NS)}
