"""Attacks by authenticated clients: message, user and byte rate floods, tenant crossing and
channel-name tricks, publishing into the canary's channel, undeclared and forbidden RPC, and a
subscriber that never reads."""

from __future__ import annotations

import asyncio
import json
import time

import wsclient
from context import Context, bearer
from harness import metric_sum
from wsclient import TEXT, build_frame

CANARY_CHANNEL = "tenant:acme:orders"


async def message_flood(ctx: Context) -> None:
    """110 ping actions at once (burst 100): the excess gets rate_limited (10 violations, under
    max_violations), the session stays open and works once the bucket refills."""
    conn = await ctx.session()
    await conn.send_raw(b"".join(build_frame(TEXT, json.dumps({"action": "ping", "id": i}).encode()) for i in range(110)))
    replies = [await conn.recv_json() for _ in range(110)]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    ids_kept = all("id" in r for r in limited)
    await asyncio.sleep(0.3)
    after = await conn.request({"action": "ping", "id": 999})
    ctx.checks.record("message flood past messages_per_sec: rate_limited replies (with id), session stays usable",
                      1 <= len(limited) <= 10 and ids_kept and after == {"type": "pong", "id": 999},
                      f"{len(limited)}/110 rate_limited, then ping -> {after}")
    await conn.goodbye()


async def user_rate(ctx: Context) -> None:
    """One user, three sessions (three IPs), sending 10 pings each per turn in lockstep: far below
    each connection's burst (100), but together past the user's burst (200) -> rate_limited from
    the per-user bucket. The flood stops at the first turn that is refused, so no session collects
    more than 10 violations (max_violations is 20)."""
    sub = ctx.sub("multi")
    conns = [await ctx.session(sub) for _ in range(3)]

    async def turn(conn: wsclient.Conn, first_id: int) -> int:
        await conn.send_raw(b"".join(
            build_frame(TEXT, json.dumps({"action": "ping", "id": first_id + i}).encode()) for i in range(10)
        ))
        replies = [await conn.recv_json() for _ in range(10)]
        return sum(1 for r in replies if r.get("code") == "rate_limited")

    limited, sent = 0, 0
    for n in range(15):
        limited += sum(await asyncio.gather(*(turn(c, n * 10) for c in conns)))
        sent += 30
        if limited:
            break
    metrics = await ctx.main.metrics()
    user_scope = metric_sum(metrics, "wsguard_rate_limited_total", scope="user")
    ctx.checks.record("user flood across 3 sessions past user_messages_per_sec -> rate_limited (scope user)",
                      limited >= 1 and sent > 200 and user_scope >= limited,
                      f"first refusal after {sent - 30} accepted pings: {limited}/30 rate_limited in that turn; "
                      f"wsguard_rate_limited_total{{scope=user}} = {user_scope:g}")
    for conn in conns:
        await conn.goodbye()


async def byte_rate(ctx: Context) -> None:
    """50 x 60 KB publishes at once (3 MB) against bytes_per_sec 1 MiB (bucket 2 MiB)."""
    conn = await ctx.session(roles=["service"])
    blob = "x" * 60000
    frames = b"".join(
        build_frame(TEXT, json.dumps({"action": "publish", "id": i, "channel": "tenant:acme:feed",
                                      "payload": {"blob": blob}}).encode())
        for i in range(50)
    )
    await conn.send_raw(frames)
    replies = [await conn.recv_json() for _ in range(50)]
    limited = sum(1 for r in replies if r.get("code") == "rate_limited")
    acks = sum(1 for r in replies if r.get("type") == "ack")
    metrics = await ctx.main.metrics()
    scope = metric_sum(metrics, "wsguard_rate_limited_total", scope="connection_bytes")
    ctx.checks.record("byte flood: 50 x 60 KB frames past bytes_per_sec -> rate_limited (scope connection_bytes)",
                      limited >= 1 and acks >= 30 and scope >= 1,
                      f"{acks} acks, {limited} rate_limited; wsguard_rate_limited_total{{scope=connection_bytes}} = {scope:g}")
    await conn.goodbye()


