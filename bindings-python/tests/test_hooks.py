"""Handlers: rpc, authorize, authenticate and on_event, as plain functions and as coroutines; what
a raising, slow or odd handler turns into (the core's time box and fail-closed answers)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from typing import Any, Dict, List

import pytest
from conftest import Client, Mint, url
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import wsguard


def test_sync_rpc_gets_session_and_payload(server: wsguard.Server, client: Any, mint: Mint) -> None:
    @server.rpc("orders.create")
    def create(session: wsguard.Session, payload: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "by": session.subject,
            "roles": session.roles,
            "tenant": session.claims.get("tenant"),
            "session_id": session.session_id,
            "echo": payload,
        }

    c: Client = client(token=mint("bob", roles=["buyer"], tenant="acme"))
    reply = c.request("rpc", method="orders.create", payload={"sku": "A-1", "qty": 2})
    assert reply["type"] == "result"
    result = reply["payload"]
    assert result["by"] == "bob" and result["roles"] == ["buyer"] and result["tenant"] == "acme"
    assert result["echo"] == {"sku": "A-1", "qty": 2} and result["session_id"] > 0


def test_rpc_results_may_be_any_json_value(server: wsguard.Server, client: Any) -> None:
    server.rpc("orders.create")(lambda session, payload: [1, "two", None, 3.5])
    server.rpc("orders.none")(lambda session, payload: None)
    c: Client = client()
    assert c.request("rpc", method="orders.create")["payload"] == [1, "two", None, 3.5]
    assert c.request("rpc", method="orders.none")["payload"] is None


def test_a_raising_handler_gives_rpc_failed(server: wsguard.Server, client: Any, caplog: Any) -> None:
    @server.rpc("orders.fail")
    def fail(session: wsguard.Session, payload: Dict[str, Any]) -> None:
        raise ValueError("out of stock")

    server.rpc("orders.none")(lambda session, payload: {1, 2})  # a set is not JSON
    c: Client = client()
    with caplog.at_level(logging.WARNING, logger="wsguard"):
        reply = c.request("rpc", method="orders.fail")
        assert reply["type"] == "error" and reply["code"] == "rpc_failed"
        assert reply["message"] == "out of stock"
        reply = c.request("rpc", method="orders.none")
        assert reply["code"] == "rpc_failed"
    # The session survives a failing handler.
    assert c.request("ping")["type"] == "pong"
    assert any("out of stock" in r.getMessage() for r in caplog.records)


def test_a_declared_method_without_handler_is_refused_by_the_core(server: wsguard.Server, client: Any) -> None:
    c: Client = client()
    assert c.request("rpc", method="orders.create")["code"] == "rpc_failed"
    assert c.request("rpc", method="orders.undeclared")["code"] == "unknown_method"


def test_a_slow_sync_handler_is_cut_off(server: wsguard.Server, client: Any) -> None:
    server.rpc("orders.slow")(lambda session, payload: time.sleep(2.0))
    c: Client = client()
    began = time.monotonic()
    assert c.request("rpc", method="orders.slow")["code"] == "hook_timeout"
    assert time.monotonic() - began < 1.9


def test_coroutine_handlers_need_a_loop(config: Dict[str, Any]) -> None:
    server = wsguard.Server(config)

    @server.rpc("orders.async")
    async def handler(session: wsguard.Session, payload: Dict[str, Any]) -> int:
        return 1

    with pytest.raises(TypeError, match="start_async"):
        server.start()
    assert not server.is_running


def test_async_handlers_run_on_the_starting_loop(config: Dict[str, Any], mint: Mint) -> None:
    server = wsguard.Server(config)
    events: List[Dict[str, Any]] = []
    cancelled = threading.Event()

    @server.rpc("orders.async")
    async def create(session: wsguard.Session, payload: Dict[str, Any]) -> Dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"loop": id(asyncio.get_running_loop()), "n": payload["n"] + 1}

    @server.rpc("orders.fail")
    async def fail(session: wsguard.Session, payload: Dict[str, Any]) -> None:
        raise RuntimeError("async boom")

    @server.rpc("orders.slow_async")
    async def slow(session: wsguard.Session, payload: Dict[str, Any]) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    @server.authorize
    async def authorize(request: wsguard.AuthorizeRequest) -> bool:
        return request.channel != "secret"

    @server.on_event
    async def on_event(event: Dict[str, Any]) -> None:
        events.append(event)

    async def main() -> None:
        async with server:
            headers = {"Authorization": f"Bearer {mint()}"}
            async with async_connect(url(server), additional_headers=headers, proxy=None) as ws:

                async def request(frame: Dict[str, Any]) -> Dict[str, Any]:
                    await ws.send(json.dumps(frame))
                    reply: Dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    return reply

                reply = await request({"action": "rpc", "id": 1, "method": "orders.async", "payload": {"n": 41}})
                assert reply["payload"] == {"loop": id(asyncio.get_running_loop()), "n": 42}
                reply = await request({"action": "rpc", "id": 2, "method": "orders.fail"})
                assert (reply["code"], reply["message"]) == ("rpc_failed", "async boom")
                reply = await request({"action": "rpc", "id": 3, "method": "orders.slow_async"})
                assert reply["code"] == "hook_timeout"
                assert (await request({"action": "subscribe", "id": 4, "channel": "news"}))["type"] == "ack"
                reply = await request({"action": "subscribe", "id": 5, "channel": "secret"})
                assert reply["code"] == "forbidden"
            for _ in range(100):
                if any(e["kind"] == "session_closed" for e in events):
                    break
                await asyncio.sleep(0.02)

    asyncio.run(main())
    assert cancelled.is_set()
    kinds = [e["kind"] for e in events]
    assert "session_opened" in kinds and "session_closed" in kinds


def test_authorize_deny_gives_forbidden(server: wsguard.Server, client: Any) -> None:
    asked: List[wsguard.AuthorizeRequest] = []

    @server.authorize
    def authorize(request: wsguard.AuthorizeRequest) -> bool:
        asked.append(request)
        if request.channel == "news" and request.action == "publish":
            raise RuntimeError("a raising hook denies")
        return request.channel != "secret"

    c: Client = client(sub="carol")
    assert c.request("subscribe", channel="news")["type"] == "ack"
    reply = c.request("subscribe", channel="secret")
    assert reply["type"] == "error" and reply["code"] == "forbidden"
    assert c.request("publish", channel="news", payload={"x": 1})["code"] == "forbidden"
    assert [(r.action, r.channel, r.session.subject) for r in asked] == [
        ("subscribe", "news", "carol"),
        ("subscribe", "secret", "carol"),
        ("publish", "news", "carol"),
    ]


def test_authorize_must_return_true_exactly(server: wsguard.Server, client: Any) -> None:
    server.authorize(lambda request: "yes")  # type: ignore[type-var]
    c: Client = client()
    assert c.request("subscribe", channel="news")["code"] == "forbidden"


def test_authenticate_refuses_and_enriches(server: wsguard.Server, client: Any, mint: Mint) -> None:
    seen: List[Any] = []

    @server.authenticate
    def authenticate(info: wsguard.HandshakeInfo, identity: wsguard.Identity) -> Any:
        seen.append((info.client_ip, identity.subject))
        if identity.subject == "mallory":
            return False
        if identity.subject == "eve":
            raise PermissionError("no")
        return {"roles": ["member"], "claims": {"plan": "gold"}}

    server.rpc("orders.create")(lambda session, payload: [session.roles, session.claims["plan"]])
    for refused in ["mallory", "eve"]:
        with pytest.raises(InvalidStatus) as caught:
            client(sub=refused)
        assert caught.value.response.status_code == 403
        assert b"rejected_by_hook" in caught.value.response.body
    c: Client = client(sub="dave")
    assert c.request("rpc", method="orders.create")["payload"] == [["member"], "gold"]
    assert ("127.0.0.1", "dave") in seen


def test_on_event_receives_events_in_order(server: wsguard.Server, client: Any) -> None:
    events: List[Dict[str, Any]] = []
    server.on_event(events.append)
    c: Client = client(sub="erin")
    c.request("ping")
    c.close()
    deadline = time.monotonic() + 5
    while len(events) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e["kind"] for e in events][:2] == ["session_opened", "session_closed"]
    assert events[0]["user"] == "erin" and events[0]["session_id"] == events[1]["session_id"]


def test_a_slow_event_handler_makes_the_core_drop_and_count_events(config: Dict[str, Any], mint: Mint) -> None:
    # The core's one queue holds one event and waits for each handler call: while the handler
    # sleeps on the first event, the sessions below produce more than fit.
    config["hooks"] = {"timeout_secs": 1.0, "event_queue_capacity": 1}
    delivered: List[str] = []

    def on_event(event: Dict[str, Any]) -> None:
        delivered.append(event["kind"])
        time.sleep(0.5)

    with wsguard.Server(config) as server:
        server.on_event(on_event)
        for n in range(10):
            headers = {"Authorization": f"Bearer {mint(f'user{n}')}"}
            with connect(url(server), additional_headers=headers, proxy=None):
                pass
        deadline = time.monotonic() + 5
        while server.stats()["events_dropped"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        dropped = server.stats()["events_dropped"]
    assert dropped > 0
    assert 0 < len(delivered) < 20


def test_core_logs_reach_python_logging(config: Dict[str, Any], caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="wsguard"):
        with wsguard.Server(config):
            pass
    records = [r for r in caplog.records if r.name.startswith("wsguard.")]
    assert any(r.name == "wsguard.server" and "listening" in r.getMessage() for r in records), records
