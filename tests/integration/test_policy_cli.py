"""The policy commands through the real binary: `sluice check-config` on the shipped examples
and on broken configs (file:line errors, exit codes), `sluice explain` in text and JSON, and
`sluice run` refusing a config whose policy is invalid."""
import json
import textwrap

import pytest

import support
from support import run_sluice

EXAMPLES = support.REPO / "examples"


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def one_line(err):
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, "wanted exactly one line on stderr, got %d:\n%s" % (len(lines), err)
    return lines[0]


@pytest.mark.parametrize("name", ["selective.yaml", "enterprise.yaml", "lab.yaml", "sluice.yaml"])
def test_examples_pass_check_config(sluice_bin, name):
    rc, out, err = run_sluice(sluice_bin, "check-config", EXAMPLES / name)
    assert rc == 0, err
    assert out.startswith(str(EXAMPLES / name) + ": OK\n"), out
    assert "policy: default " in out
    assert err == ""


def test_check_config_summary_counts_skipped_list_lines(sluice_bin, tmp_path):
    write(tmp_path / "block.list", """
        # downloaded blocklist
        0.0.0.0 ads.example
        ||tracker.example^
        ||opts.example^$third-party
        not a name
        plain.example
        """)
    cfg = write(tmp_path / "s.yaml", """
        policy:
          default: intercept
          rules:
            - name: blocked
              sni_list: block.list
              action: block
              how: page
        """)
    rc, out, err = run_sluice(sluice_bin, "check-config", cfg)
    assert rc == 0, err
    assert "1. blocked: block page if sni (list %s)" % (tmp_path / "block.list") in out
    assert ("%s: 3 names (3 distinct), 6 lines, 2 skipped (first: %s:4: adblock rule"
            % (tmp_path / "block.list", tmp_path / "block.list")) in out, out


@pytest.mark.parametrize("body, where, message", [
    ("policy:\n  default: allow\n", 2,
     "policy: default: expected intercept, passthrough or block, got 'allow'"),
    ("policy:\n  rules:\n    - name: a\n      client: 10.1.2.3/8\n      action: block\n", 4,
     "rule 'a': client: '10.1.2.3/8': address has bits set past the prefix length"),
    ("policy:\n  http:\n    - name: a\n      path_regex: \"(x\"\n      action: block\n", 4,
     "http rule 'a': path_regex: '(x': missing closing parenthesis at offset 2"),
    ("policy:\n  rules:\n    - name: a\n      sni_list: missing.list\n      action: block\n", 4,
     "rule 'a': sni_list: cannot read "),
])
def test_check_config_errors_name_file_and_line(sluice_bin, tmp_path, body, where, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(body)
    rc, out, err = run_sluice(sluice_bin, "check-config", cfg)
    assert rc == 1, (out, err)
    line = one_line(err)
    assert line.startswith("sluice: %s:%d: %s" % (cfg, where, message)), line
    assert out == ""


def test_check_config_usage(sluice_bin):
    rc, out, err = run_sluice(sluice_bin, "check-config")
    assert rc == 2
    one_line(err)
    rc, out, err = run_sluice(sluice_bin, "check-config", "--help")
    assert rc == 0 and "usage: sluice check-config" in out


def explain_json(sluice_bin, config, *args):
    rc, out, err = run_sluice(sluice_bin, "explain", "--config", config, "--json", *args)
    assert rc == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    return json.loads(lines[0])


def test_explain_selective_example(sluice_bin):
    cfg = EXAMPLES / "selective.yaml"
    assert explain_json(sluice_bin, cfg, "--sni", "www.Example.COM.") == {
        "action": "intercept", "rule": "inspected"}
    assert explain_json(sluice_bin, cfg, "--sni", "x.staging.example.net") == {
        "action": "intercept", "rule": "inspected"}
    assert explain_json(sluice_bin, cfg, "--sni", "staging.example.net") == {
        "action": "passthrough", "rule": None}
    assert explain_json(sluice_bin, cfg, "--host", "api.example.net") == {
        "action": "intercept", "rule": "inspected-explicit"}


def test_explain_enterprise_and_lab_examples(sluice_bin):
    ent = EXAMPLES / "enterprise.yaml"
    assert explain_json(sluice_bin, ent, "--sni", "www.bank.example") == {
        "action": "passthrough", "rule": "sensitive"}
    assert explain_json(sluice_bin, ent, "--sni", "x.tracker.example") == {
        "action": "block", "how": "page", "rule": "blocked"}
    assert explain_json(sluice_bin, ent, "--sni", "news.example") == {
        "action": "intercept", "rule": None}
    assert explain_json(sluice_bin, ent, "--sni", "news.example", "--path", "/setup.EXE") == {
        "action": "intercept", "rule": None,
        "http": {"action": "block", "rule": "no-exe-downloads"}}
    lab = EXAMPLES / "lab.yaml"
    assert explain_json(sluice_bin, lab, "--sni", "device.example", "--client", "10.1.2.3") == {
        "action": "intercept", "rule": "lab-devices"}
    assert explain_json(sluice_bin, lab, "--sni", "x.example", "--client", "10.9.0.1",
                        "--dst", "192.0.2.10:9050") == {"action": "intercept",
                                                         "rule": "debug-targets"}
    assert explain_json(sluice_bin, lab, "--sni", "x.example", "--dst", "[2001:db8:42::1]:8443"
                        ) == {"action": "intercept", "rule": "debug-targets"}
    assert explain_json(sluice_bin, lab, "--sni", "x.example", "--alpn", "acme-tls/1") == {
        "action": "block", "how": "reset", "rule": "no-acme"}


def test_explain_text(sluice_bin):
    cfg = EXAMPLES / "enterprise.yaml"
    rc, out, err = run_sluice(sluice_bin, "explain", "--config", cfg, "--sni", "ads.example")
    assert rc == 0, err
    assert out.splitlines()[:2] == ["action: block", "how: page"]
    assert out.splitlines()[2].startswith("rule: blocked (%s:" % cfg)
    rc, out, err = run_sluice(sluice_bin, "explain", "--config", cfg, "--sni", "x.test")
    assert out == "action: intercept\nrule: none (the default decided)\n"


def test_explain_errors(sluice_bin, tmp_path):
    cfg = EXAMPLES / "lab.yaml"
    rc, out, err = run_sluice(sluice_bin, "explain", "--sni", "a.example")
    assert rc == 2 and "--config FILE is required" in one_line(err)
    rc, out, err = run_sluice(sluice_bin, "explain", "--config", cfg, "--client", "nope")
    assert rc == 2 and "--client nope" in one_line(err)
    rc, out, err = run_sluice(sluice_bin, "explain", "--config", cfg, "--dst", "1.2.3.4:0")
    assert rc == 2
    rc, out, err = run_sluice(sluice_bin, "explain", "--config", tmp_path / "missing.yaml")
    assert rc == 1 and "cannot read" in one_line(err)


def test_run_refuses_an_invalid_policy(sluice_bin, tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("policy:\n  rules:\n    - name: a\n      action: maybe\n")
    rc, out, err = run_sluice(sluice_bin, "run", "--config", cfg, "--ca-dir", tmp_path / "ca",
                              "--listen", "127.0.0.1:0")
    assert rc == 1, err
    assert one_line(err) == ("sluice: %s:4: rule 'a': action: expected intercept, passthrough "
                             "or block, got 'maybe'" % cfg)
    assert not (tmp_path / "ca").exists()


def test_help_lists_the_policy_commands(sluice_bin):
    rc, out, err = run_sluice(sluice_bin, "--help")
    assert rc == 0
    assert "check-config" in out and "explain" in out
