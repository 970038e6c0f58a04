"""A Python service behind `micro sidecar`, standard library only.

It serves Say.Hello, relays to the Rust greeter through the sidecar (Say.Relay), publishes an
event on each greeting, reads those events back over the sidecar's WebSocket, and takes the
durable `order.>` events the sidecar delivers to POST /events/order. See README.md here.

    python3 greeter.py [--port 5000] [--sidecar http://127.0.0.1:8081]
"""

import argparse
import base64
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, urlparse

SIDECAR = "http://127.0.0.1:8081"
TOKEN = os.environ.get("MICRO_SIDECAR_TOKEN")  # the sidecar's --token, if it has one


def sidecar(path, body):
    """POST JSON to the sidecar: (HTTP status, JSON answer)."""
    req = urllib.request.Request(SIDECAR + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, json.loads(rsp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Greeter(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the sidecar reuses its connections
    # One write per response (headers and body together) and no Nagle delay: a response sent in
    # two small writes waits for the peer's delayed ACK (40 ms) on a keep-alive connection.
    wbufsize = -1
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/.well-known/micro":  # what the sidecar registers
            return self.reply(200, {"version": "1.0.0", "endpoints": ["Say.Hello", "Say.Relay"]})
        if self.path == "/health":
            return self.reply(200, {"ok": True})
        self.reply(404, {"detail": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/Say.Hello":
            name = body.get("name", "")
            if not name:
                return self.reply(400, {"detail": "name is required"})  # the caller gets code 400
            sidecar("/publish/greeting.said", {"name": name})
            return self.reply(200, {"msg": "Hello %s, from Python" % name,
                                    "caller": self.headers.get("Micro-Caller")})
        if self.path == "/Say.Relay":  # Python -> sidecar -> the Rust greeter
            status, answer = sidecar("/rpc", {"service": "go.micro.srv.greeter", "endpoint": "Say.Hello",
                                              "request": {"name": body.get("name", "")}})
            return self.reply(status, answer)
        if self.path == "/events/order":  # a durable event: 2xx acks, anything else retries
            print("order event", self.headers.get("Micro-Id"), body, flush=True)
            return self.reply(200, {})
        self.reply(404, {"detail": "not found"})


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def watch(topic):
    """Prints the events of `topic` from the sidecar's WebSocket (a minimal RFC 6455 client)."""
    while True:
        try:
            url = urlparse(SIDECAR)
            sock = socket.create_connection((url.hostname, url.port))
            key = base64.b64encode(os.urandom(16)).decode()
            head = ("GET /subscribe?topic=%s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                    % (quote(topic, safe=""), url.hostname, url.port, key))
            if TOKEN:
                head += "Authorization: Bearer %s\r\n" % TOKEN
            sock.sendall((head + "\r\n").encode())
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += recv_exact(sock, 1)
            if b" 101 " not in answer.split(b"\r\n")[0]:
                raise IOError(answer.decode(errors="replace"))
            while True:
                b0, b1 = recv_exact(sock, 2)
                n = b1 & 0x7F
                if n == 126:
                    n = int.from_bytes(recv_exact(sock, 2), "big")
                elif n == 127:
                    n = int.from_bytes(recv_exact(sock, 8), "big")
                payload = recv_exact(sock, n)
                if b0 & 0x0F == 1:  # a text frame: one event
                    event = json.loads(payload)
                    print("event", event["topic"], event["data"], flush=True)
                elif b0 & 0x0F == 8:  # closed
                    break
        except (OSError, EOFError) as e:
            print("websocket:", e, "- retrying", flush=True)
        time.sleep(1)


def main():
    global SIDECAR
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--sidecar", default=SIDECAR)
    args = parser.parse_args()
    SIDECAR = args.sidecar.rstrip("/")
    threading.Thread(target=watch, args=("greeting.>",), daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Greeter)
    print("serving on http://127.0.0.1:%d" % args.port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
