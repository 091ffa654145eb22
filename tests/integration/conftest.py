"""conftest: fixtures for the integration tests — the test PKI, origin servers, the gateway.

Fixtures
  sluice_bin       path of the binary (env SLUICE_BIN, default build/sluice); skips when missing
  pki              session PKI (support.PKI): root, other_root, cert(name), key(name)
  origin           factory: origin(cert="good", kind="https", **Origin kwargs) -> Origin
                   (kinds: https, http, tcp-echo, banner, ws-echo, raw with raw_dir=DIR)
  origin_mod       the same, module-scoped (for origins a module-scoped gateway points at)
  sluice           factory: sluice(*extra_args, **Gateway kwargs) -> Gateway
  sluice_mod       the same, module-scoped: share one gateway per module
  netns_pair       a fresh pair of network namespaces joined by veth (root only)
  nginx_origin     factory: Debian's nginx as an HTTPS origin (nginx.Nginx), per test:
                     o = nginx_origin(h2=True, files={"index.html": b"...", "big.bin": 1 << 30})
                   h2=False: HTTP/1.1 only. files: {path in docroot: bytes | str | int n (n
                   bytes of support's pattern: support.pattern_sha256(n) is its hash) |
                   nginx.Sparse(n) (a hole: n zeros, instant)}. cert="good" (a support.PKI
                   leaf for localhost/127.0.0.1), tls=("TLSv1.2", "TLSv1.3"), extra="nginx
                   server-block lines", workers=1.
                   o.port, o.url(path), o.docroot, o.add_files({...}), o.access_log_lines(),
                   o.access_log() (dicts: proto "HTTP/2.0"|"HTTP/1.1", method, uri, status,
                   bytes, tls, alpn, sni, conn, ...), o.wait_access_log(pred, n)
Every process a fixture starts is stopped by its PID at teardown; a gateway's teardown
asserts exit status 0 and no sanitizer report.
"""
import os
from pathlib import Path

import pytest

import nginx
import support
from support import Gateway, NetnsPair, Origin, PKI


def _binary_path():
    return Path(os.environ.get("SLUICE_BIN") or support.REPO / "build" / "sluice")


@pytest.fixture(scope="session")
def sluice_bin():
    path = _binary_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip("sluice binary not found at %s (build it with `make`, or set SLUICE_BIN)"
                    % path)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return PKI(tmp_path_factory.mktemp("pki")).build()


_DEFAULT_HOSTS = ("127.0.0.1", "::1") if support.ipv6_loopback_ok() else ("127.0.0.1",)


def _origin_factory(workdir, pki):
    started = []

    def start(cert="good", kind="https", **kw):
        if kind in Origin.TLS_KINDS:
            kw.setdefault("cert", pki.cert(cert))
            kw.setdefault("key", pki.key(cert))
        kw.setdefault("hosts", _DEFAULT_HOSTS)
        o = Origin(workdir, kind=kind, name=kind + "-" + (cert if kind in Origin.TLS_KINDS
                                                          else ""), **kw)
        started.append(o)
        return o

    return start, started


@pytest.fixture
def origin(tmp_path, pki):
    start, started = _origin_factory(tmp_path / "origins", pki)
    yield start
    for o in started:
        o.stop()


@pytest.fixture(scope="module")
def origin_mod(tmp_path_factory, pki):
    start, started = _origin_factory(tmp_path_factory.mktemp("origins"), pki)
    yield start
    for o in started:
        o.stop()


def _sluice_factory(binary, dir_maker, pki):
    started = []

    def start(*args, **kw):
        kw.setdefault("upstream_ca", pki.root)
        g = Gateway(binary, dir_maker(), args=args, **kw)
        started.append(g)
        return g

    def teardown():
        problems = []
        for g in started:
            try:
                g.stop()
            except AssertionError as e:
                problems.append(str(e))
        if problems:
            pytest.fail("gateway teardown:\n" + "\n\n".join(problems), pytrace=False)

    return start, teardown


@pytest.fixture
def sluice(sluice_bin, tmp_path, pki):
    counter = iter(range(1000))
    start, teardown = _sluice_factory(sluice_bin, lambda: tmp_path / ("gw%d" % next(counter)),
                                      pki)
    yield start
    teardown()


@pytest.fixture(scope="module")
def sluice_mod(sluice_bin, tmp_path_factory, pki):
    start, teardown = _sluice_factory(sluice_bin, lambda: tmp_path_factory.mktemp("gw"), pki)
    yield start
    teardown()


@pytest.fixture(autouse=True)
def _gateway_watch():
    """Before each test: mark every live gateway, so the test looks only at conn-log records
    written during it (see Gateway.mark). After it: the test that made a gateway crash or
    print a sanitizer report fails, not some later one."""
    live = [g for g in list(Gateway.LIVE) if not g.stopped and g.proc.poll() is None]
    for g in live:
        g.mark()
    yield
    problems = []
    for g in list(Gateway.LIVE):
        if g.reported:
            continue
        err = g.stderr_text()
        found = support.sanitizer_report(err)
        if found:
            problems.append("sanitizer report (%s) from %s:\n%s" % (found, g.argv, err[-6000:]))
        elif not g.stopped and g.proc.poll() is not None:
            problems.append("sluice exited %r during the test (%s):\n%s"
                            % (g.proc.returncode, g.argv, err[-4000:]))
        else:
            continue
        g.reported = True
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def netns_pair():
    reason = support.netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    pair = NetnsPair()
    try:
        yield pair
    finally:
        pair.close()


# --- nginx origin (tests/integration/nginx.py) ----------------------------------------------

@pytest.fixture
def nginx_origin(tmp_path, pki):
    if not os.access(nginx.NGINX, os.X_OK):
        pytest.skip("%s not installed (Debian package nginx-light)" % nginx.NGINX)
    started = []

    def start(h2=True, files=None, cert="good", **kw):
        o = nginx.Nginx(tmp_path / ("nginx%d" % len(started)), pki.cert(cert), pki.key(cert),
                        h2=h2, files=files, **kw)
        started.append(o)
        return o

    yield start
    for o in started:
        o.stop()