async def channels(ctx: Context) -> None:
    """A tenant-acme reader probing other tenants and names that look like patterns or paths."""
    conn = await ctx.session(scopes=["orders:read"])
    cases = [
        ("tenant:globex:orders", "forbidden", "another tenant's channel"),
        ("tenant:ACME:orders", "forbidden", "tenant in another case"),
        ("tenant:acme:orders:x", "forbidden", "an extra segment (no rule matches)"),
        ("tenant:acme:..:orders", "forbidden", "a '..' segment (no rule matches)"),
        ("admin:audit", "forbidden", "a channel no rule mentions (default deny)"),
        ("tenant:*:orders", "invalid_channel", "wildcard '*'"),
        ("tenant:>", "invalid_channel", "wildcard '>'"),
        ("tenant:{tenant}:orders", "invalid_channel", "a pattern capture"),
        ("tenant:acme/../globex:orders", "invalid_channel", "path traversal with '/'"),
        ("tenant:acme:orders/../../globex", "invalid_channel", "trailing traversal"),
        ("tenant::orders", "invalid_channel", "an empty segment"),
        ("tenant:acme%3Aorders", "invalid_channel", "percent-encoding"),
        ("tenant:acme:orders ", "invalid_channel", "a trailing space"),
        ("tenant:\u0430cme:orders", "invalid_channel", "a Cyrillic look-alike"),
        ("tenant:acme:orders\u0000", "invalid_channel", "a NUL byte"),
        ("t" * 129, "invalid_channel", "129 bytes"),
    ]
    for i, (channel, code, label) in enumerate(cases):
        reply = await conn.request({"action": "subscribe", "id": 100 + i, "channel": channel})
        ctx.checks.record(f"subscribe to {label} ({channel[:40]!r}) -> {code}", reply.get("code") == code,
                          f"got {reply.get('code') or reply.get('type')}")
    reply = await conn.request({"action": "subscribe", "id": 1, "channel": CANARY_CHANNEL})
    ctx.checks.record("subscribe to its own tenant's channel -> ack (positive control)", reply.get("type") == "ack",
                      f"got {reply}")
    await conn.goodbye()


async def publish_into_canary(ctx: Context) -> None:
    """Publishes the canary must never see: from another tenant's service, from a reader without
    the role, with a payload the channel schema refuses, and with injected identity fields."""
    globex = await ctx.session(tenant="globex", roles=["service"], scopes=["orders:write"])
    reply = await globex.request({"action": "publish", "id": 1, "channel": CANARY_CHANNEL,
                                  "payload": {"seq": 10**9, "ts": 0}})
    ctx.checks.record("publish into another tenant's channel -> forbidden", reply.get("code") == "forbidden", f"got {reply}")
    await globex.goodbye()

    reader = await ctx.session(scopes=["orders:read", "orders:write"])
    reply = await reader.request({"action": "publish", "id": 2, "channel": CANARY_CHANNEL,
                                  "payload": {"seq": 10**9, "ts": 0}})
    ctx.checks.record("publish without the service role -> forbidden", reply.get("code") == "forbidden", f"got {reply}")
    reply = await reader.request({"action": "publish", "id": 3, "channel": CANARY_CHANNEL,
                                  "roles": ["service"], "payload": {"seq": 10**9, "ts": 0}})
    ctx.checks.record("publish claiming roles inside the frame -> invalid_frame (never read)",
                      reply.get("code") == "invalid_frame", f"got {reply.get('code')}")
    await reader.goodbye()

    service = await ctx.session(roles=["service"], scopes=["orders:write"])
    for i, (label, payload, code) in enumerate([
        ("a payload the schema refuses (extra field)", {"seq": 10**9, "ts": 0, "evil": True}, "payload_invalid"),
        ("a payload the schema refuses (seq a string)", {"seq": "1", "ts": 0}, "payload_invalid"),
        ("a payload nested 40 levels (max_payload_depth 32)", _nested(40), "payload_too_deep"),
        ("a payload nested 200 levels (parser limit 128)", _nested(200), "invalid_json"),
    ]):
        reply = await service.request({"action": "publish", "id": 10 + i, "channel": CANARY_CHANNEL, "payload": payload})
        ctx.checks.record(f"publish {label} -> {code}", reply.get("code") == code, f"got {reply.get('code') or reply}")
    await service.goodbye()


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def rpc(ctx: Context) -> None:
    conn = await ctx.session(scopes=["orders:read"])
    reply = await conn.request({"action": "rpc", "id": 1, "method": "admin.shutdown", "payload": {}})
    ctx.checks.record("rpc to an undeclared method -> unknown_method", reply.get("code") == "unknown_method", f"got {reply}")
    reply = await conn.request({"action": "rpc", "id": 2, "method": "orders.create", "payload": {}})
    ctx.checks.record("rpc without the method's role and scope -> forbidden", reply.get("code") == "forbidden", f"got {reply}")
    await conn.goodbye()
    service = await ctx.session(roles=["service"], scopes=["orders:write"])
    reply = await service.request({"action": "rpc", "id": 3, "method": "orders.create", "payload": {}})
    ctx.checks.record("rpc with role and scope reaches the host (no handler in the CLI -> rpc_failed)",
                      reply.get("code") == "rpc_failed", f"got {reply.get('code') or reply}")
    await service.goodbye()


