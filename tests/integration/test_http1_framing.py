"""HTTP/1.1 framing attacks through the gateway, from the client and from the origin
(docs/HTTP1.md, "What is refused"). Raw bytes over TLS through the explicit proxy: each
ambiguous or malformed request gets a 400 (431, 505) with Connection: close and never reaches
the origin; each such response from a raw origin gets the client a 502 instead. Both the
connection record (error.stage "http") and the request record (error) say why.

The inspector's rules are unit-tested in tests/unit/test_http1.c; here the point is the
wiring: the relay really stops the bytes, the client really gets the reply, and the logs
really carry the reason."""
import json
import ssl
import time
import uuid

import pytest

import support
from support import T, ProxyTunnel


def read_jsonl(path):
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return []
    return [json.loads(l) for l in data.split("\n")[:-1] if l.strip()]


@pytest.fixture(scope="module")
def env(sluice_mod, origin_mod, tmp_path_factory):
    """One inspecting gateway (--request-log), an ordinary HTTPS origin (for client attacks)
    and a raw-response origin (for server attacks), shared by the module."""
    d = tmp_path_factory.mktemp("framing")
    raw_dir = d / "raw"
    raw_dir.mkdir()
    reqlog = d / "requests.jsonl"

    class Env:
        pass

    e = Env()
    e.reqlog = reqlog
    e.raw_dir = raw_dir
    e.gw = sluice_mod("--request-log", reqlog)
    e.origin = origin_mod("good")
    e.raw = origin_mod("good", kind="raw", raw_dir=raw_dir)
    return e


def exchange(gw, port, data, timeout=None):
    """Sends data over TLS (ALPN http/1.1, trusting only the gateway's CA) through a CONNECT
    tunnel to localhost:port, reads until the gateway closes. Returns (bytes received,
    client port). Fails if the gateway keeps the connection open."""
    t = ProxyTunnel(gw.port, "localhost:%d" % port)
    assert t.status.startswith("HTTP/1.1 200"), t.status
    ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(t.sock, server_hostname="localhost")
    assert s.selected_alpn_protocol() == "http/1.1"
    s.sendall(data)
    s.settimeout(timeout or T(10))
    got = b""
    closed = False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            got += chunk
    except (ssl.SSLError, ConnectionResetError):
        closed = True
    except TimeoutError:
        pass
    finally:
        s.close()
    assert closed, "the gateway kept the connection open; got so far: %r" % got[:500]
    return got, t.local_port


def records_for(env, client_port):
    """The connection record of client_port and its request records."""
    rec = env.gw.wait_record(support.client_port_is(client_port))
    support.check_record_schema(rec)
    deadline = time.monotonic() + T(5)
    while True:
        reqs = [r for r in read_jsonl(env.reqlog) if r["conn"] == rec["id"]]
        if reqs or time.monotonic() > deadline:
            return rec, reqs
        time.sleep(0.05)


def tag():
    return uuid.uuid4().hex[:12]


# --- from the client ----------------------------------------------------------------------

