#!/usr/bin/env python3
"""A backend for `wsguard serve` in plain Python (standard library only).

wsguard asks it over HTTP (the backend proxy, docs/PROXY.md):
  POST /wsguard/connect  at every handshake: allow the verified user, or refuse "mallory";
  POST /wsguard/rpc      the declared RPC `orders.create`: answer {"result": ...}.
Every request carries X-Wsguard-Secret (proxy.secret_env); anything without it is refused.

It talks back through the server API (docs/API.md) with `wsguard api ...` or curl; see README.md.
Run: WSGUARD_PROXY_SECRET=... python3 examples/backend.py [port]   (default 8000)
"""

import hmac
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WSGUARD_PROXY_SECRET"].encode()
ORDERS = []


def connect(request):
    user = request["identity"]["subject"]
    if user == "mallory":
        return False  # the handshake is refused: 403 rejected_by_hook
    return {"claims": {"plan": "pro"}}  # allowed, with a claim added from live data


def rpc(request):
    if request["method"] != "orders.create":
        return {"error": "no such method"}
    ORDERS.append({"user": request["identity"]["subject"], **request["payload"]})
    return {"result": {"order_id": len(ORDERS)}}


ROUTES = {"/wsguard/connect": connect, "/wsguard/rpc": rpc}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        route = ROUTES.get(self.path)
        secret = self.headers.get("X-Wsguard-Secret", "").encode()
        if route is None or not hmac.compare_digest(secret, SECRET):
            self.send_error(404)
            return
        length = int(self.headers.get("Content-Length", "0"))
        answer = json.dumps(route(json.loads(self.rfile.read(length)))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, fmt, *args):
        sys.stderr.write("backend: " + fmt % args + "\n")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
