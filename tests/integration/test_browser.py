"""A real browser through the gateway: Debian's headless Chromium, trusting the gateway's CA
only through its NSS database, loads a page with 26 subresources from an nginx HTTP/2 origin
via sluice's explicit proxy. The request log must list every request, the origin must have
been spoken to in HTTP/2, and the screenshot must show the page as it should render (each
image in its grid cell, the CSS layout applied, the script run). Without the CA in the NSS
database the same run must get no page at all.

Only loopback is used: https:// goes to the gateway, whose policy intercepts `localhost` and
resets everything else (Chromium still calls Google services, background networking off or
not), and http:// goes to a loopback port that refuses connections, because sluice's explicit
proxy forwards plain http:// requests whatever the policy says."""
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import zlib

import pytest

import support
from support import T

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CERTUTIL = shutil.which("certutil") or "/usr/bin/certutil"

# 24 colours, each at least 127 away from every other in some channel; not white (the
# page), black (the bar before the script runs) or grey.
COLORS = [(r, g, b) for r in (0, 128, 255) for g in (0, 128, 255) for b in (0, 128, 255)
          if (r, g, b) not in ((0, 0, 0), (255, 255, 255), (128, 128, 128))]
COLS, CELL = 6, 100                      # 6 x 4 cells of 100 x 100 CSS px
BAR = (17, 34, 51)                       # the colour app.js gives the bar under the grid
WIDTH, HEIGHT = COLS * CELL, (len(COLORS) // COLS + 1) * CELL

POLICY = """\
policy:
  default: {action: block, how: reset}
  rules:
    - name: test-origin
      host: ["localhost"]
      action: intercept
"""


# --- PNG, stdlib only --------------------------------------------------------------------

def png_encode(width, height, rgb):
    """A solid-colour 8-bit RGB PNG."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    raw = (b"\x00" + bytes(rgb) * width) * height
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def png_decode(data):
    """Decodes an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes). Returns
    (width, height, pixel(x, y) -> (r, g, b))."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG: %r" % data[:16]
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = hdr
    assert depth == 8 and ctype in (2, 6) and interlace == 0, "unsupported PNG %s" % (hdr,)
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif f == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev))
        elif f == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif f == 4:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                upleft = prev[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + _paeth(left, prev[i], upleft)) & 0xFF
        else:
            assert f == 0, "bad PNG filter %d" % f
        rows.append(line)
        prev = line

    def pixel(x, y):
        return tuple(rows[y][x * bpp:x * bpp + 3])

    return width, height, pixel


def close_to(got, want, tol=6):
    return all(abs(a - b) <= tol for a, b in zip(got, want))


# --- the page ----------------------------------------------------------------------------

def page_files():
    """index.html, style.css, app.js and img/cNN.png: 26 subresources."""
    files = {"img/c%02d.png" % i: png_encode(8, 8, c) for i, c in enumerate(COLORS)}
    files["style.css"] = (
        "html, body { margin: 0; padding: 0; background: #fff; overflow: hidden; }\n"
        ".grid { display: grid; grid-template-columns: repeat(%d, %dpx); }\n"
        ".grid img { display: block; width: %dpx; height: %dpx; image-rendering: pixelated; }\n"
        "#bar { width: %dpx; height: %dpx; background: #000; }\n"
        % (COLS, CELL, CELL, CELL, WIDTH, CELL))
    files["app.js"] = ("document.getElementById('bar').style.background = 'rgb(%d, %d, %d)';\n"
                       % BAR)
    files["index.html"] = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>sluice grid</title>\n'
        '<link rel="icon" href="data:,">\n<link rel="stylesheet" href="/style.css">\n'
        '</head><body>\n<div class="grid">\n'
        + "".join('<img src="/img/c%02d.png" alt="">\n' % i for i in range(len(COLORS)))
        + '</div>\n<div id="bar"></div>\n<script src="/app.js"></script>\n</body></html>\n')
    return files


PAGE = "/index.html"
SUBRESOURCES = ["/style.css", "/app.js"] + ["/img/c%02d.png" % i for i in range(len(COLORS))]


