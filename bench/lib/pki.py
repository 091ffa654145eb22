"""The benchmark's own test PKI, made per run with the openssl CLI.

  root.pem         the origin's root: trusted by the proxies for upstream verification, and by
                   the client for `direct` and `tcprelay`
  origin.pem       origin.bench (and its IP), issued by root
  wrong.pem        issued by root for other.bench, served as wrong.bench: a name mismatch
  rogue.pem        rogue.bench, issued by a root nobody trusts
  icpt/ca.pem      the interception CA every intercepting contender signs its leaves with; the
                   client trusts only it (not root) when a proxy is in the path, so a proxy
                   that passed the origin's certificate through would fail the client's checks
  leaf.key         a key for forged leaves, for proxies that take one (sslsplit -K)

ECDSA P-256 by default; rsa=True makes every key RSA-2048.
"""
import os
import subprocess

from topology import GW_ADDR


def _openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def _key(path, rsa, cwd):
    if rsa:
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", path,
                 cwd=cwd)
    else:
        _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path,
                 cwd=cwd)
    os.chmod(os.path.join(cwd, path), 0o600)


def _root(name, cn, rsa, cwd):
    _key(f"{name}.key", rsa, cwd)
    _openssl("req", "-x509", "-new", "-key", f"{name}.key", "-subj", f"/O=sluice bench/CN={cn}",
             "-days", "3", "-out", f"{name}.pem", "-sha256",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=cwd)


def _leaf(name, ca, cn, sans, key, cwd):
    ext = f"{name}.ext"
    with open(os.path.join(cwd, ext), "w") as f:
        f.write(f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    _openssl("req", "-new", "-key", key, "-subj", f"/CN={cn}", "-out", f"{name}.csr", cwd=cwd)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext, "-out", f"{name}.pem",
             cwd=cwd)


class Pki:
    def __init__(self, base, rsa):
        self.dir = os.path.join(base, "pki")
        self.rsa = rsa
        os.makedirs(self.dir, exist_ok=True)
        self.root = self.path("root.pem")
        self.origin_cert, self.origin_key = self.path("origin.pem"), self.path("server.key")
        self.wrong_cert, self.rogue_cert = self.path("wrong.pem"), self.path("rogue.pem")
        self.icpt_dir = self.path("icpt")
        self.icpt_cert = os.path.join(self.icpt_dir, "ca.pem")
        self.icpt_key = os.path.join(self.icpt_dir, "ca.key")
        self.leaf_key = self.path("leaf.key")

    def path(self, name):
        return os.path.join(self.dir, name)

    def make(self):
        d, rsa = self.dir, self.rsa
        _root("root", "bench origin root", rsa, d)
        _root("rogueca", "rogue root (untrusted)", rsa, d)
        _key("server.key", rsa, d)
        _leaf("origin", "root", "origin.bench", f"DNS:origin.bench,IP:{GW_ADDR}", "server.key", d)
        _leaf("wrong", "root", "other.bench", "DNS:other.bench", "server.key", d)
        _leaf("rogue", "rogueca", "rogue.bench", "DNS:rogue.bench", "server.key", d)
        os.makedirs(self.icpt_dir, exist_ok=True)
        _root("icpt/ca", "bench interception CA", rsa, d)
        _key("leaf.key", rsa, d)
        return self

    @property
    def key_type(self):
        return "RSA-2048" if self.rsa else "ECDSA P-256"

    def subject_cn(self, pem):
        out = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-subject", "-nameopt",
                              "multiline"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if "commonName" in line:
                return line.split("=", 1)[1].strip()
        return ""
