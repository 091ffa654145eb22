#!/usr/bin/python3
"""origin: real test servers behind sluice — HTTPS or plain HTTP origin, TCP echo, banner.

Run as a subprocess by the tests (stdlib only). It binds its listening socket(s), then writes
{"port": N} to --ready-file, and serves until SIGTERM.

HTTP routes (HTTP/1.1, keep-alive, Content-Length always set):
  /              "hello from origin\n" + the marker line
  /bytes/N       N deterministic bytes (support.PATTERN_BLOCK repeated), streamed in 64 KiB
  /slow/N?chunk=C&delay=D   the same N bytes, C bytes (default 64 KiB) every D seconds
  /echo          POST: the request body back
  /headers       the request headers as text
  /info          JSON: {"alpn", "tls_version", "cipher", "sni", "marker"} of this connection
  /enc/CODING/NAME, POST /sink   encoded text bodies and an upload sink, for test_body_rules.py
                 (see the block at the end of this file)
Modes: --plain (HTTP), --tcp-echo (echo every byte), --banner (server speaks first:
"220 <marker> banner ready", then "250 echo <line>" per line, "221 bye" on QUIT).
TLS modes for test_websocket.py and test_http1_framing.py (ALPN http/1.1):
  --ws-echo      a WebSocket server (Debian's python3-websockets) that echoes every message
  --raw-dir DIR  reads one request head and answers GET /NAME with the bytes of DIR/NAME as
                 they are (any head, valid or not), then waits for the client to close
"""
import argparse
import json
import os
import signal
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import PATTERN_BLOCK  # noqa: E402

TLS_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
MAX_ECHO = 256 << 20


