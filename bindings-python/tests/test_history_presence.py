"""The host's reads of a channel's history and presence (`history`, `presence`,
`presence_stats` and their async forms), over real sessions; every argument rule is the core's."""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Dict, List, Tuple

import pytest
from conftest import Client

import wsguard


@pytest.fixture
def config(config: Dict[str, Any]) -> Dict[str, Any]:
    """The shared configuration plus `feed:{id}`, which keeps history and tracks presence (no
    client may read either: the host is trusted)."""
    rule = {"pattern": "feed:{id}", "subscribe": {}, "publish": {}, "history_size": 10, "presence": True}
    config["channels"].append(rule)
    return config


def test_history_pages_in_both_orders_and_from_a_position(server: wsguard.Server, client: Any) -> None:
    c: Client = client(sub="pia")
    assert c.request("subscribe", channel="feed:1")["type"] == "ack"
    for n in range(3):
        server.publish("feed:1", {"n": n})
        assert c.recv()["payload"] == {"n": n}
    page = server.history("feed:1")
    offsets = [p["offset"] for p in page["publications"]]
    assert [p["payload"] for p in page["publications"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert offsets == sorted(offsets) and page["offset"] == offsets[-1] and page["epoch"]
    after = server.history("feed:1", since_offset=offsets[0], since_epoch=page["epoch"])
    assert [p["offset"] for p in after["publications"]] == offsets[1:]
    newest = server.history("feed:1", limit=2, newest_first=True)
    assert [p["offset"] for p in newest["publications"]] == offsets[:0:-1]


def test_history_refusals_carry_core_codes(server: wsguard.Server) -> None:
    server.publish("feed:2", {"n": 1})
    epoch = server.history("feed:2")["epoch"]
    refusals: List[Tuple[Callable[[], object], str]] = [
        (lambda: server.history("news"), "history_not_kept"),
        (lambda: server.history("feed:2", limit=0), "history_limit_invalid"),
        (lambda: server.history("feed:2", limit=1001), "history_limit_invalid"),
        (lambda: server.history("feed:2", since_offset=99, since_epoch=epoch), "history_offset_ahead"),
        (lambda: server.history("feed:2", since_offset=0, since_epoch="other"), "history_epoch_changed"),
        (lambda: server.history("feed:2", since_offset=1), "invalid_argument"),
        (lambda: server.history("bad channel!"), "invalid_channel"),
    ]
    for call, name in refusals:
        with pytest.raises(wsguard.WsguardError) as caught:
            call()
        assert caught.value.code_name == name


def test_presence_lists_members_and_counts(server: wsguard.Server, client: Any) -> None:
    first: Client = client(sub="quinn")
    second: Client = client(sub="quinn")
    other: Client = client(sub="rosa")
    for c in (first, second, other):
        assert c.request("subscribe", channel="feed:3")["type"] == "ack"
    page = server.presence("feed:3")
    assert page == {"members": [{"user": "quinn", "sessions": 2}, {"user": "rosa", "sessions": 1}], "next": None}
    first_page = server.presence("feed:3", limit=1)
    assert [m["user"] for m in first_page["members"]] == ["quinn"] and first_page["next"] == "quinn"
    rest = server.presence("feed:3", limit=1, after=first_page["next"])
    assert [m["user"] for m in rest["members"]] == ["rosa"] and rest["next"] is None
    assert server.presence_stats("feed:3") == {"users": 2, "clients": 3}

    async def from_asyncio() -> Tuple[Dict[str, Any], Dict[str, Any]]:
        return await server.presence_async("feed:3", limit=10), await server.presence_stats_async("feed:3")

    assert asyncio.run(from_asyncio()) == (page, {"users": 2, "clients": 3})


def test_presence_refusals_carry_core_codes(server: wsguard.Server) -> None:
    refusals: List[Tuple[Callable[[], object], str]] = [
        (lambda: server.presence("news"), "presence_not_tracked"),
        (lambda: server.presence_stats("news"), "presence_not_tracked"),
        (lambda: server.presence("feed:1", limit=0), "invalid_argument"),
        (lambda: server.presence("feed:1", limit=1001), "invalid_argument"),
        (lambda: server.presence_stats("bad channel!"), "invalid_channel"),
    ]
    for call, name in refusals:
        with pytest.raises(wsguard.WsguardError) as caught:
            call()
        assert caught.value.code_name == name
