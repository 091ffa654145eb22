"""The command line: --version, --help, usage errors, config files, `sluice ca`, CA permissions."""
import json
import os
import re
import socket
import stat

import pytest

import support
from support import T, curl, run_sluice

RUN_OPTIONS = ["--config", "--listen", "--mode", "--ca-dir", "--upstream-ca", "--conn-log",
               "--workers", "--connect-timeout", "--handshake-timeout", "--idle-timeout",
               "--shutdown-timeout", "--first-byte-timeout", "--log-level", "--body-inspect-max",
               "--body-response-hold", "--body-types", "--body-uninspectable", "--capture-file"]
# Options whose help must state a default, and text that default must contain.
RUN_DEFAULTS = {
    "--listen": r"127\.0\.0\.1:3128",
    "--mode": r"explicit",
    "--ca-dir": r"/",
    "--workers": r"",
    "--connect-timeout": r"10",
    "--handshake-timeout": r"10",
    "--idle-timeout": r"300|5\s*m",
    "--shutdown-timeout": r"10",
    "--first-byte-timeout": r"1",
    "--log-level": r"info",
    "--body-inspect-max": r"1MiB",
    "--body-response-hold": r"64KiB",
    "--body-types": r"text",
    "--body-uninspectable": r"pass",
    "--capture-file": r"off",
}
CA_OPTIONS = ["init", "export", "--ca-dir", "--key", "--name", "--force", "--format", "--out"]


def one_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, "wanted exactly one line on stderr, got %d:\n%s" % (len(lines), err)
    return lines[0]


def option_blocks(text):
    """{option: help text from its line up to the next option line}."""
    blocks, cur = {}, None
    for line in text.splitlines():
        m = re.match(r"^\s*(?:-\w,\s*)?(--[a-z][a-z0-9-]*)", line)
        if m:
            cur = m.group(1)
            blocks[cur] = line
        elif cur:
            blocks[cur] += "\n" + line
    return blocks


def test_version(sluice_bin):
    rc, out, err = run_sluice(sluice_bin, "--version")
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    assert "sluice" in lines[0] and re.search(r"\d+\.\d+", lines[0]), out


def test_top_level_help(sluice_bin):
    rc, out, err = run_sluice(sluice_bin, "--help")
    assert rc == 0, err
    text = out + err
    for word in ("run", "ca", "--version", "--help"):
        assert word in text, (word, text)


def test_run_help_lists_every_option_with_its_default(sluice_bin):
    rc, out, err = run_sluice(sluice_bin, "run", "--help")
    assert rc == 0, err
    text = out + err
    blocks = option_blocks(text)
    for opt in RUN_OPTIONS:
        assert opt in blocks, "run --help does not list %s:\n%s" % (opt, text)
    for opt, value in RUN_DEFAULTS.items():
        block = blocks[opt]
        assert re.search(r"(?i)default", block), "no default given for %s: %r" % (opt, block)
        assert re.search(value, block), "default of %s should match %r: %r" % (opt, value, block)


def test_ca_help_lists_every_option(sluice_bin):
    rc, out, err = run_sluice(sluice_bin, "ca", "--help")
    assert rc == 0, err
    text = out + err
    for opt in CA_OPTIONS:
        assert opt in text, "ca --help does not list %s:\n%s" % (opt, text)
    for value in ("ec-p256", "rsa-2048", "rsa-3072", "pem", "der", "p12"):
        assert value in text, (value, text)


def _safe_run_prefix(tmp_path):
    """Arguments that keep a `run` that wrongly accepts a bad flag harmless: a temp CA dir
    and a free loopback port."""
    return ["run", "--ca-dir", str(tmp_path / "ca"),
            "--listen", "127.0.0.1:%d" % support.free_port()]


