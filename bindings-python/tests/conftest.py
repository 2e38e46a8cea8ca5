"""Shared fixtures: a per-test HMAC secret file, a valid configuration, real HS256 tokens (PyJWT)
and a small synchronous WebSocket client (the `websockets` package) over loopback."""

from __future__ import annotations

import contextlib
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import jwt
import pytest
from websockets.sync.client import ClientConnection, connect

import wsguard

ISSUER = "https://issuer.test"
AUDIENCE = "wsguard"
TIMEOUT = 5.0

#: Declared RPC methods the tests register handlers for.
RPC_METHODS = ["orders.create", "orders.async", "orders.fail", "orders.slow", "orders.slow_async", "orders.none"]


@pytest.fixture
def secret(tmp_path: Path) -> str:
    return secrets.token_hex(24)  # 48 bytes of text


@pytest.fixture
def secret_file(tmp_path: Path, secret: str) -> Path:
    path = tmp_path / "hmac.secret"
    path.write_text(secret + "\n")
    return path


@pytest.fixture
def config(secret_file: Path) -> Dict[str, Any]:
    return {
        "server": {"listen": "127.0.0.1:0", "shutdown_grace_secs": 1.0},
        "origins": {"allow_missing": True},
        "auth": {"hmac_secret_file": str(secret_file), "issuer": ISSUER, "audience": AUDIENCE},
        "limits": {"rpc_timeout_secs": 1.0},
        "hooks": {"timeout_secs": 1.0},
        "channels": [
            {"pattern": "news", "subscribe": {}, "publish": {}},
            {"pattern": "secret", "subscribe": {}, "publish": {}},
        ],
        "rpc": [{"method": m} for m in RPC_METHODS],
    }


Mint = Callable[..., str]


@pytest.fixture
def mint(secret: str) -> Mint:
    """`mint(sub="alice", **claims)`: a valid HS256 token for the test configuration."""

    def make(sub: str = "alice", **claims: Any) -> str:
        now = int(time.time())
        body: Dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        body.update(claims)
        return jwt.encode(body, secret, algorithm="HS256")

    return make


@pytest.fixture
def server(config: Dict[str, Any]) -> Iterator[wsguard.Server]:
    """A started server (synchronous start), stopped after the test."""
    srv = wsguard.Server(config)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop(grace_secs=0.5)


class Client:
    """A synchronous wsguard client: one JSON object per text frame."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._next_id = 0

    def send(self, frame: Dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def recv(self, timeout: float = TIMEOUT) -> Dict[str, Any]:
        frame: Dict[str, Any] = json.loads(self.ws.recv(timeout=timeout))
        return frame

    def request(self, action: str, timeout: float = TIMEOUT, **fields: Any) -> Dict[str, Any]:
        """Sends a frame with a fresh id and returns the reply with that id."""
        self._next_id += 1
        self.send({"action": action, "id": self._next_id, **fields})
        while True:
            reply = self.recv(timeout)
            if reply.get("id") == self._next_id:
                return reply

    def close(self) -> None:
        self.ws.close()


def url(server: wsguard.Server) -> str:
    host, port = server.address
    return f"ws://{host}:{port}/ws"


@pytest.fixture
def client(server: wsguard.Server, mint: Mint) -> Iterator[Callable[..., Client]]:
    """`client(token=None, sub="alice")`: connects to `server`; closed after the test."""
    with contextlib.ExitStack() as opened:

        def open_client(token: Optional[str] = None, sub: str = "alice") -> Client:
            ws = opened.enter_context(
                connect(
                    url(server),
                    additional_headers={"Authorization": f"Bearer {token or mint(sub)}"},
                    open_timeout=TIMEOUT,
                    proxy=None,
                )
            )
            return Client(ws)

        yield open_client
