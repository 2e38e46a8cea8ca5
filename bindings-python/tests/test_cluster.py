"""Two Python-hosted servers joined through the machine's Redis and NATS: the binding passes the
same `[cluster]` config to the same core, and publications, revocations and quotas cross nodes.
Skipped (with the reason) without the brokers, unless WSGUARD_REQUIRE_BROKERS=1."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import time
import uuid
from typing import Any, Dict, Iterator, List

import pytest
from conftest import Client, Mint, url
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import wsguard

BROKERS = {"redis": ("127.0.0.1", 6379), "nats": ("127.0.0.1", 4222)}


def reachable(kind: str) -> bool:
    try:
        with socket.create_connection(BROKERS[kind], timeout=1):
            return True
    except OSError:
        return False


def require(kind: str) -> None:
    if reachable(kind):
        return
    why = f"{kind} is not reachable at {BROKERS[kind][0]}:{BROKERS[kind][1]}"
    if os.environ.get("WSGUARD_REQUIRE_BROKERS") == "1":
        pytest.fail(f"{why}, and WSGUARD_REQUIRE_BROKERS=1 forbids skipping")
    pytest.skip(why)


@pytest.fixture
def nodes(config: Dict[str, Any], request: Any) -> Iterator[List[wsguard.Server]]:
    kind = request.param
    require(kind)
    host, port = BROKERS[kind]
    prefix = "py-" + uuid.uuid4().hex[:12]
    started = []
    for node_id in ("a", "b"):
        c = copy.deepcopy(config)
        c["limits"]["connections_per_user"] = 1
        c["observability"] = {"metrics_listen": ""}
        c["cluster"] = {"broker": kind, "url": f"{kind}://{host}:{port}", "node_id": node_id, "channel_prefix": prefix}
        if kind == "nats":
            # NATS carries the fan-out; the per-user quota needs Redis.
            c["cluster"]["quota_redis_url"] = "redis://127.0.0.1:6379"
            require("redis")
        srv = wsguard.Server(c)
        srv.start()
        started.append(srv)
    try:
        yield started
    finally:
        for srv in started:
            srv.stop(grace_secs=0.5)


OPENED = contextlib.ExitStack()


def open_client(server: wsguard.Server, token: str) -> Client:
    """Connects; the connection is closed at the end of the test module at the latest."""
    ws = OPENED.enter_context(
        connect(url(server), additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=5, proxy=None)
    )
    return Client(ws)


@pytest.fixture(autouse=True)
def close_clients() -> Iterator[None]:
    yield
    OPENED.close()


def wait_connected(server: wsguard.Server) -> None:
    eventually(lambda: server.stats()["broker_connected"], "the broker connection")


def eventually(check: Any, what: str) -> None:
    deadline = time.monotonic() + 5
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen in time"
        time.sleep(0.05)


@pytest.mark.parametrize("nodes", ["redis", "nats"], indirect=True)
def test_publish_revoke_and_quota_cross_nodes(nodes: List[wsguard.Server], mint: Mint) -> None:
    a, b = nodes
    wait_connected(a)
    wait_connected(b)
    subscriber = open_client(a, mint("alice"))
    # The subscription is acknowledged once the broker delivers the channel to node A.
    assert subscriber.request("subscribe", channel="news")["type"] == "ack"
    assert b.publish("news", {"n": 1}) == 0  # no local subscriber on B; A gets it through the broker
    assert subscriber.recv() == {"type": "message", "channel": "news", "payload": {"n": 1}}

    # alice holds her one session on A: B refuses a second one (cluster-wide quota).
    with pytest.raises(InvalidStatus) as refused:
        open_client(b, mint("alice"))
    assert refused.value.response.status_code == 429

    # Revoked on B, closed on A.
    b.revoke(sub="alice")
    deadline = time.monotonic() + 5
    with pytest.raises(ConnectionClosed) as closed:
        while time.monotonic() < deadline:
            subscriber.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501

    # An operator ban on A refuses the user on B.
    a.ban(user="mallory", secs=60)

    def refused_on_b() -> bool:
        try:
            open_client(b, mint("mallory")).close()
            return False
        except InvalidStatus as e:
            return e.response.status_code == 403

    eventually(refused_on_b, "the ban on B")
    subscriber.close()