USAGE_ERRORS = [
    (["--bogus"], ["--bogus"]),
    (["frobnicate"], ["frobnicate"]),
    (["RUN", "--bogus"], ["--bogus"]),
    (["RUN", "--workers", "abc"], ["abc", "--workers", "workers"]),
    (["RUN", "--workers"], ["--workers", "workers"]),
    (["RUN", "--mode", "sideways"], ["sideways", "--mode", "mode"]),
    (["RUN", "--mode", "fixed:nohostport"], ["fixed:nohostport", "--mode", "mode"]),
    (["RUN", "--listen", "not-an-address"], ["not-an-address", "--listen", "listen"]),
    (["RUN", "--connect-timeout", "forever"], ["forever", "--connect-timeout", "connect_timeout"]),
    (["RUN", "--log-level", "loud"], ["loud", "--log-level", "log_level"]),
    (["ca", "init", "--key", "dsa-512", "--ca-dir", "CADIR"], ["dsa-512", "--key", "key"]),
    (["ca", "export", "--format", "jpeg", "--ca-dir", "CADIR"], ["jpeg", "--format", "format"]),
    (["ca", "--bogus"], ["--bogus"]),
]


@pytest.mark.parametrize("args,names", USAGE_ERRORS,
                         ids=[" ".join(a).replace("RUN", "run") for a, _ in USAGE_ERRORS])
def test_usage_error_exits_2_with_one_line(sluice_bin, tmp_path, args, names):
    argv = []
    for a in args:
        if a == "RUN":
            argv += _safe_run_prefix(tmp_path)
        elif a == "CADIR":
            argv.append(str(tmp_path / "ca"))
        else:
            argv.append(a)
    rc, out, err = run_sluice(sluice_bin, *argv, timeout=T(10))
    assert rc == 2, "exit %d (wanted 2 = usage) for %s; stderr:\n%s" % (rc, argv, err)
    line = one_line(err)
    assert any(n in line for n in names), "%r should name one of %s" % (line, names)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_config_is_named(sluice_bin, tmp_path, kind):
    path = tmp_path / "nope.yaml" if kind == "missing" else tmp_path / "cfgdir"
    if kind == "directory":
        path.mkdir()
    rc, out, err = run_sluice(sluice_bin, *_safe_run_prefix(tmp_path), "--config", str(path),
                              timeout=T(10))
    assert rc != 0
    assert str(path) in one_line(err)


@pytest.mark.parametrize("body,names", [
    ("workers: lots\n", ["workers"]),
    ("no_such_setting: 1\n", ["no_such_setting"]),
    ("mode: [unclosed\n", []),
])
def test_bad_config_file_names_file_and_problem(sluice_bin, tmp_path, body, names):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("log_level: info\n" + body)
    rc, out, err = run_sluice(sluice_bin, *_safe_run_prefix(tmp_path), "--config", str(cfg),
                              timeout=T(10))
    assert rc != 0
    line = one_line(err)
    assert str(cfg) in line, line
    for n in names:
        assert n in line, (n, line)


def test_config_file_is_used_and_command_line_wins(sluice, origin, pki, tmp_path):
    o = origin("good")
    from_file_log = tmp_path / "from-file.jsonl"
    cli_log = tmp_path / "from-cli.jsonl"
    ca_dir = tmp_path / "cfg-ca"
    cfg = tmp_path / "sluice.yaml"
    cfg.write_text("".join("%s: %s\n" % (k, json.dumps(v)) for k, v in [
        ("mode", "explicit"), ("ca_dir", str(ca_dir)), ("upstream_ca", str(pki.root)),
        ("conn_log", str(from_file_log)), ("workers", 1), ("handshake_timeout", "5s"),
        ("log_level", "warn")]))
    port = support.free_port()
    gw = sluice("--config", cfg, "--listen", "127.0.0.1:%d" % port, "--conn-log", cli_log,
                defaults=False, port=port, conn_log=cli_log, ca_dir=ca_dir)
    assert (ca_dir / "ca.pem").exists(), "ca_dir from the config file was not used"
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and o.marker in r.text, r
    rec = gw.wait_record(support.client_port_is(r.local_port))
    assert rec["action"] == "intercept"
    assert not from_file_log.exists() or from_file_log.read_text() == "", \
        "the config file's conn_log was used although --conn-log was given"


