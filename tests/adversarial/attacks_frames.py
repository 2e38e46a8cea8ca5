"""Attacks on the frame layer, each on its own authenticated session over a raw socket: frames
crafted by hand (length fields, masking, reserved bits, opcodes, control-frame rules, UTF-8), size
caps, and floods of control frames and tiny frames."""

from __future__ import annotations

import asyncio
import json
import struct

import wsclient
from context import Context
from wsclient import BINARY, CLOSE, CONT, PING, TEXT, build_frame


async def expect_closed_by(ctx: Context, name: str, payload: bytes, code: int, reason: str) -> None:
    """Opens a session, sends `payload` (raw frame bytes), expects the server's close."""
    conn = await ctx.session()
    try:
        await conn.send_raw(payload)
    except (ConnectionError, OSError):
        pass
    ctx.expect_close(name, await conn.expect_close(5), code, reason)
    conn.close()


async def length_claims(ctx: Context) -> None:
    # The largest length RFC 6455 allows (the top bit must be 0), then 2^63 itself.
    huge = build_frame(TEXT, b"", length=(1 << 63) - 1)
    await expect_closed_by(ctx, "frame header claiming 2^63-1 bytes -> close 1009", huge, 1009, "message_too_big")
    head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + b"\x00\x00\x00\x00"
    conn = await ctx.session()
    await conn.send_raw(head)
    closed = await conn.expect_close(5)
    # 2^63 sets the bit RFC 6455 §5.2 reserves: a protocol error or "too big" are both right.
    ctx.checks.record("frame header claiming 2^63 bytes (MSB set) -> close 1009 or 1002",
                      closed.code in (1009, 1002), f"close {closed.code} {closed.reason}")
    conn.close()


async def size_caps(ctx: Context) -> None:
    await expect_closed_by(ctx, "one 70000-byte frame (max_frame_bytes 65536) -> close 1009",
                           build_frame(TEXT, b"a" * 70000), 1009, "message_too_big")
    fragments = build_frame(TEXT, b"a" * 40000, fin=False) + build_frame(CONT, b"a" * 40000, fin=False)
    await expect_closed_by(ctx, "fragmented message past max_message_bytes (2 x 40000, unfinished) -> close 1009",
                           fragments, 1009, "message_too_big")
    many = build_frame(TEXT, b"a" * 1000, fin=False) + b"".join(
        build_frame(CONT, b"a" * 1000, fin=False) for _ in range(80)
    )
    await expect_closed_by(ctx, "81 x 1000-byte fragments of one message -> close 1009", many, 1009,
                           "message_too_big")


async def rfc6455_violations(ctx: Context) -> None:
    ping = json.dumps({"action": "ping", "id": 1}).encode()
    cases = [
        ("unmasked client frame", build_frame(TEXT, ping, mask=False)),
        ("RSV1 set (no extension negotiated)", build_frame(TEXT, ping, rsv=4)),
        ("RSV2 + RSV3 set", build_frame(TEXT, ping, rsv=3)),
        ("unknown data opcode 0x3", build_frame(0x3, ping)),
        ("unknown control opcode 0xB", build_frame(0xB, b"")),
        ("ping with a 126-byte payload (control > 125)", build_frame(PING, b"p" * 126)),
        ("fragmented ping (control frame without FIN)", build_frame(PING, b"p", fin=False)),
        ("continuation frame with nothing to continue", build_frame(CONT, ping)),
        ("new text frame inside a fragmented message", build_frame(TEXT, b"{", fin=False) + build_frame(TEXT, b"}")),
        ("close frame with a 1-byte payload", build_frame(CLOSE, b"\x03")),
    ]
    for label, frame in cases:
        await expect_closed_by(ctx, f"{label} -> close 1002", frame, 1002, "protocol_error")


async def invalid_utf8(ctx: Context) -> None:
    await expect_closed_by(ctx, "text frame with invalid UTF-8 -> close 1007", build_frame(TEXT, b'{"a":"\xff\xfe"}'),
                           1007, "invalid_utf8")
    split = build_frame(TEXT, b'{"a":"\xce', fin=False) + build_frame(CONT, b'\xff"}')
    await expect_closed_by(ctx, "invalid UTF-8 across fragments -> close 1007", split, 1007, "invalid_utf8")
    await expect_closed_by(ctx, "overlong UTF-8 encoding of '/' (0xC0 0xAF) -> close 1007",
                           build_frame(TEXT, b'{"channel":"\xc0\xaf"}'), 1007, "invalid_utf8")
    await expect_closed_by(ctx, "binary frame (allow_binary = false) -> close 1003", build_frame(BINARY, b"{}"),
                           1003, "binary_not_supported")


async def ping_flood(ctx: Context) -> None:
    """5000 WebSocket pings with 125-byte payloads as fast as the socket takes them: control frames
    are answered, not rate limited; the session stays usable and the server stays up."""
    conn = await ctx.session()
    pongs = 0

    async def read_pongs() -> None:
        nonlocal pongs
        while True:
            _fin, opcode, _payload = await conn.read_frame()
            if opcode == 0xA:
                pongs += 1

    reader = asyncio.create_task(read_pongs())
    frame = build_frame(PING, b"p" * 125)
    for _ in range(50):
        await conn.send_raw(frame * 100)
    await asyncio.sleep(0.5)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    try:
        reply = await conn.request({"action": "ping", "id": 77})
        usable = reply == {"type": "pong", "id": 77}
    except (wsclient.Closed, asyncio.TimeoutError) as e:
        usable, reply = False, repr(e)
    health = await wsclient.http_get(ctx.main.metrics_port, "/healthz")
    ctx.checks.record("ping flood: 5000 pings -> pongs, session still usable, server healthy",
                      pongs > 0 and usable and health[0] == 200,
                      f"{pongs} pongs, then ping action -> {reply}, /healthz {health[0]}")
    await conn.goodbye()


async def tiny_frame_floods(ctx: Context) -> None:
    """Valid tiny frames past the message rate: `rate_limited` replies (each a violation), then
    close 1008 once max_violations (20) is exceeded. Empty frames: invalid_json, then 1008."""
    conn = await ctx.session()
    frames = b"".join(build_frame(TEXT, json.dumps({"action": "ping", "id": i}).encode()) for i in range(400))
    try:
        await conn.send_raw(frames)
    except (ConnectionError, OSError):
        pass
    closed = await conn.expect_close(5)
    replies = [json.loads(m) for m in conn.messages]
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    has_retry = all(r.get("retry_after_ms", 0) >= 1 for r in limited)
    pongs = sum(1 for r in replies if r.get("type") == "pong")
    ctx.checks.record("tiny-frame flood: 400 ping actions -> rate_limited replies (retry_after_ms), then close 1008",
                      len(limited) == 21 and has_retry and closed.code == 1008 and closed.reason == "too_many_violations",
                      f"{pongs} pongs, {len(limited)} rate_limited, close {closed.code} {closed.reason}")
    conn.close()

    conn = await ctx.session()
    try:
        await conn.send_raw(build_frame(TEXT, b"") * 1000)
    except (ConnectionError, OSError):
        pass
    closed = await conn.expect_close(5)
    invalid = sum(1 for m in conn.messages if json.loads(m).get("code") == "invalid_json")
    ctx.checks.record("empty-frame flood: 1000 zero-length frames -> invalid_json replies, then close 1008",
                      invalid == 21 and closed.code == 1008, f"{invalid} invalid_json, close {closed.code} {closed.reason}")
    conn.close()


ATTACKS = [length_claims, size_caps, rfc6455_violations, invalid_utf8, ping_flood, tiny_frame_floods]
