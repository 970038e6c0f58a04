"""The app behind the sidecar in tests/sidecar.rs (Python standard library only).

Serves Say.Hello, Say.Call (which calls another service through the sidecar's /rpc), a health
check that the test switches, a durable event endpoint that fails on request, and a WebSocket
consumer of /subscribe. /control/* lets the test steer it and read what it received. Misbehaves
on request: Say.Slow answers late, Say.Big too much, Say.Close closes the connection after its
answer (`Connection: close`), Say.Hangup closes it without answering, /control/close-idle closes
every other connection (a server dropping idle keep-alive connections). Every path also answers under
/prefix (an app mounted below a base path).

Usage: python3 sidecar_app.py  (prints "LISTENING <port>" once it serves on 127.0.0.1)
"""

import base64
import json
import os
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, urlparse

STATE = {"healthy": True, "sidecar": None, "token": None, "events": [], "failed": set(), "conns": set()}
LOCK = threading.Lock()


def record(event):
    with LOCK:
        STATE["events"].append(event)


def sidecar_post(path, body):
    """POST JSON to the sidecar; (status, parsed body)."""
    req = urllib.request.Request(STATE["sidecar"] + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if STATE["token"]:
        req.add_header("Authorization", "Bearer " + STATE["token"])
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, json.loads(rsp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def websocket(path):
    """Opens a WebSocket to the sidecar; returns the connected socket after the 101."""
    url = urlparse(STATE["sidecar"])
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET %s HTTP/1.1" % path,
        "Host: %s:%d" % (url.hostname, url.port),
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: " + key,
        "Sec-WebSocket-Version: 13",
    ]
    if STATE["token"]:
        lines.append("Authorization: Bearer " + STATE["token"])
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise IOError("the sidecar closed the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n")[0]:
        raise IOError("handshake refused: " + head.decode(errors="replace"))
    sock.settimeout(None)
    return sock


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def send_frame(sock, opcode, payload):
    """A client frame: FIN, opcode, masked payload (clients must mask)."""
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def consume(sock):
    """Reads frames until the socket closes; records each event."""
    try:
        while True:
            b0, b1 = recv_exact(sock, 2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = int.from_bytes(recv_exact(sock, 2), "big")
            elif n == 127:
                n = int.from_bytes(recv_exact(sock, 8), "big")
            payload = recv_exact(sock, n)
            if opcode == 1:
                event = json.loads(payload)
                record({"via": "ws", "topic": event["topic"], "id": event["id"], "data": event["data"]})
            elif opcode == 9:
                send_frame(sock, 10, payload)
            elif opcode == 8:
                return
    except (EOFError, OSError):
        return


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response (headers and body together) and no Nagle delay: a response sent in
    # two small writes waits for the peer's delayed ACK (40 ms) on a keep-alive connection.
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            STATE["conns"].add(self.connection)

    def finish(self):
        with LOCK:
            STATE["conns"].discard(self.connection)
        super().finish()

    def close_others(self):
        """Closes every other connection, as a server closing its idle keep-alive ones does."""
        with LOCK:
            others = [c for c in STATE["conns"] if c is not self.connection]
        for c in others:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(others)

    def reply(self, status, body, close=False):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")  # and the server closes it after the answer
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The sidecar gave up on this answer (too slow, too big): expected here.
            self.close_connection = True

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    def unprefix(self):
        if self.path.startswith("/prefix/"):
            self.path = self.path[len("/prefix"):]

    def do_GET(self):
        self.unprefix()
        if self.path == "/.well-known/micro":
            self.reply(200, {"version": "1.0.0", "endpoints": ["Say.Hello", "Say.Call"], "metadata": {"lang": "python"}})
        elif self.path == "/health":
            self.reply(200 if STATE["healthy"] else 503, {"healthy": STATE["healthy"]})
        elif self.path == "/control/events":
            with LOCK:
                self.reply(200, {"events": list(STATE["events"])})
        else:
            self.reply(404, {"detail": "no such path " + self.path})

    def do_POST(self):
        self.unprefix()
        body = self.body()
        h = self.headers
        if self.path == "/Say.Slow":
            time.sleep((body or {}).get("secs", 2))
            return self.reply(200, {"slept": True})
        if self.path == "/Say.Big":
            return self.reply(200, "x" * (5 * 1024 * 1024))
        if self.path == "/Say.Close":
            # As an HTTP/1.0 server, or one shedding connections, does.
            return self.reply(200, {"closed": True}, close=True)
        if self.path == "/Say.Hangup":
            self.close_connection = True
            return
        if self.path == "/Say.Hello":
            name = (body or {}).get("name", "")
            if name == "":
                return self.reply(400, {"detail": "name is required"})
            if name == "conflict":
                return self.reply(409, {"detail": "that name is taken"})
            return self.reply(200, {
                "msg": "Hello " + name,
                "endpoint": h.get("Micro-Endpoint"),
                "caller": h.get("Micro-Caller"),
                "has_deadline": h.get("Micro-Deadline") is not None and h.get("Micro-Timeout") is not None,
                "traceparent": h.get("traceparent"),
                "tenant": h.get("Micro-Meta-Tenant"),
            })
        if self.path == "/Say.Call":
            status, answer = sidecar_post("/rpc", {"service": body["service"], "endpoint": "Say.Hello",
                                                   "request": {"name": body["name"]}})
            return self.reply(status, answer)
        if self.path == "/events/order":
            event_id = h.get("Micro-Id")
            fail = (body or {}).get("fail")
            record({"via": "http", "topic": h.get("Micro-Topic"), "id": event_id, "data": body})
            with LOCK:
                first = event_id not in STATE["failed"]
                STATE["failed"].add(event_id)
            if fail == "always" or (fail == "once" and first):
                return self.reply(500, {"detail": "failing on purpose"})
            return self.reply(200, {})
        if self.path == "/control/close-idle":
            return self.reply(200, {"closed": self.close_others()})
        if self.path == "/control/health":
            STATE["healthy"] = bool(body["ok"])
            return self.reply(200, {})
        if self.path == "/control/config":
            STATE["sidecar"], STATE["token"] = body["sidecar"], body.get("token")
            return self.reply(200, {})
        if self.path == "/control/subscribe":
            sock = websocket("/subscribe?topic=" + quote(body["topic"], safe=""))
            threading.Thread(target=consume, args=(sock,), daemon=True).start()
            return self.reply(200, {})
        if self.path == "/control/publish":
            status, answer = sidecar_post("/publish/" + body["topic"], body["event"])
            return self.reply(status, answer)
        self.reply(404, {"detail": "no such path " + self.path})


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("LISTENING %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