def log(msg):
    sys.stderr.write("%s origin[%d]: %s\n" % (time.strftime("%H:%M:%S"), os.getpid(), msg))
    sys.stderr.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sluice-test-origin"
    timeout = 60

    def log_message(self, fmt, *args):
        log("%s %s" % (self.client_address[0], fmt % args))

    def _send(self, code, body, ctype="text/plain"):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _stream(self, n, chunk, delay):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        sent = 0
        block = PATTERN_BLOCK
        while sent < n:
            k = min(chunk, n - sent)
            # Byte i of the body is PATTERN_BLOCK[i % 64 KiB], whatever the chunk size.
            off = sent % len(block)
            if off == 0 and k == len(block):
                piece = block
            else:
                piece = (block[off:] + block * (k // len(block) + 1))[:k]
            self.wfile.write(piece)
            sent += k
            if delay and sent < n:
                self.wfile.flush()
                time.sleep(delay)
        self.wfile.flush()

    def do_GET(self):
        u = urlsplit(self.path)
        path, q = u.path, parse_qs(u.query)
        marker = self.server.marker
        if path == "/":
            self._send(200, ("hello from origin\n%s\n" % marker).encode())
        elif path.startswith("/bytes/"):
            self._stream(int(path[len("/bytes/"):]), 65536, 0)
        elif path.startswith("/slow/"):
            chunk = int(q.get("chunk", ["65536"])[0])
            delay = float(q.get("delay", ["0.1"])[0])
            self._stream(int(path[len("/slow/"):]), chunk, delay)
        elif path == "/headers":
            self._send(200, str(self.headers).encode())
        elif path == "/info":
            c = self.connection
            info = {"marker": marker, "alpn": None, "tls_version": None, "cipher": None,
                    "sni": getattr(c, "sluice_sni", None)}
            if isinstance(c, ssl.SSLSocket):
                info.update(alpn=c.selected_alpn_protocol(), tls_version=c.version(),
                            cipher=c.cipher()[0])
            self._send(200, json.dumps(info).encode(), "application/json")
        elif path.startswith("/enc/"):  # body rules: see the block at the end of this file
            body_rules_get(self, path, q)
        else:
            self._send(404, ("no such path %s\n%s\n" % (path, marker)).encode())

    do_HEAD = do_GET

    def do_POST(self):
        path = urlsplit(self.path).path
        if path == "/sink":  # body rules: see the block at the end of this file
            body_rules_sink(self)
            return
        if path != "/echo":
            self._send(404, b"no such path\n")
            return
        n = int(self.headers.get("Content-Length") or -1)
        if n < 0 or n > MAX_ECHO:
            self._send(411, b"Content-Length required (at most 256 MiB)\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        left = n
        while left:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            self.wfile.write(chunk)
            left -= len(chunk)
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, family, ctx, marker):
        self.address_family = family
        self.ctx = ctx
        self.marker = marker
        super().__init__(addr, Handler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        socketserver.TCPServer.server_bind(self)  # skip HTTPServer's getfqdn()
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        # The TLS handshake runs here, in the connection's own thread: a client that stalls
        # mid-handshake must not block the accept loop.
        conn = request
        if self.ctx is not None:
            request.settimeout(30)
            try:
                conn = self.ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log("TLS handshake from %s failed: %s" % (client_address[0], e))
                return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            if conn is not request:
                try:
                    conn.close()
                except OSError:
                    pass

    def handle_error(self, request, client_address):
        log("error with %s: %s" % (client_address[0], sys.exc_info()[1]))


class RawServer(socketserver.ThreadingTCPServer):
    """Plain TCP servers: echo, or a banner protocol where the server speaks first."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, family, kind, marker):
        self.address_family = family
        self.kind = kind
        self.marker = marker
        super().__init__(addr, RawHandler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def handle_error(self, request, client_address):
        log("error with %s: %s" % (client_address[0], sys.exc_info()[1]))


class RawHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        s.settimeout(60)
        if self.server.kind == "tcp-echo":
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
            return
        s.sendall(("220 %s banner ready\r\n" % self.server.marker).encode())
        f = s.makefile("rb")
        for line in f:
            line = line.rstrip(b"\r\n")
            if line.upper() == b"QUIT":
                s.sendall(b"221 bye\r\n")
                break
            s.sendall(b"250 echo " + line + b"\r\n")


def make_ctx(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Before load_cert_chain: Debian's default SECLEVEL 2 refuses RSA-1024 keys, SHA-1
    # signatures and TLS 1.0. The origin must be able to serve all of them; the client
    # (sluice) is the one that must refuse.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = (TLS_VERSIONS[args.tls_min] if args.tls_min
                           else ssl.TLSVersion.MINIMUM_SUPPORTED)
    if args.tls_max:
        ctx.maximum_version = TLS_VERSIONS[args.tls_max]
        if args.tls_max in ("1.0", "1.1") and not args.tls_min:
            ctx.minimum_version = TLS_VERSIONS[args.tls_max]
    ctx.load_cert_chain(args.cert, args.key)
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))

    def on_sni(sslsock, name, _ctx):
        try:
            sslsock.sluice_sni = name
        except AttributeError:
            pass
        return None

    ctx.sni_callback = on_sni
    return ctx


def write_ready(ready_file, port):
    tmp = ready_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"port": port}, f)
    os.rename(tmp, ready_file)


def bind_all(args, make):
    """Binds one server per --host on one common port; returns the servers."""
    hosts = args.host or ["127.0.0.1"]
    for attempt in range(20):
        servers = []
        port = args.port
        try:
            for h in hosts:
                fam = socket.AF_INET6 if ":" in h else socket.AF_INET
                srv = make((h, port), fam)
                port = srv.server_address[1]
                servers.append(srv)
            return servers
        except OSError:
            for s in servers:
                s.server_close()
            if args.port:
                raise
    raise SystemExit("origin: could not bind %s on one port" % hosts)


# ---------------------------------------------------------------------------------------
# WebSocket echo and raw-response modes (test_websocket.py, test_http1_framing.py)
# ---------------------------------------------------------------------------------------

def serve_ws_echo(args, ready):
    """A TLS WebSocket server on args' hosts and one port that echoes each message (text as
    text, binary as binary); messages up to 16 MiB. Runs until SIGTERM."""
    import asyncio
    import websockets  # Debian's python3-websockets; imported here: other modes are stdlib only

    ctx = make_ctx(args)

    async def echo(ws):
        log("websocket %s %s" % (ws.path, ws.request_headers.get("Upgrade")))
        try:
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        servers, port = [], args.port
        for h in args.host or ["127.0.0.1"]:
            srv = await websockets.serve(echo, h, port, ssl=ctx, max_size=16 << 20)
            port = srv.sockets[0].getsockname()[1]
            servers.append(srv)
        ready(port)
        await stop.wait()
        for srv in servers:
            srv.close()
            await srv.wait_closed()

    asyncio.run(run())


class RawResponseHandler(socketserver.BaseRequestHandler):
    """Reads one request head, logs its request line ("raw request: GET /x HTTP/1.1"),
    sends the file named by the path's last segment as it is, then reads until the client
    closes (at most 30 s): the gateway's verdict must come from the bytes, not a close."""

    def handle(self):
        s = self.request
        s.settimeout(30)
        try:
            s = self.server.ctx.wrap_socket(s, server_side=True)
        except (ssl.SSLError, OSError) as e:
            log("TLS handshake from %s failed: %s" % (self.client_address[0], e))
            return
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = s.recv(65536)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0]
            log("raw request: %s" % line.decode(errors="replace"))
            parts = line.split(b" ")
            name = os.path.basename(parts[1].decode(errors="replace")) if len(parts) > 1 else ""
            path = os.path.join(self.server.raw_dir, name)
            if not name or not os.path.isfile(path):
                s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            else:
                with open(path, "rb") as f:
                    s.sendall(f.read())
            while s.recv(65536):
                pass
        except (ssl.SSLError, OSError):
            pass
        finally:
            s.close()


class RawResponseServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, family, ctx, raw_dir):
        self.address_family = family
        self.ctx = ctx
        self.raw_dir = raw_dir
        super().__init__(addr, RawResponseHandler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def handle_error(self, request, client_address):
        log("error with %s: %s" % (client_address[0], sys.exc_info()[1]))

# --- end of the WebSocket echo and raw-response modes ------------------------------------


# ---------------------------------------------------------------------------------------
# Body rules (test_body_rules.py): encoded bodies, and a sink for uploads
#   GET /enc/CODING/NAME?size=N&kw=K&pos=P&ctype=T&chunked=1&delay=D
#       N bytes of text (BODY_LINE repeated) with K written at offset P (default: none; kwx=HEX
#       gives K in hex, so that it is not in the URL),
#       encoded with CODING (identity, gzip, deflate, deflate-raw, br, or a stack such as
#       "gzip,br", applied in that order) and sent with Content-Encoding, Content-Type T
#       (default text/html), Content-Length or chunked; X-Body-SHA256: the encoded bytes' hash,
#       X-Plain-SHA256: the decoded text's. delay: seconds between 16 KiB writes.
#   POST /sink  reads the body (Content-Length or chunked) and answers its length and SHA-256
# ---------------------------------------------------------------------------------------

BODY_LINE = b"lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod.\n"


def body_rules_text(size, kw, pos):
    text = bytearray((BODY_LINE * (size // len(BODY_LINE) + 1))[:size])
    if kw:
        text[pos:pos + len(kw)] = kw
    return bytes(text[:size])


def body_rules_encode(data, coding):
    import zlib
    for c in coding.split(","):
        c = c.strip()
        if c in ("gzip", "x-gzip"):
            z = zlib.compressobj(6, zlib.DEFLATED, 16 + 15)
            data = z.compress(data) + z.flush()
        elif c == "deflate":
            data = zlib.compress(data, 6)
        elif c == "deflate-raw":
            z = zlib.compressobj(6, zlib.DEFLATED, -15)
            data = z.compress(data) + z.flush()
        elif c == "br":
            import brotli  # Debian's python3-brotli
            data = brotli.compress(data, quality=5)
        elif c == "zstd":
            import subprocess  # Debian's zstd command: Python has no zstd module here
            data = subprocess.run(["zstd", "-q", "-c", "-3"], input=data, check=True,
                                  stdout=subprocess.PIPE).stdout
    return data


def body_rules_get(h, path, q):
    import hashlib
    parts = path.split("/")
    coding = parts[2] if len(parts) > 2 else "identity"
    size = int(q.get("size", ["4096"])[0])
    kw = bytes.fromhex(q["kwx"][0]) if "kwx" in q else q.get("kw", [""])[0].encode()
    pos = int(q.get("pos", [str(size // 2)])[0])
    plain = body_rules_text(size, kw, pos)
    body = body_rules_encode(plain, coding) if coding != "identity" else plain
    chunked = q.get("chunked", ["0"])[0] == "1"
    delay = float(q.get("delay", ["0"])[0])
    h.send_response(200)
    h.send_header("Content-Type", q.get("ctype", ["text/html"])[0])
    if coding != "identity":
        h.send_header("Content-Encoding", coding.replace("deflate-raw", "deflate"))
    h.send_header("X-Body-SHA256", hashlib.sha256(body).hexdigest())
    h.send_header("X-Plain-SHA256", hashlib.sha256(plain).hexdigest())
    if chunked:
        h.send_header("Transfer-Encoding", "chunked")
    else:
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command == "HEAD":
        return
    for off in range(0, len(body), 16384):
        piece = body[off:off + 16384]
        h.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        h.wfile.flush()
        if delay:
            time.sleep(delay)
    if chunked:
        h.wfile.write(b"0\r\n\r\n")
    h.wfile.flush()


def body_rules_sink(h):
    import hashlib
    digest, n = hashlib.sha256(), 0
    if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
        while True:
            size = int(h.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunk = h.rfile.read(size)
            h.rfile.readline()
            digest.update(chunk)
            n += len(chunk)
    else:
        left = int(h.headers.get("Content-Length") or 0)
        while left:
            chunk = h.rfile.read(min(left, 65536))
            if not chunk:
                break
            digest.update(chunk)
            n += len(chunk)
            left -= len(chunk)
    h._send(200, json.dumps({"bytes": n, "sha256": digest.hexdigest()}).encode(),
            "application/json")

# --- end of the body rules routes ----------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", action="append", help="address to listen on (repeatable)")
    ap.add_argument("--port", type=int, default=0, help="0: pick a free port")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--tls-max", choices=sorted(TLS_VERSIONS))
    ap.add_argument("--tls-min", choices=sorted(TLS_VERSIONS))
    ap.add_argument("--alpn", help="comma-separated protocols the origin accepts")
    ap.add_argument("--plain", action="store_true", help="plain HTTP, no TLS")
    ap.add_argument("--tcp-echo", action="store_true")
    ap.add_argument("--banner", action="store_true")
    ap.add_argument("--marker", default="ORIGIN-MARKER")
    ap.add_argument("--ready-file", required=True)
    ap.add_argument("--ws-echo", action="store_true", help="TLS WebSocket echo server")
    ap.add_argument("--raw-dir", help="TLS server answering GET /NAME with DIR/NAME's bytes")
    args = ap.parse_args()

    if args.ws_echo:
        serve_ws_echo(args, lambda port: write_ready(args.ready_file, port))
        return
    if args.tcp_echo or args.banner:
        kind = "tcp-echo" if args.tcp_echo else "banner"
        servers = bind_all(args, lambda a, f: RawServer(a, f, kind, args.marker))
    elif args.raw_dir:
        ctx = make_ctx(args)
        servers = bind_all(args, lambda a, f: RawResponseServer(a, f, ctx, args.raw_dir))
    else:
        ctx = None if args.plain else make_ctx(args)
        servers = bind_all(args, lambda a, f: Server(a, f, ctx, args.marker))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    write_ready(args.ready_file, servers[0].server_address[1])
    log("listening on %s port %d" % ([s.server_address[0] for s in servers],
                                     servers[0].server_address[1]))
    while not stop.wait(0.5):
        pass
    for s in servers:
        s.shutdown()
        s.server_close()


if __name__ == "__main__":
    main()