# name: (request template ({path}: a path unique to the run), status, reason). The reason is
# the exact text the connection record, the request record and the reply body carry; where
# it names two rules, http-parser refused first and cannot tell which (docs/HTTP1.md).
CL_REASON = "Content-Length with Transfer-Encoding, or repeated Content-Length"
CLIENT_ATTACKS = {
    "cl_and_te": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                  400, CL_REASON),
    "te_and_cl": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 4\r\n\r\n0\r\n\r\n",
                  400, CL_REASON),
    "two_different_cl": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                         b"Content-Length: 6\r\n\r\nhello!",
                         400, CL_REASON),
    "two_equal_cl": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                     b"Content-Length: 5\r\n\r\nhello",
                     400, CL_REASON),
    "cl_list": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5, 5\r\n\r\nhello",
                400, "invalid Content-Length"),
    "invalid_header_name": (b"GET {path} HTTP/1.1\r\nHost: localhost\r\nBad Name: x\r\n\r\n",
                            400, "invalid header name"),
    "space_before_colon": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                           b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
                           400, "invalid header name"),
    "bare_cr_in_value": (b"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-A: a\rb\r\n\r\n",
                         400, "bare CR in head"),
    "bare_cr_line_end": (b"GET {path} HTTP/1.1\r\nHost: localhost\rX-A: b\r\n\r\n",
                         400, "bare CR in head"),
    "bare_lf_line_end": (b"GET {path} HTTP/1.1\nHost: localhost\n\n",
                         400, "bare LF in head"),
    "obs_fold": (b"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n b\r\n\r\n",
                 400, "obsolete line folding in a header"),
    "te_not_final_chunked": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                             b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
                             400, "Transfer-Encoding other than a final chunked"),
    "te_chunked_twice": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                         b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
                         400, "Transfer-Encoding other than a final chunked"),
    "te_in_http10": (b"POST {path} HTTP/1.0\r\nHost: localhost\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                     400, "Transfer-Encoding in an HTTP/1.0 message"),
    "double_space_request_line": (b"GET  {path} HTTP/1.1\r\nHost: localhost\r\n\r\n",
                                  400, "malformed request line"),
    "http_1_9": (b"GET {path} HTTP/1.9\r\nHost: localhost\r\n\r\n",
                 505, "unsupported HTTP version"),
    "no_host": (b"GET {path} HTTP/1.1\r\nUser-Agent: x\r\n\r\n", 400, "missing Host header"),
    "two_hosts": (b"GET {path} HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n",
                  400, "more than one Host header"),
    "head_too_large": (b"GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Big: "
                       + b"a" * (70 * 1024) + b"\r\n\r\n", 431, "head too large"),
    # Chunked bodies: head and body go in one TLS record, so the inspector sees them in one
    # read and the (otherwise valid) head is held back with the bad body.
    "chunk_ext_lf_smuggling": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                               b"Transfer-Encoding: chunked\r\n\r\n"
                               b"2;a\nGET {path}-smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n"
                               b"\r\nab\r\n0\r\n\r\n",
                               400, "control character in a chunk extension"),
    "chunk_size_trailing_space": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
                                  400, "invalid chunk extension"),
    "chunk_data_without_crlf": (b"POST {path} HTTP/1.1\r\nHost: localhost\r\n"
                                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
                                400, "chunk data not followed by CRLF"),
}


def test_a_valid_request_passes(env):
    """The control for the table below: the same harness with a well-formed request gets the
    origin's answer, and the origin logs the path."""
    path = "/control-" + tag()
    got, cport = exchange(env.gw, env.origin.port,
                          b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                          % path.encode())
    assert got.startswith(b"HTTP/1.1 404") and env.origin.marker.encode() in got, got[:300]
    rec, reqs = records_for(env, cport)
    assert "error" not in rec, rec
    assert [(r["path"], r["status"]) for r in reqs] == [(path, 404)], reqs
    assert path in env.origin.log_text()


@pytest.mark.parametrize("name", sorted(CLIENT_ATTACKS))
def test_client_attack_is_refused(env, name):
    template, status, reason = CLIENT_ATTACKS[name]
    path = "/attack-%s-%s" % (name, tag())
    got, cport = exchange(env.gw, env.origin.port, template.replace(b"{path}", path.encode()))
    check_reply(got, status, reason)
    assert env.origin.marker.encode() not in got, got[:500]
    rec, r = check_records(env, cport, status, reason)
    # The origin never saw the request, nor anything smuggled in it: its log names every
    # request line it read. (Request records of refused heads carry no method or path.)
    time.sleep(0.1)
    assert path not in env.origin.log_text(), env.origin.log_text()[-2000:]


def check_reply(got, status, reason):
    """The gateway's own reply: the status, Connection: close, a body naming the reason."""
    head, _, body = got.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), got[:500]
    assert b"\r\nConnection: close" in head, head
    assert body.endswith(b": %s\n" % reason.encode()), body