def test_conn_log_to_stdout(sluice, origin):
    o = origin("good")
    gw = sluice(conn_log="-")
    r = curl(o.url("/"), proxy=gw.port, cacert=gw.ca_pem)
    assert r.rc == 0 and o.marker in r.text, r
    rec = gw.wait_record(support.client_port_is(r.local_port))
    support.check_record_schema(rec)


# --- sluice ca ---------------------------------------------------------------------------

def _pubkey_of_cert(pem):
    return support.check_run(["openssl", "x509", "-in", pem, "-noout", "-pubkey"], T(10)).stdout


def _pubkey_of_key(key):
    return support.check_run(["openssl", "pkey", "-in", key, "-pubout"], T(10)).stdout


@pytest.mark.parametrize("key,expect", [
    (None, r"(prime256v1|P-256)"),
    ("ec-p256", r"(prime256v1|P-256)"),
    ("rsa-2048", r"Public-Key: \(2048 bit\)"),
    ("rsa-3072", r"Public-Key: \(3072 bit\)"),
])
def test_ca_init_writes_a_ca_and_a_private_key(sluice_bin, tmp_path, key, expect):
    d = tmp_path / "ca"
    args = ["ca", "init", "--ca-dir", d, "--name", "Sluice Test CA %s" % key]
    if key:
        args += ["--key", key]
    rc, out, err = run_sluice(sluice_bin, *args, timeout=T(30))
    assert rc == 0, err
    pem, keyf = d / "ca.pem", d / "ca.key"
    assert stat.S_IMODE(os.stat(keyf).st_mode) == 0o600
    text = support.x509_text(pem, "-text")
    assert re.search(r"CA:TRUE", text), text
    assert re.search(expect, text), text
    assert support.x509_cn(pem) == "Sluice Test CA %s" % key
    assert support.x509_name(pem, "subject") == support.x509_name(pem, "issuer")
    assert _pubkey_of_cert(pem) == _pubkey_of_key(keyf), "ca.key does not match ca.pem"
    assert b"PRIVATE KEY" not in pem.read_bytes()


def test_ca_init_twice_refused_without_force(sluice_bin, tmp_path):
    d = tmp_path / "ca"
    rc, out, err = run_sluice(sluice_bin, "ca", "init", "--ca-dir", d)
    assert rc == 0, err
    before = ((d / "ca.pem").read_bytes(), (d / "ca.key").read_bytes())
    rc, out, err = run_sluice(sluice_bin, "ca", "init", "--ca-dir", d)
    assert rc == 1, "second init without --force: exit %d, stderr %s" % (rc, err)
    assert err.strip(), "refusal must say why"
    assert ((d / "ca.pem").read_bytes(), (d / "ca.key").read_bytes()) == before
    rc, out, err = run_sluice(sluice_bin, "ca", "init", "--ca-dir", d, "--force")
    assert rc == 0, err
    assert (d / "ca.pem").read_bytes() != before[0]
    assert stat.S_IMODE(os.stat(d / "ca.key").st_mode) == 0o600


@pytest.fixture
def ca_dir(sluice_bin, tmp_path):
    d = tmp_path / "ca"
    rc, out, err = run_sluice(sluice_bin, "ca", "init", "--ca-dir", d, "--name", "Export CA")
    assert rc == 0, err
    return d


