"""Server-side session operations: send, disconnect_with, subscribe, unsubscribe and the session and
channel listings, over real sessions; every argument rule is the core's."""

from __future__ import annotations

import time
from typing import Any, Callable, List, Tuple

import pytest
from conftest import Client
from websockets.exceptions import ConnectionClosed

import wsguard


def session_id(server: wsguard.Server, c: Client, sub: str) -> int:
    """The id of `sub`'s only session (after a ping, so it is registered)."""
    assert c.request("ping")["type"] == "pong"
    page = server.sessions(user=sub)
    assert len(page["sessions"]) == 1
    return int(page["sessions"][0]["id"])


def test_send_pushes_to_a_user_and_to_one_session(server: wsguard.Server, client: Any) -> None:
    a: Client = client(sub="lena")
    b: Client = client(sub="mike")
    mike = session_id(server, b, "mike")
    assert a.request("ping")["type"] == "pong"
    applied = server.send({"hello": "lena"}, user="lena")
    assert (applied["matched"], applied["changed"], applied["is_forwarded"]) == (1, 1, False)
    assert applied["node"] == server.sessions()["node"]
    assert a.recv() == {"type": "push", "payload": {"hello": "lena"}}
    assert server.send({"n": 1}, session_id=mike)["changed"] == 1
    assert b.recv() == {"type": "push", "payload": {"n": 1}}


def test_refused_operations_carry_core_codes_and_change_nothing(server: wsguard.Server, client: Any) -> None:
    c: Client = client(sub="nora")
    nora = session_id(server, c, "nora")
    mistakes: List[Callable[[], object]] = [
        lambda: server.send({}, session_id=nora, user="nora"),
        lambda: server.send({}, user="nora", node="other"),
        lambda: server.send({}, session_id=nora, node="no-such-node"),
        lambda: server.disconnect_with(4000, user="nora"),
        lambda: server.disconnect_with(4200, "x" * 124, user="nora"),
        lambda: server.sessions(limit=0),
        lambda: server.channels(limit=1001),
        lambda: server.channels(pattern="news:{"),
    ]
    for mistake in mistakes:
        with pytest.raises(wsguard.InvalidArgumentError) as caught:
            mistake()
        assert caught.value.code_name == "invalid_argument"
    refusals: List[Tuple[Callable[[], object], str]] = [
        (lambda: server.send([1], user="nora"), "invalid_frame"),  # type: ignore[arg-type]
        (lambda: server.send({}, session_id=nora + 1000), "unknown_session"),
        (lambda: server.subscribe("bad channel!", user="nora"), "invalid_channel"),
    ]
    for call, name in refusals:
        with pytest.raises(wsguard.WsguardError) as caught_error:
            call()
        assert caught_error.value.code_name == name
    assert c.request("ping")["type"] == "pong", "nothing was queued for the session"
    assert server.channels()["channels"] == []


def test_server_subscription_bypasses_rules_and_is_listed(server: wsguard.Server, client: Any) -> None:
    c: Client = client(sub="olga")
    assert c.request("subscribe", channel="vault")["code"] == "forbidden"
    applied = server.subscribe("vault", user="olga")
    assert applied["changed"] == 1
    assert c.recv() == {"type": "subscribed", "channel": "vault", "by": "server"}
    assert server.publish("vault", {"x": 1}) == 1
    assert c.recv() == {"type": "message", "channel": "vault", "payload": {"x": 1}}
    page = server.sessions(user="olga", limit=10)
    assert page["sessions"][0]["subscriptions"] == ["vault"] and page["next_cursor"] is None
    assert page["sessions"][0]["client_ip"] == "127.0.0.1"
    assert page["sessions"][0]["connected_at_ms"] <= time.time() * 1000 + 1000
    assert server.channels(pattern="{name}")["channels"] == [{"channel": "vault", "subscribers": 1}]
    assert server.unsubscribe("vault", user="olga")["changed"] == 1
    assert c.recv() == {"type": "unsubscribed", "channel": "vault", "reason": "server"}
    assert server.publish("vault", {"x": 2}) == 0


def test_disconnect_with_sends_the_code_and_reason(server: wsguard.Server, client: Any) -> None:
    c: Client = client(sub="pia")
    assert c.request("ping")["type"] == "pong"
    assert server.disconnect_with(4300, "moved", user="pia")["changed"] == 1
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            c.recv()
    assert caught.value.rcvd is not None
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4300, "moved")


def test_listings_page(server: wsguard.Server, client: Any) -> None:
    clients = [client(sub=f"user{i}") for i in range(3)]
    for c in clients:
        assert c.request("ping")["type"] == "pong"
    first = server.sessions(limit=2)
    assert len(first["sessions"]) == 2 and first["next_cursor"] is not None
    rest = server.sessions(cursor=first["next_cursor"], limit=2)
    ids = [s["id"] for s in first["sessions"] + rest["sessions"]]
    assert len(ids) == 3 and ids == sorted(ids) and rest["next_cursor"] is None
