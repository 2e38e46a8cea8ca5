"""Attacks before the upgrade: slowloris, pending-handshake exhaustion, header bombs, malformed
upgrades, connection and handshake floods from one IP, spoofed forwarding headers, Origin
look-alikes, the subprotocol token rules, and the automatic ban on repeated bad tokens."""

from __future__ import annotations

import asyncio
import time

import jwts
import wsclient
from context import ORIGIN, Context, bearer

PARTIAL_HEAD = b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"


async def slowloris(ctx: Context) -> None:
    """A head that never ends, a head trickled one byte at a time, and 40 of them at once: each is
    cut off at `server.handshake_timeout_secs` (1 s, counted from accept) with 408."""
    port = ctx.main.port
    started = time.monotonic()
    response = await wsclient.raw_request(port, ctx.ips.take(), PARTIAL_HEAD, timeout=6)
    elapsed = time.monotonic() - started
    ok = isinstance(response, wsclient.Response) and response.status == 408 and response.code == "handshake_timeout"
    got = response.describe() if isinstance(response, wsclient.Response) else response
    # Loose timing: not answered at once, answered well before the suite's own timeout.
    ctx.checks.record("slowloris: partial head -> 408 handshake_timeout", ok and 0.5 <= elapsed < 4,
                      f"got {got} after {elapsed:.2f} s (handshake_timeout_secs = 1)")

    # A trickle: the deadline is absolute, so activity does not extend it.
    reader, writer = await wsclient.open_tcp(port, ctx.ips.take())
    head = wsclient.upgrade_request(port, [("Origin", ORIGIN)])

    async def trickle() -> None:
        for i in range(len(head) - 2):
            try:
                writer.write(head[i : i + 1])
                await writer.drain()
            except (ConnectionError, OSError):
                return
            await asyncio.sleep(0.1)

    sender = asyncio.create_task(trickle())
    started = time.monotonic()
    try:
        response = await wsclient.read_response(reader, 6)
        got, ok = response.describe(), response.status == 408 and response.code == "handshake_timeout"
    except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
        got, ok = type(e).__name__, False
    elapsed = time.monotonic() - started
    sender.cancel()
    writer.close()
    ctx.checks.record("slowloris: head trickled 1 byte / 100 ms -> 408 (deadline is absolute)",
                      ok and elapsed < 4, f"got {got} after {elapsed:.2f} s")

    ips = [ctx.ips.take() for _ in range(4)]
    results = await asyncio.gather(
        *(wsclient.raw_request(port, ips[i % 4], PARTIAL_HEAD, timeout=6) for i in range(40))
    )
    answered = [r for r in results if isinstance(r, wsclient.Response) and r.status == 408]
    ctx.checks.record("slowloris: 40 concurrent partial heads -> all 408", len(answered) == 40,
                      f"{len(answered)}/40 got 408")


async def pending_cap(ctx: Context) -> None:
    """Idle TCP connections fill `server.max_pending_handshakes` (256, from 4 addresses: 64 each,
    `limits.pending_handshakes_per_ip`); the next ones, from another address, are answered 503
    server_full at once, without waiting for the handshake timeout. Then one address alone: its
    65th pending connection is answered 429 too_many_pending_handshakes_per_ip at once."""
    ips = [ctx.ips.take() for _ in range(4)]
    # All at once: the first of them must still be pending (1 s timeout) when the extras arrive.
    opened = time.monotonic()
    idle = await asyncio.gather(*(wsclient.open_tcp(ctx.main.port, ips[i % 4]) for i in range(256)))
    started = time.monotonic()
    fresh = ctx.ips.take()
    extra = await asyncio.gather(*(wsclient.raw_request(ctx.main.port, fresh, b"", timeout=3) for _ in range(10)))
    elapsed = time.monotonic() - started
    full = [r for r in extra if isinstance(r, wsclient.Response) and r.status == 503 and r.code == "server_full"]
    for _reader, writer in idle:
        writer.close()
    ctx.checks.record("pending handshakes: 256 idle sockets, then 503 server_full", len(full) == 10,
                      f"256 opened in {started - opened:.2f} s, then {len(full)}/10 refused 503 server_full "
                      f"within {elapsed:.2f} s")
    # Let the server see the idle sockets go before the next attack needs pending slots.
    await asyncio.sleep(0.3)

    one = ctx.ips.take()
    idle = await asyncio.gather(*(wsclient.open_tcp(ctx.main.port, one) for _ in range(64)))
    over = await wsclient.raw_request(ctx.main.port, one, b"", timeout=3)
    for _reader, writer in idle:
        writer.close()
    ok = isinstance(over, wsclient.Response) and over.status == 429 and over.code == "too_many_pending_handshakes_per_ip"
    got = over.describe() if isinstance(over, wsclient.Response) else over
    ctx.checks.record("pending handshakes: 64 idle sockets from one IP, then 429 too_many_pending_handshakes_per_ip",
                      ok, f"got {got}")
    await asyncio.sleep(0.3)