def check_screenshot(path):
    """Every image in its cell (so the CSS grid applied), the bar in the script's colour."""
    width, height, px = png_decode(path.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT), (width, height)
    wrong = []
    for i, color in enumerate(COLORS):
        x0, y0 = (i % COLS) * CELL, (i // COLS) * CELL
        for dx, dy in ((50, 50), (15, 15), (85, 85), (15, 85), (85, 15)):
            got = px(x0 + dx, y0 + dy)
            if not close_to(got, color):
                wrong.append("cell %d (%d,%d): %s, wanted %s" % (i, x0 + dx, y0 + dy, got, color))
    y_bar = (len(COLORS) // COLS) * CELL + CELL // 2
    for x in (10, WIDTH // 2, WIDTH - 10):
        if not close_to(px(x, y_bar), BAR):
            wrong.append("bar (%d,%d): %s, wanted %s (did app.js run?)"
                         % (x, y_bar, px(x, y_bar), BAR))
    assert not wrong, "screenshot %s is not the page:\n%s" % (path, "\n".join(wrong))


def grid_colours_seen(path):
    """How many of the cell colours appear at their cell centres (for the negative control)."""
    width, height, px = png_decode(path.read_bytes())
    n = 0
    for i, color in enumerate(COLORS):
        x, y = (i % COLS) * CELL + 50, (i // COLS) * CELL + 50
        if x < width and y < height and close_to(px(x, y), color):
            n += 1
    return n


# --- Chromium ----------------------------------------------------------------------------

def chromium_binary():
    for p in CHROMIUM_CANDIDATES:
        if os.access(p, os.X_OK):
            return p
    pytest.skip("Debian's chromium is not installed (scripts/install-deps.sh installs it)")


def nss_home(home, ca_pem=None):
    """A HOME whose NSS database ($HOME/.pki/nssdb, where Chromium on Linux looks) is new and
    empty, or trusts ca_pem as a CA for TLS servers."""
    if not os.access(CERTUTIL, os.X_OK):
        pytest.skip("certutil not installed (Debian package libnss3-tools)")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True)
    env = support.clean_env({"HOME": str(home)})
    support.check_run([CERTUTIL, "-d", "sql:%s" % db, "-N", "--empty-password"], timeout=30,
                      env=env)
    if ca_pem:
        support.check_run([CERTUTIL, "-d", "sql:%s" % db, "-A", "-t", "C,,", "-n",
                           "sluice-test-gateway", "-i", str(ca_pem)], timeout=30, env=env)
        listed = support.check_run([CERTUTIL, "-d", "sql:%s" % db, "-L"], timeout=30, env=env)
        assert b"sluice-test-gateway" in listed.stdout, listed.stdout
    return home


class ChromiumRun:
    def __init__(self, returncode, stderr, screenshot):
        self.returncode = returncode
        self.stderr = stderr
        self.screenshot = screenshot  # the PNG's path, or None when Chromium wrote none

    def tail(self):
        lines = [l for l in self.stderr.splitlines() if "dbus" not in l]
        return "exit %r; stderr (dbus noise left out):\n%s" % (self.returncode,
                                                               "\n".join(lines[-40:]))


def run_chromium(url, gw_port, home, workdir, timeout=None):
    """Headless Chromium loads url through the gateway and takes a screenshot. https:// goes
    to the gateway (loopback included: `<-loopback>` removes Chromium's implicit bypass),
    http:// to a loopback port that refuses connections. Runs in its own process group,
    which is killed if it outlives the run. Returns ChromiumRun."""
    shot = workdir / "screenshot.png"
    refuse = socket.socket()           # bound, never listening: connections are refused
    refuse.bind(("127.0.0.1", 0))
    try:
        cmd = [chromium_binary(), "--headless", "--no-sandbox",
               "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage",
               "--user-data-dir=%s" % (workdir / "profile"),
               "--proxy-server=https=http://127.0.0.1:%d;http=http://127.0.0.1:%d"
               % (gw_port, refuse.getsockname()[1]),
               "--proxy-bypass-list=<-loopback>",
               "--no-first-run", "--no-default-browser-check", "--disable-component-update",
               "--disable-sync", "--disable-extensions", "--disable-default-apps",
               "--disable-breakpad", "--no-pings", "--password-store=basic",
               "--window-size=%d,%d" % (WIDTH, HEIGHT), "--force-device-scale-factor=1",
               "--hide-scrollbars", "--virtual-time-budget=15000",
               "--screenshot=%s" % shot, url]
        env = support.clean_env({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                                 "XDG_CACHE_HOME": str(home / ".cache")})
        errpath = workdir / "chromium.stderr"
        with open(errpath, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                    env=env, cwd=workdir, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout or T(60))
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            _kill_group(proc)
    finally:
        refuse.close()
    stderr = errpath.read_text(errors="replace")
    assert rc is not None, "chromium did not finish within %ss:\n%s" % (
        timeout or T(60), ChromiumRun(rc, stderr, None).tail())
    return ChromiumRun(rc, stderr, shot if shot.exists() else None)


def _kill_group(proc):
    """Kills what is left of the process group the test started for Chromium (its pgid is
    the browser's PID): the browser itself, and helpers that outlive it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


# --- records -----------------------------------------------------------------------------

def read_jsonl(path):
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return []
    return [json.loads(l) for l in data.split("\n")[:-1] if l.strip()]


def wait_paths(reqlog, authority, paths, timeout=None):
    """Waits until the request log has a record for each of paths on authority; returns
    the records on authority."""
    deadline = time.monotonic() + (timeout or T(10))
    while True:
        recs = [r for r in read_jsonl(reqlog) if r.get("authority") == authority]
        if set(paths) <= {r["path"] for r in recs} or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


def test_chromium_loads_a_page_with_26_subresources_over_h2(sluice, nginx_origin, tmp_path):
    o = nginx_origin(h2=True, files=page_files())
    (tmp_path / "policy.yaml").write_text(POLICY)
    reqlog = tmp_path / "requests.jsonl"
    gw = sluice("--config", tmp_path / "policy.yaml", "--request-log", reqlog)
    home = nss_home(tmp_path / "home", gw.ca_pem)
    run = run_chromium(o.url(PAGE), gw.port, home, tmp_path)
    assert run.returncode == 0 and run.screenshot, run.tail()
    assert "Page load failed" not in run.stderr, run.tail()

    # The page rendered: every image, the stylesheet's grid, the script's colour.
    check_screenshot(run.screenshot)

    # The request log lists the page and every subresource, each once, each a 200.
    authority = "localhost:%d" % o.port
    recs = wait_paths(reqlog, authority, [PAGE] + SUBRESOURCES)
    by_path = {}
    for r in recs:
        by_path.setdefault(r["path"], []).append(r)
    assert sorted(by_path) == sorted([PAGE] + SUBRESOURCES), sorted(by_path)
    for path, rs in sorted(by_path.items()):
        assert len(rs) == 1, (path, rs)
        r = rs[0]
        assert (r["method"], r["status"], r["scheme"], r["action"]) == \
            ("GET", 200, "https", "allow") and "error" not in r, r
    # The origin served exactly those, and nothing went elsewhere through the gateway
    # (Chromium's own calls to Google were reset by the policy, never resolved).
    served = o.access_log()
    assert sorted(a["uri"] for a in served) == sorted([PAGE] + SUBRESOURCES), served
    assert all(a["status"] == 200 for a in served), served
    ids = {r["conn"] for r in recs}
    conns = gw.wait_records(len(ids), pred=lambda c: c["id"] in ids)
    for c in conns:
        support.check_record_schema(c)
        assert c["sni"] == "localhost" and c["action"] == "intercept", c
    for c in gw.records():
        if c["action"] != "block":
            assert c["dst"] == "127.0.0.1:%d" % o.port, c

    # HTTP/2 end to end: Chromium spoke h2 to the gateway, the gateway h2 to nginx.
    assert all(c["alpn"] == "h2" for c in conns), [(c["id"], c["alpn"]) for c in conns]
    assert all(r["http"] == "2" for r in recs), [(r["path"], r["http"]) for r in recs]
    assert all(a["proto"] == "HTTP/2.0" and a["alpn"] == "h2" for a in served), served


def test_chromium_without_the_ca_in_its_nss_db_gets_no_page(sluice, nginx_origin, tmp_path):
    """The negative control: the same run with an empty NSS database. Chromium refuses the
    gateway's certificate, so the trust in the test above came from the NSS database."""
    o = nginx_origin(h2=True, files=page_files())
    (tmp_path / "policy.yaml").write_text(POLICY)
    reqlog = tmp_path / "requests.jsonl"
    gw = sluice("--config", tmp_path / "policy.yaml", "--request-log", reqlog)
    home = nss_home(tmp_path / "home", None)
    run = run_chromium(o.url(PAGE), gw.port, home, tmp_path)
    assert "ERR_CERT_AUTHORITY_INVALID" in run.stderr, run.tail()
    if run.screenshot:
        assert grid_colours_seen(run.screenshot) == 0, "the page rendered without the CA"
    # The gateway intercepted (its upstream handshake with nginx succeeded) but Chromium
    # refused the forged certificate; no request was made.
    conns = gw.wait_records(1, pred=lambda c: c["sni"] == "localhost")
    for c in conns:
        assert c["action"] == "intercept" and c["verify"] == {"ok": True, "error": None}, c
        assert c["client_tls"] is None and c["bytes_up"] == 0, c
        assert c.get("error", {}).get("stage") == "client_handshake", c
    time.sleep(0.2)
    assert read_jsonl(reqlog) == [], read_jsonl(reqlog)
    assert o.access_log_lines() == [], o.access_log_lines()
