"""Server-side control: publish, revoke, disconnect and stats over real sessions."""

from __future__ import annotations

import copy
import time
from typing import Any, Callable, Dict, List

import pytest
from conftest import Client, Mint, url
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import wsguard


def close_code(c: Client) -> int:
    """Reads until the server closes the connection; returns its close code."""
    deadline = time.monotonic() + 5
    with pytest.raises(ConnectionClosed) as caught:
        while time.monotonic() < deadline:
            c.recv()
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code


def test_server_publish_reaches_subscribers(server: wsguard.Server, client: Any) -> None:
    c: Client = client()
    assert c.request("subscribe", channel="news")["type"] == "ack"
    assert server.publish("news", {"headline": "hello", "n": [1, 2]}) == 1
    assert c.recv() == {"type": "message", "channel": "news", "payload": {"headline": "hello", "n": [1, 2]}}
    assert server.publish("secret", {"x": 1}) == 0


def test_publish_refusals_carry_core_codes(server: wsguard.Server) -> None:
    with pytest.raises(wsguard.WsguardError) as caught:
        server.publish("bad channel!", {})
    assert caught.value.code_name == "invalid_channel"
    with pytest.raises(wsguard.WsguardError) as caught:
        server.publish("news", [1, 2])  # type: ignore[arg-type]
    assert caught.value.code_name == "invalid_frame"
    with pytest.raises(TypeError):
        server.publish("news", {"x": object()})


def test_revoke_by_jti_closes_the_session(server: wsguard.Server, client: Any, mint: Mint) -> None:
    token = mint("frank", jti="jti-1")
    c: Client = client(token=token)
    other: Client = client(sub="grace")
    assert c.request("subscribe", channel="news")["type"] == "ack"
    server.revoke(jti="jti-1")
    assert close_code(c) == 4501
    assert other.request("ping")["type"] == "pong"


def test_revoke_by_subject_and_time(server: wsguard.Server, client: Any) -> None:
    c: Client = client(sub="heidi")
    server.revoke(sub="heidi")
    assert close_code(c) == 4501
    d: Client = client(sub="ivan")
    server.revoke(issued_before=int(time.time()) + 1)
    assert close_code(d) == 4501


def test_revoke_takes_exactly_one_selector(server: wsguard.Server) -> None:
    with pytest.raises(TypeError):
        server.revoke()
    with pytest.raises(wsguard.InvalidArgumentError) as caught:
        server.revoke(jti="a", sub="b")
    assert caught.value.code_name == "invalid_argument" and isinstance(caught.value, ValueError)


def test_argument_mistakes_are_invalid_argument_from_the_core(server: wsguard.Server) -> None:
    mistakes: List[Callable[[], object]] = [
        lambda: server.disconnect(session_id=1, user="a"),
        lambda: server.ban(ip="not-an-ip", secs=1),
        lambda: server.ban(user="a", secs=-1),
        lambda: server.ban(user="a", secs=float("nan")),
        lambda: server.lift_ban(),
    ]
    for mistake in mistakes:
        with pytest.raises(wsguard.InvalidArgumentError) as caught:
            mistake()
        assert (caught.value.code, caught.value.code_name) == (9004, "invalid_argument")


def test_disconnect_by_user_and_session(server: wsguard.Server, client: Any) -> None:
    ids: Dict[str, int] = {}

    @server.rpc("orders.create")
    def whoami(session: wsguard.Session, payload: Dict[str, Any]) -> int:
        ids[session.subject] = session.session_id
        return session.session_id

    a: Client = client(sub="judy")
    b: Client = client(sub="ken")
    a.request("rpc", method="orders.create")
    b.request("rpc", method="orders.create")
    assert server.disconnect(user="judy") == 1
    assert close_code(a) == 4001
    assert server.disconnect(session_id=ids["ken"]) == 1
    assert close_code(b) == 4001
    with pytest.raises(wsguard.WsguardError) as caught:
        server.disconnect(session_id=ids["ken"])
    assert caught.value.code_name == "unknown_session" and caught.value.code == 5004
    with pytest.raises(TypeError):
        server.disconnect()


def test_stats_count_sessions_and_messages(server: wsguard.Server, client: Any) -> None:
    before = server.stats()
    assert before["sessions_active"] == 0
    c: Client = client()
    c.request("subscribe", channel="news")
    server.publish("news", {"a": 1})
    c.recv()
    stats = server.stats()
    assert stats["sessions_active"] == 1 and stats["sessions_total"] >= 1
    assert stats["messages_in"] >= 1 and stats["channels"] == 1
    assert all(isinstance(v, (int, float)) for v in stats.values())


def test_reload_applies_new_rules_and_refuses_bad_configs(
    server: wsguard.Server, client: Any, config: Dict[str, Any]
) -> None:
    c: Client = client()
    assert c.request("subscribe", channel="sports")["code"] == "forbidden"
    config["channels"].append({"pattern": "sports", "subscribe": {}})
    server.reload(config)
    assert c.request("subscribe", channel="sports")["type"] == "ack"

    bad = copy.deepcopy(config)
    bad["channels"].append({"pattern": "weather", "subscribe": {}, "publsh": {}})
    bad["server"]["listen"] = "127.0.0.1:1"  # needs a restart
    with pytest.raises(wsguard.ConfigError) as caught:
        server.reload(bad)
    paths = [path for path, _ in caught.value.problems]
    assert "channels[3].publsh" in paths, paths
    assert c.request("subscribe", channel="weather")["code"] == "forbidden"


def test_bans_lists_automatic_bans(config: Dict[str, Any], mint: Mint) -> None:
    config["abuse"] = {"max_auth_failures": 1}
    with wsguard.Server(config) as server:
        assert server.bans() == []
        with pytest.raises(InvalidStatus) as caught:
            connect(url(server), additional_headers={"Authorization": "Bearer not-a-token"}, proxy=None)
        assert caught.value.response.status_code == 401
        bans = server.bans()
        assert [(b["target"], b["reason"]) for b in bans] == [({"kind": "ip", "value": "127.0.0.1"}, "auth_failures")]
        assert bans[0]["remaining_secs"] > 0
        assert server.lift_ban(ip="127.0.0.1") is True
        assert server.bans() == []


def test_operator_ban_refuses_the_user_until_lifted(config: Dict[str, Any], mint: Mint) -> None:
    with wsguard.Server(config) as server:
        assert server.ban(user="mallory", secs=60) is True
        with pytest.raises(InvalidStatus) as caught:
            connect(url(server), additional_headers={"Authorization": f"Bearer {mint('mallory')}"}, proxy=None)
        assert caught.value.response.status_code == 403
        with pytest.raises(TypeError):
            server.ban(secs=1)
        assert server.lift_ban(user="mallory") is True
        with connect(url(server), additional_headers={"Authorization": f"Bearer {mint('mallory')}"}, proxy=None):
            pass