async def header_bombs(ctx: Context) -> None:
    port = ctx.main.port
    cases = [
        ("one 9000-byte header", [("X-Bomb", "a" * 9000)]),
        ("one 64 KiB header", [("X-Bomb", "a" * 65536)]),
        ("2000 header lines", [(f"X-Pad-{i}", "v") for i in range(2000)]),
        ("65 header lines (1 over the fixed cap)", [(f"X-P{i}", "v") for i in range(59)]),
    ]
    for label, extra in cases:
        data = wsclient.upgrade_request(port, [("Origin", ORIGIN)] + extra)
        response = await wsclient.raw_request(port, ctx.ips.take(), data)
        ok = isinstance(response, wsclient.Response) and response.status == 431 and response.code == "headers_too_large"
        got = response.describe() if isinstance(response, wsclient.Response) else response
        ctx.checks.record(f"header bomb: {label} -> 431 headers_too_large", ok, f"got {got}")


async def malformed_upgrades(ctx: Context) -> None:
    port = ctx.main.port
    token = ctx.token(ctx.sub("malformed"))
    good = wsclient.upgrade_request(port, bearer(token)).decode()
    cases = [
        ("HTTP/1.0", good.replace("HTTP/1.1", "HTTP/1.0", 1), 400, "bad_request"),
        ("POST", good.replace("GET", "POST", 1), 405, "method_not_allowed"),
        ("Sec-WebSocket-Version: 8", good.replace("Version: 13", "Version: 8"), 426, "upgrade_required"),
        ("a body (Content-Length: 5)", good.replace("\r\n\r\n", "\r\nContent-Length: 5\r\n\r\nhello"), 400, "bad_request"),
        ("Transfer-Encoding: chunked", good.replace("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, "bad_request"),
        ("two Authorization headers", good.replace("\r\n\r\n", f"\r\nAuthorization: Bearer {token}\r\n\r\n"), 400, "bad_request"),
        ("a 15-byte Sec-WebSocket-Key", _with_key(good, "AAAAAAAAAAAAAAAAAAAA"), 400, "bad_request"),
        ("another path", good.replace("GET /ws ", "GET /admin ", 1), 404, "not_found"),
        ("path traversal /ws/../ws", good.replace("GET /ws ", "GET /ws/../ws ", 1), 404, "not_found"),
    ]
    for label, request, status, code in cases:
        response = await wsclient.raw_request(port, ctx.ips.take(), request.encode())
        ok = isinstance(response, wsclient.Response) and response.status == status and response.code == code
        got = response.describe() if isinstance(response, wsclient.Response) else response
        ctx.checks.record(f"malformed upgrade: {label} -> {status} {code}", ok, f"got {got}")


def _with_key(request: str, key: str) -> str:
    lines = request.split("\r\n")
    return "\r\n".join(f"Sec-WebSocket-Key: {key}" if line.startswith("Sec-WebSocket-Key:") else line for line in lines)


async def connection_flood(ctx: Context) -> None:
    """From one IP: `limits.connections_per_ip` (8) sessions, then 30 more attempts -> 429."""
    ip = ctx.ips.take()
    held = [await ctx.session(ip=ip) for _ in range(8)]
    refused = []
    for _ in range(30):
        response, conn = await ctx.upgrade(bearer(ctx.token(ctx.sub("flood"))), ip=ip)
        if conn is not None:
            held.append(conn)
        refused.append(response)
    quota = [r for r in refused if r.status == 429 and r.code == "too_many_connections_per_ip"]
    retry = {r.headers.get("retry-after") for r in quota}
    ctx.checks.record("connection flood: one IP past connections_per_ip=8 -> 429 too_many_connections_per_ip",
                      len(quota) == 30 and len(held) == 8 and retry == {"5"},
                      f"{len(held)} sessions open, {len(quota)}/30 refused 429, Retry-After {sorted(retry)}")
    for conn in held:
        await conn.goodbye()


async def forwarded_spoof(ctx: Context) -> None:
    """With no trusted proxies, X-Forwarded-For / Forwarded from the client are ignored: they do not
    get a full IP a fresh quota."""
    ip = ctx.ips.take()
    held = [await ctx.session(ip=ip) for _ in range(8)]
    spoofs = [
        [("X-Forwarded-For", "203.0.113.7")],
        [("X-Forwarded-For", "198.51.100.1, 203.0.113.8")],
        [("Forwarded", "for=203.0.113.9")],
        [("X-Real-IP", "203.0.113.10")],
    ]
    for headers in spoofs:
        response, conn = await ctx.upgrade(bearer(ctx.token(ctx.sub("spoof"))) + headers, ip=ip)
        if conn is not None:
            held.append(conn)
        ctx.expect_status(f"spoofed {headers[0][0]}: {headers[0][1]} from an untrusted peer -> still 429",
                          response, 429, "too_many_connections_per_ip")
    for conn in held:
        await conn.goodbye()


async def handshake_rate(ctx: Context) -> None:
    """One IP sending requests as fast as it can: past the burst (40) -> 429 handshake_rate_limited
    with Retry-After. Wrong-path requests count too."""
    ip = ctx.ips.take()
    results = await asyncio.gather(*(ctx.upgrade([("Origin", ORIGIN)], ip=ip, path="/nope") for _ in range(60)))
    responses = [response for response, _conn in results]
    limited = [r for r in responses if r.status == 429 and r.code == "handshake_rate_limited"]
    retry_ok = all(int(r.headers.get("retry-after", "0")) >= 1 for r in limited)
    others = {r.describe() for r in responses if r not in limited}
    ctx.checks.record("handshake flood: 60 requests from one IP -> 429 handshake_rate_limited past the burst",
                      len(limited) >= 1 and retry_ok and others <= {"404 not_found"},
                      f"{len(limited)} x 429 (Retry-After >= 1: {retry_ok}), others {sorted(others)}")


async def origins(ctx: Context) -> None:
    refused = [
        "https://app.example.com.evil.com",
        "null",
        "https://app.example.com.",
        "https://evilexample.com",
        "https://example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com@evil.com",
        "https://app.example.com/",
        "https://app.example.com\u0430",
    ]
    for origin in refused:
        token = ctx.token(ctx.sub("origin"))
        await ctx.expect_refusal(f"origin {origin!r} -> 403 origin_not_allowed",
                                 [("Origin", origin), ("Authorization", f"Bearer {token}")], 403, "origin_not_allowed")
    token = ctx.token(ctx.sub("origin"))
    await ctx.expect_refusal("origin missing (allow_missing = false) -> 403 origin_not_allowed",
                             [("Authorization", f"Bearer {token}")], 403, "origin_not_allowed")
    await ctx.expect_refusal("origin header repeated -> 400 bad_request",
                             [("Origin", ORIGIN), ("Origin", "https://evil.com"), ("Authorization", f"Bearer {token}")],
                             400, "bad_request")
    for origin in ["HTTPS://APP.EXAMPLE.COM", "https://App.Example.Com", "https://app.example.com:443",
                   "https://a.b.example.com"]:
        token = ctx.token(ctx.sub("origin"))
        response, conn = await ctx.upgrade([("Origin", origin), ("Authorization", f"Bearer {token}")])
        ctx.expect_status(f"origin {origin!r} -> accepted (101)", response, 101, None)
        if conn is not None:
            await conn.goodbye()


async def subprotocol(ctx: Context) -> None:
    token = ctx.token(ctx.sub("subproto"))
    await ctx.expect_refusal("bearer.<token> offered without wsguard.v1 -> 400 subprotocol_required",
                             [("Origin", ORIGIN), ("Sec-WebSocket-Protocol", f"bearer.{token}")], 400,
                             "subprotocol_required")
    token = ctx.token(ctx.sub("subproto"))
    response, conn = await ctx.upgrade([("Origin", ORIGIN), ("Sec-WebSocket-Protocol", f"wsguard.v1, bearer.{token}")])
    selected = response.headers.get("sec-websocket-protocol")
    ctx.checks.record("subprotocol token: 101 selects wsguard.v1 and never echoes the token",
                      response.status == 101 and selected == "wsguard.v1" and token not in str(response.headers),
                      f"got {response.status}, Sec-WebSocket-Protocol {selected!r}")
    if conn is not None:
        await conn.goodbye()


async def auth_failure_ban(ctx: Context) -> None:
    """[abuse] max_auth_failures = 20: the IP that keeps presenting bad tokens is banned (403)."""
    ip = ctx.ips.take()
    statuses = []
    for _ in range(24):
        forged = jwts.tamper_signature(ctx.token(ctx.sub("stuffer")))
        response, conn = await ctx.upgrade(bearer(forged), ip=ip)
        if conn is not None:
            conn.close()
        statuses.append(response)
    first_ban = next((i for i, r in enumerate(statuses) if r.status == 403), None)
    ok = (
        first_ban is not None
        and first_ban >= 19
        and all(r.status == 401 for r in statuses[:first_ban])
        and all(r.code == "banned" and int(r.headers.get("retry-after", "0")) > 0 for r in statuses[first_ban:])
    )
    ctx.checks.record("credential stuffing: 20 bad tokens from one IP -> 403 banned with Retry-After", ok,
                      f"{first_ban} x 401 then {len(statuses) - (first_ban or 0)} x "
                      f"{statuses[-1].describe()} (Retry-After {statuses[-1].headers.get('retry-after')})")


ATTACKS = [
    slowloris,
    pending_cap,
    header_bombs,
    malformed_upgrades,
    connection_flood,
    forwarded_spoof,
    handshake_rate,
    origins,
    subprotocol,
    auth_failure_ban,
]