def test_ca_export_pem_and_der(sluice_bin, ca_dir, tmp_path):
    want = support.cert_sha256(ca_dir / "ca.pem")
    rc, out, err = run_sluice(sluice_bin, "ca", "export", "--ca-dir", ca_dir, "--format", "pem",
                              "--out", tmp_path / "x.pem")
    assert rc == 0, err
    assert support.cert_sha256(tmp_path / "x.pem") == want
    assert b"PRIVATE KEY" not in (tmp_path / "x.pem").read_bytes()
    rc, out, err = run_sluice(sluice_bin, "ca", "export", "--ca-dir", ca_dir, "--format", "der",
                              "--out", tmp_path / "x.der")
    assert rc == 0, err
    der = (tmp_path / "x.der").read_bytes()
    assert der[0] == 0x30
    assert support.hashlib.sha256(der).hexdigest() == want


def test_ca_export_pem_to_stdout(sluice_bin, ca_dir):
    rc, out, err = run_sluice(sluice_bin, "ca", "export", "--ca-dir", ca_dir, "--format", "pem")
    assert rc == 0, err
    assert "PRIVATE KEY" not in out
    assert support.cert_sha256(out) == support.cert_sha256(ca_dir / "ca.pem")


def test_ca_export_p12_holds_the_certificate_only(sluice_bin, ca_dir, tmp_path):
    p12 = tmp_path / "x.p12"
    rc, out, err = run_sluice(sluice_bin, "ca", "export", "--ca-dir", ca_dir, "--format", "p12",
                              "--out", p12)
    assert rc == 0, err
    p = support.run(["openssl", "pkcs12", "-in", p12, "-passin", "pass:", "-nodes"], T(10))
    if p.returncode != 0:  # an old-style (RC2) container needs the legacy provider
        p = support.run(["openssl", "pkcs12", "-legacy", "-in", p12, "-passin", "pass:",
                         "-nodes"], T(10))
    assert p.returncode == 0, p.stderr
    text = p.stdout.decode()
    assert "PRIVATE KEY" not in text
    certs = support.pem_blocks(text)
    assert len(certs) == 1
    assert support.cert_sha256(certs[0]) == support.cert_sha256(ca_dir / "ca.pem")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_run_refuses_a_readable_ca_key(sluice_bin, ca_dir, tmp_path, mode):
    os.chmod(ca_dir / "ca.key", mode)
    port = support.free_port()
    rc, out, err = run_sluice(sluice_bin, "run", "--ca-dir", ca_dir,
                              "--listen", "127.0.0.1:%d" % port, timeout=T(10))
    assert rc != 0
    assert "chmod" in err, err
    assert "ca.key" in err, err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_run_creates_a_ca_on_first_start_and_reuses_it(sluice, origin, tmp_path):
    d = tmp_path / "fresh" / "ca"
    gw = sluice(ca_dir=d)
    assert gw.ca_pem.exists() and (d / "ca.key").exists()
    assert stat.S_IMODE(os.stat(d / "ca.key").st_mode) == 0o600
    assert str(d) in gw.stderr_text(), "stderr must say where the new CA is:\n" + gw.stderr_text()
    first = gw.ca_pem.read_bytes()
    gw.stop()
    gw2 = sluice(ca_dir=d)
    assert gw2.ca_pem.read_bytes() == first, "an existing CA must be reused"
    o = origin("good")
    r = curl(o.url("/"), proxy=gw2.port, cacert=d / "ca.pem")
    assert r.rc == 0 and o.marker in r.text, r


def test_run_uses_a_ca_made_by_ca_init(sluice, sluice_bin, origin, tmp_path):
    d = tmp_path / "ca"
    rc, out, err = run_sluice(sluice_bin, "ca", "init", "--ca-dir", d, "--key", "rsa-2048",
                              "--name", "Operator Made CA", timeout=T(30))
    assert rc == 0, err
    gw = sluice(ca_dir=d)
    o = origin("good")
    code, text = support.s_client("localhost:%d" % o.port, proxy=gw.port, servername="localhost",
                                  cafile=d / "ca.pem")
    assert support.verify_code(text) == (0, "ok"), text
    leaf = support.pem_blocks(text)[0]
    assert support.x509_cn(leaf, "issuer") == "Operator Made CA"
