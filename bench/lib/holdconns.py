"""Holds TLS connections open through the proxy, for the idle-memory workload.

Runs in the client netns and takes commands on standard input, one per line, answering each
with one JSON line on standard output:
    open N SECONDS  open N more connections (full TLS handshake, verified against --cafile,
                    nothing sent after it), giving up after SECONDS
    probe K         look at every held connection: closed ones are counted; then send a
                    request on K of them and check the answers
    quit
"""
import argparse
import json
import random
import selectors
import socket
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor


class Holder:
    def __init__(self, addr, host, cafile, parallel):
        self.addr, self.host, self.parallel = addr, host, parallel
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.ctx.options |= ssl.OP_NO_TICKET
        self.conns = []

    def _open_one(self, deadline):
        if time.monotonic() > deadline:
            return None, "time budget spent"
        try:
            raw = socket.create_connection((self.addr, 443), timeout=30)
            return self.ctx.wrap_socket(raw, server_hostname=self.host), None
        except (OSError, ssl.SSLError) as e:
            return None, f"{type(e).__name__}: {e}"

    def open(self, n, budget):
        t0 = time.monotonic()
        deadline = t0 + budget
        errors, first_error = 0, None
        with ThreadPoolExecutor(self.parallel) as pool:
            for conn, err in pool.map(lambda _: self._open_one(deadline), range(n)):
                if conn:
                    self.conns.append(conn)
                else:
                    errors += 1
                    first_error = first_error or err
        return {"held": len(self.conns), "errors": errors, "first_error": first_error,
                "seconds": round(time.monotonic() - t0, 2)}

    def _closed(self, conn):
        """True when the peer closed or reset: readable with no application data."""
        conn.setblocking(False)
        try:
            return conn.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False  # only TLS records without data (tickets): still open
        except (OSError, ssl.SSLError):
            return True
        finally:
            conn.setblocking(True)

    def probe(self, k):
        sel = selectors.DefaultSelector()
        for c in self.conns:
            sel.register(c, selectors.EVENT_READ, c)
        closed = sum(1 for key, _ in sel.select(timeout=0) if self._closed(key.data))
        sel.close()
        req = f"GET /1k HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode()
        ok = 0
        for c in random.sample(self.conns, min(k, len(self.conns))):
            try:
                c.settimeout(10)
                c.sendall(req)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(body) < length:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                ok += head.startswith(b"HTTP/1.1 200") and len(body) == length
            except (OSError, ssl.SSLError, StopIteration, ValueError):
                pass
        return {"held": len(self.conns), "closed": closed, "probed": min(k, len(self.conns)),
                "probe_ok": ok}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--parallel", type=int, default=32)
    args = ap.parse_args()
    holder = Holder(args.addr, args.host, args.cafile, args.parallel)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "open":
            out = holder.open(int(words[1]), float(words[2]))
        elif words[0] == "probe":
            out = holder.probe(int(words[1]))
        else:
            break
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