def check_records(env, client_port, status, reason):
    """The connection record's error is (http, reason); its one request record has the
    status the client got and the same reason. Returns both."""
    rec, reqs = records_for(env, client_port)
    assert rec["action"] == "intercept" and rec["alpn"] == "http/1.1", rec
    assert rec.get("error") == {"stage": "http", "reason": reason}, rec
    assert len(reqs) == 1, reqs
    r = reqs[0]
    assert r["status"] == status and r.get("error") == reason, r
    assert r["action"] == "refuse" and r["rule"] is None, r
    return rec, r


# --- from the origin ----------------------------------------------------------------------

# name: (raw response, reason); the client gets 502 instead, never the body "SMUGG".
SERVER_ATTACKS = {
    "cl_and_te": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nSMUGG\r\n0\r\n\r\n", CL_REASON),
    "two_different_cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
                         b"SMUGGL", CL_REASON),
    "invalid_header_name": (b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 5\r\n\r\nSMUGG",
                            "invalid header name"),
    "space_before_colon": (b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nSMUGG",
                           "invalid header name"),
    "bare_cr_in_value": (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 5\r\n\r\nSMUGG",
                         "bare CR in head"),
    "bare_cr_in_reason": (b"HTTP/1.1 200 O\rK\r\nContent-Length: 5\r\n\r\nSMUGG",
                          "bare CR in head"),
    "bare_lf_line_end": (b"HTTP/1.1 200 OK\nContent-Length: 5\n\nSMUGG", "bare LF in head"),
    "obs_fold": (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 5\r\n\r\nSMUGG",
                 "obsolete line folding in a header"),
    "te_gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nSMUGG",
                "Transfer-Encoding other than a final chunked"),
    "status_two_digits": (b"HTTP/1.1 20 OK\r\nContent-Length: 5\r\n\r\nSMUGG",
                          "malformed status line"),
    "http_1_9": (b"HTTP/1.9 200 OK\r\nContent-Length: 5\r\n\r\nSMUGG",
                 "unsupported HTTP version in the response"),
    "unrequested_101": (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        b"Connection: upgrade\r\n\r\nSMUGG",
                        "101 Switching Protocols without an Upgrade request"),
    "two_content_types": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                          b"Content-Type: application/x-evil\r\nContent-Length: 5\r\n\r\nSMUGG",
                          "conflicting Content-Type headers"),
}


def test_a_valid_response_passes(env):
    """The control for the table below: a well-formed response from the raw origin reaches
    the client whole (the raw origin keeps the connection open, so read just the response)."""
    name = "control-" + tag()
    (env.raw_dir / name).write_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                                     b"Content-Type: text/plain\r\n\r\nVALID")
    t = ProxyTunnel(env.gw.port, "localhost:%d" % env.raw.port)
    ctx = ssl.create_default_context(cafile=str(env.gw.ca_pem))
    ctx.set_alpn_protocols(["http/1.1"])
    s = ctx.wrap_socket(t.sock, server_hostname="localhost")
    s.sendall(b"GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % name.encode())
    s.settimeout(T(10))
    got = b""
    while not got.endswith(b"VALID"):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"\r\n\r\nVALID"), got
    rec, reqs = records_for(env, t.local_port)
    assert "error" not in rec, rec
    assert [(r["path"], r["status"], r["resp_bytes"]) for r in reqs] == [("/" + name, 200, 5)]


@pytest.mark.parametrize("name", sorted(SERVER_ATTACKS))
def test_server_attack_gets_the_client_a_502(env, name):
    response, reason = SERVER_ATTACKS[name]
    fname = "%s-%s" % (name, tag())
    (env.raw_dir / fname).write_bytes(response)
    got, cport = exchange(env.gw, env.raw.port,
                          b"GET /%s HTTP/1.1\r\nHost: localhost\r\n\r\n" % fname.encode())
    check_reply(got, 502, reason)
    assert b"SMUGG" not in got, got[:500]
    assert "raw request: GET /%s HTTP/1.1" % fname in env.raw.log_text()
    rec, r = check_records(env, cport, 502, reason)
    assert r["method"] == "GET" and r["path"] == "/" + fname, r
