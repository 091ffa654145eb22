"""WebSocket through the gateway: an `Upgrade: websocket` exchange inside an intercepted
connection whose HTTP is inspected (--request-log) is answered 101 by the origin, logged as
upgraded, and from then on relayed as a tunnel: text and binary messages of every size come
back from a real WebSocket echo server (Debian's python3-websockets)."""
import asyncio
import json
import os
import ssl
import time

import pytest

import support
from support import T, ProxyTunnel

websockets = pytest.importorskip("websockets", reason="Debian package python3-websockets")


def read_jsonl(path):
    try:
        data = path.read_text(errors="replace")
    except OSError:
        return []
    return [json.loads(l) for l in data.split("\n")[:-1] if l.strip()]


def wait_jsonl(path, pred, n=1, timeout=None):
    deadline = time.monotonic() + (timeout or T(10))
    while True:
        recs = [r for r in read_jsonl(path) if pred(r)]
        if len(recs) >= n or time.monotonic() > deadline:
            assert len(recs) >= n, "wanted %d record(s) in %s, got:\n%s" % (
                n, path.name, "\n".join(json.dumps(r) for r in read_jsonl(path)[-10:]))
            return recs
        time.sleep(0.05)


def client_ctx(gw):
    """Trusts only the gateway's CA and offers http/1.1: the connection must be intercepted
    and inspected as HTTP/1.1 for the test to mean anything."""
    ctx = ssl.create_default_context(cafile=str(gw.ca_pem))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


MESSAGES = [
    "hello through sluice",
    b"\x00\x01\x02binary\xff" * 3,
    "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    os.urandom(200 * 1024),                # > 64 KiB: a 64-bit frame length
    "\u00e9t\u00e9 " * 30000,              # a long text message (UTF-8, ~180 KB)
    os.urandom(70000),
    b"",
    "last",
]


async def ws_echo(sock, port, ctx, messages):
    """WebSocket client on an already-open CONNECT tunnel: TLS to the gateway, then the
    upgrade; sends each message and collects the echoes, then a burst of 200 pipelined ones.
    No permessage-deflate: the frames carry the messages as they are, so the record's byte
    counts can be checked. Returns (echoes, response headers, the peer certificate's issuer)."""
    async with websockets.connect("wss://localhost:%d/echo" % port, sock=sock, ssl=ctx,
                                  server_hostname="localhost", max_size=16 << 20,
                                  compression=None, open_timeout=T(10),
                                  close_timeout=T(5)) as ws:
        peer = ws.transport.get_extra_info("peercert")
        issuer = dict(x[0] for x in peer["issuer"])
        echoes = []
        for m in messages:
            await ws.send(m)
            echoes.append(await asyncio.wait_for(ws.recv(), T(10)))
        # Pipelined: many small messages in flight before reading any echo.
        burst = ["m%d" % i for i in range(200)]
        for m in burst:
            await ws.send(m)
        got = [await asyncio.wait_for(ws.recv(), T(10)) for _ in burst]
        assert got == burst
        return echoes, ws.response_headers, issuer


def ws_session(sluice, origin, tmp_path, messages):
    """An inspecting gateway (--request-log), a WebSocket echo origin, one WebSocket session
    through the gateway's explicit proxy. Returns (gateway, origin, echoes, response headers,
    issuer of the certificate the client saw, the CONNECT tunnel's client port, the request
    log's path)."""
    o = origin(kind="ws-echo")
    reqlog = tmp_path / "requests.jsonl"
    gw = sluice("--request-log", reqlog)
    t = ProxyTunnel(gw.port, "localhost:%d" % o.port)
    assert t.status.startswith("HTTP/1.1 200"), t.status
    try:
        echoes, headers, issuer = asyncio.run(asyncio.wait_for(
            ws_echo(t.sock, o.port, client_ctx(gw), messages), T(60)))
    finally:
        t.close()
    return gw, o, echoes, headers, issuer, t.local_port, reqlog


def upgrade_record(gw, reqlog, client_port):
    """The connection record of client_port and its only request record (waits a little
    longer to be sure no second one follows)."""
    rec = gw.wait_record(support.client_port_is(client_port))
    support.check_record_schema(rec)
    wait_jsonl(reqlog, lambda r: r["conn"] == rec["id"])
    time.sleep(0.2)
    reqs = [r for r in read_jsonl(reqlog) if r["conn"] == rec["id"]]
    assert len(reqs) == 1, reqs
    return rec, reqs[0]


def test_websocket_echo_through_the_gateway(sluice, origin, tmp_path):
    gw, o, echoes, headers, issuer, cport, reqlog = ws_session(sluice, origin, tmp_path,
                                                                MESSAGES)
    assert headers.get("Upgrade", "").lower() == "websocket", headers
    # The client trusted only the gateway's CA: the connection was intercepted.
    assert "CN=%s," % issuer.get("commonName") in support.x509_name(str(gw.ca_pem), "subject"), \
        issuer
    assert len(echoes) == len(MESSAGES)
    for sent, back in zip(MESSAGES, echoes):
        assert type(back) is type(sent) and back == sent, (type(sent), len(sent), len(back))

    sent_bytes = sum(len(m.encode() if isinstance(m, str) else m) for m in MESSAGES)
    rec, r = upgrade_record(gw, reqlog, cport)
    assert rec["action"] == "intercept" and rec["alpn"] == "http/1.1", rec
    assert "error" not in rec, rec
    # Every frame crossed the gateway both ways.
    assert rec["bytes_up"] > sent_bytes and rec["bytes_down"] > sent_bytes, rec

    # One request record: the upgrade. The frames after the 101 (one of them an HTTP request
    # head with a smuggling pattern) were tunnelled, not parsed as requests.
    assert r["conn"] == rec["id"] and r["stream"] == 1, r
    assert r["method"] == "GET" and r["path"] == "/echo" and r["http"] == "1.1", r
    assert r["authority"] == "localhost:%d" % o.port and r["scheme"] == "https", r
    assert r["status"] == 101 and r["action"] == "allow" and "error" not in r, r
    assert r.get("upgrade") == "websocket", r
    assert "websocket /echo websocket" in o.log_text().lower(), o.log_text()[-2000:]


NO_WEBSOCKETS = """
policy:
  default: intercept
  http:
    - name: no-websockets
      header: {name: Upgrade, value_regex: "(?i)websocket"}
      action: block
"""


def test_an_http_rule_can_refuse_the_upgrade(sluice, origin, tmp_path):
    """The request hook sees the Upgrade header: a rule blocks the handshake with a 403, the
    origin never sees it, and the record names the rule and no upgrade."""
    o = origin(kind="ws-echo")
    reqlog = tmp_path / "requests.jsonl"
    cfg = tmp_path / "policy.yaml"
    cfg.write_text(NO_WEBSOCKETS)
    gw = sluice("--config", cfg, "--request-log", reqlog)
    t = ProxyTunnel(gw.port, "localhost:%d" % o.port)
    assert t.status.startswith("HTTP/1.1 200"), t.status
    try:
        with pytest.raises(websockets.InvalidStatusCode) as e:
            asyncio.run(asyncio.wait_for(ws_echo(t.sock, o.port, client_ctx(gw), ["x"]),
                                         T(30)))
    finally:
        t.close()
    assert e.value.status_code == 403, e.value
    rec, r = upgrade_record(gw, reqlog, t.local_port)
    assert r["status"] == 403 and r["action"] == "block" and r["rule"] == "no-websockets", r
    assert "upgrade" not in r, r
    assert "websocket /echo" not in o.log_text().lower(), o.log_text()[-2000:]