async def never_reads(ctx: Context) -> None:
    """A subscriber of the canary's channel and a bulk feed that stops reading (tiny receive
    buffer) while three services flood the feed. The server must end it - 4000 slow_consumer when
    its outbound queue overflows, or 4002 write_timeout when its socket write stalls for
    write_timeout_secs (3 s) - while the canary, on the same channel, keeps its stream."""
    before = await ctx.main.metrics()
    token = ctx.token(ctx.sub("sloth"), scopes=["orders:read"])
    reader, writer = await wsclient.open_tcp(ctx.main.port, ctx.ips.take(), rcvbuf=4096)
    writer.write(wsclient.upgrade_request(ctx.main.port, bearer(token)))
    await writer.drain()
    response = await wsclient.read_response(reader)
    sloth = wsclient.Conn(reader, writer)
    for i, channel in enumerate([CANARY_CHANNEL, "tenant:acme:feed"]):
        reply = await sloth.request({"action": "subscribe", "id": i + 1, "channel": channel})
        if reply.get("type") != "ack":
            ctx.checks.record("never-reading subscriber", False, f"subscribe {channel} -> {reply}")
            return
    # From here on the sloth reads nothing.
    feeders = [await ctx.session(roles=["service"]) for _ in range(3)]
    blob = "y" * 16000
    stop = asyncio.Event()

    async def feed(conn: wsclient.Conn) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await conn.send_json({"action": "publish", "id": n, "channel": "tenant:acme:feed", "payload": {"blob": blob}})
            await conn.recv_json()
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(feed(c)) for c in feeders]
    started = time.monotonic()
    code, waited = None, 0.0
    while time.monotonic() - started < 20:
        await asyncio.sleep(0.25)
        metrics = await ctx.main.metrics()
        for candidate in ("4000", "4002"):
            if metric_sum(metrics, "wsguard_disconnects_total", code=candidate) > metric_sum(
                before, "wsguard_disconnects_total", code=candidate
            ):
                code = candidate
        if code:
            waited = time.monotonic() - started
            break
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for conn in feeders:
        await conn.goodbye()
    # What the sloth finds when it finally reads: the backlog, then the close frame or the cut.
    closed = await sloth.expect_close(10)
    sloth.close()
    after = await ctx.main.metrics()
    queued = metric_sum(after, "wsguard_outbound_queued_bytes")
    overflows = metric_sum(after, "wsguard_slow_consumer_disconnects_total") - metric_sum(
        before, "wsguard_slow_consumer_disconnects_total"
    )
    ctx.checks.record("never-reading subscriber -> closed by the server (4000 slow_consumer or 4002 write_timeout)",
                      response.status == 101 and code in ("4000", "4002"),
                      f"server recorded {code} after {waited:.1f} s of flooding (queue overflows counted: "
                      f"{overflows:g}); the client then read {len(sloth.messages)} frames and saw close "
                      f"{closed.code} {closed.reason}".rstrip())
    ctx.checks.record("never-reading subscriber: its queued bytes are released", queued == 0,
                      f"wsguard_outbound_queued_bytes = {queued:g}")
    # What the slow_consumer = "disconnect" policy promises once the queue overflows.
    ctx.checks.record("never-reading subscriber: ended as 4000 slow_consumer when its queue overflowed",
                      code == "4000", f"recorded {code}, slow-consumer overflows counted {overflows:g}")


ATTACKS = [message_flood, user_rate, byte_rate, channels, publish_into_canary, rpc, never_reads]
