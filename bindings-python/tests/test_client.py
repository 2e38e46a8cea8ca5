"""`wsguard.Client` against a real `wsguard serve` process (and, for revocation, the in-process
`wsguard.Server`, whose `revoke` is the host API): reconnect table, refresh, Retry-After, typed
errors, send queue, resubscription. The binary is `$WSGUARD_BIN`, else the repo's
`target/debug/wsguard`, else it is built with `cargo build -p wsguard-cli`.

Tests that need server features still being merged are marked, one marker per feature, so the
lead can enable them by flipping one constant: HISTORY (issue 21: offsets, `since`, `gap`
reasons, the `history` action), PRESENCE (`presence`, `join`/`leave`), SERVER_API (`POST
/api/v1/revoke` on the `wsguard serve` process)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Iterator, List, Optional, Type, TypeVar

import pytest
from conftest import AUDIENCE, ISSUER, Mint
from websockets.sync.client import connect as sync_connect

import wsguard
from wsguard import client as wc


REPO = Path(__file__).resolve().parents[2]
WAIT = 10.0  # upper bound of every wait on a condition (never reached when things work)
SECRET_ENV = "WSGUARD_CLIENT_TEST_HMAC"
API_KEY_ENV = "WSGUARD_CLIENT_TEST_API_KEY"


def wsguard_bin() -> str:
    explicit = os.environ.get("WSGUARD_BIN")
    if explicit:
        return explicit
    built = REPO / "target" / "debug" / "wsguard"
    if not built.exists():
        subprocess.run(["cargo", "build", "-p", "wsguard-cli"], cwd=REPO, check=True, timeout=1500)
    return str(built)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Serve:
    """A `wsguard serve` process on a fixed loopback port (so it can be restarted on it)."""

    def __init__(self, tmp: Path, secret: str, extra: str = "", auth: str = "", limits: str = "") -> None:
        self.port = free_port()
        self.config = tmp / f"serve-{self.port}.toml"
        self.log = tmp / f"serve-{self.port}.log"
        self.config.write_text(
            f"""
[server]
listen = "127.0.0.1:{self.port}"
shutdown_grace_secs = 0.5

[origins]
allow_missing = true

[auth]
algorithms = ["HS256"]
hmac_secret_env = "{SECRET_ENV}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_secs = 0
{auth}

[limits]
messages_per_sec = 1000.0
message_burst = 1000
user_messages_per_sec = 1000.0
bytes_per_sec = 100000000.0
{limits}

[[channels]]
pattern = "news"
subscribe = {{}}
publish = {{}}

[[channels]]
pattern = "big"
subscribe = {{}}
publish = {{}}

[[rpc]]
method = "orders.none"
{extra}
"""
        )
        self.env = dict(os.environ, **{SECRET_ENV: secret, API_KEY_ENV: "k" * 40})
        self.proc: Optional["subprocess.Popen[bytes]"] = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([wsguard_bin(), "serve", "--config", str(self.config)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"wsguard serve exited: {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("wsguard serve did not listen in time")

    def stop(self) -> None:
        """SIGTERM: sessions get 1001 `server_shutdown`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def serve(tmp_path: Path, secret: str) -> Iterator[Callable[..., Serve]]:
    """`serve(extra="", auth="", limits="")`: a started `wsguard serve` (TOML appended to the file,
    to its `[auth]` and to its `[limits]` table), stopped after the test."""
    started: List[Serve] = []

    def make(extra: str = "", auth: str = "", limits: str = "") -> Serve:
        server = Serve(tmp_path, secret, extra, auth, limits)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


def token_source(mint: Mint, sub: str = "alice", ttl: int = 300) -> Callable[[], Awaitable[str]]:
    async def get_token() -> str:
        now = int(time.time())
        return mint(sub, iat=now, exp=now + ttl)

    return get_token


T = TypeVar("T")


async def until(condition: Callable[[], Optional[T]], what: str, timeout: float = WAIT) -> T:
    """Polls `condition` until it returns a truthy value (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder:
    """Collects every client event."""

    def __init__(self) -> None:
        self.events: List[wc.ClientEvent] = []

    def __call__(self, event: wc.ClientEvent) -> None:
        self.events.append(event)

    def of(self, kind: Type[T]) -> List[T]:
        return [e for e in self.events if isinstance(e, kind)]


def run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 45))


# -- pure rules ------------------------------------------------------------------------------


def test_error_codes_match_the_registry() -> None:
    """Every handshake and reply code of docs/ERROR_CODES.md is in the client's table."""
    text = (REPO / "docs" / "ERROR_CODES.md").read_text()
    rows = re.findall(r"^\| (\d{4}) \| `([a-z_]+)` \|", text, re.M)
    assert rows
    for number, name in rows:
        if number[0] in "234":
            assert wc.ERROR_CODES.get(name) == int(number), name


def test_reconnect_table() -> None:
    for code in (1001, 1006, 1011, 1012, 1013, 1014, 4000, 4001, 4002, 4003, 4050, 4099):
        assert wc.reconnect_policy(code) == "backoff", code
    for code in (4100, 4150, 4199):
        assert wc.reconnect_policy(code) == "now", code
    for code in (4501, 4599, 1008, 1002, 1003, 1007, 1009, 1000, 4999, 4200, 4499, 4600):
        assert wc.reconnect_policy(code) == "stop", code


def test_refresh_rule_and_backoff() -> None:
    # 80 % of a 10-minute lifetime comes before exp - 30 s.
    assert wc.refresh_delay(1000.0, 1600.0, 1000.0) == pytest.approx(480.0)
    # For a 60 s token, exp - 30 s is earlier than 80 %.
    assert wc.refresh_delay(1000.0, 1060.0, 1000.0) == pytest.approx(30.0)
    # Never sooner than 1 s from now (short tokens, or already due).
    assert wc.refresh_delay(1000.0, 1003.0, 1000.0) == 1.0
    assert wc.refresh_delay(1000.0, 1600.0, 1590.0) == 1.0
    # Without iat, the lifetime counts from when the token was received.
    assert wc.refresh_delay(None, 1600.0, 1100.0, received=1000.0) == pytest.approx(380.0)
    assert wc.backoff_delay(0, 0.5, 30.0, rng=lambda: 1.0) == 0.5
    assert wc.backoff_delay(3, 0.5, 30.0, rng=lambda: 1.0) == 4.0
    assert wc.backoff_delay(20, 0.5, 30.0, rng=lambda: 1.0) == 30.0
    assert wc.backoff_delay(5, 0.5, 30.0, rng=lambda: 0.0) == 0.0


def test_import_works_without_websockets() -> None:
    """`websockets` is an optional extra: it is imported only when a client connects."""
    code = "import sys; sys.modules['websockets'] = None; import wsguard; print(wsguard.Client.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "Client", done.stderr


def test_token_in_url_is_refused() -> None:
    async def get_token() -> str:
        return "x"

    with pytest.raises(ValueError):
        wsguard.Client("ws://127.0.0.1:1/ws?access_token=abc", get_token)


# -- against `wsguard serve` -----------------------------------------------------------------


def test_pubsub_rpc_and_typed_errors(serve: Callable[..., Serve], mint: Mint) -> None:
    # The subprotocol is the only token source: the client must present it there.
    server = serve(auth='token_sources = ["subprotocol"]')

    async def body() -> None:
        async with wsguard.Client(server.url, token_source(mint)) as client:
            sub = await client.subscribe("news")
            await client.publish("news", {"n": 1})
            message = await sub.next_message(WAIT)
            assert (message.channel, message.payload) == ("news", {"n": 1})

            with pytest.raises(wsguard.ReplyError) as refused:
                await client.subscribe("elsewhere")
            assert (refused.value.code, refused.value.code_name) == (4004, "forbidden")
            assert isinstance(refused.value, wsguard.WsguardError)

            with pytest.raises(wsguard.ReplyError) as unknown:
                await client.rpc("orders.unknown", {"a": 1})
            assert (unknown.value.code, unknown.value.code_name) == (4008, "unknown_method")
            with pytest.raises(wsguard.ReplyError) as failed:
                await client.rpc("orders.none")
            assert (failed.value.code, failed.value.code_name) == (4009, "rpc_failed")
            await client.ping()

            await client.unsubscribe("news")
            events = [event async for event in sub]
            assert isinstance(events[-1], wc.Unsubscribed)
        assert client.closed

    run(body)


def test_rpc_result_on_the_embedded_server(server: wsguard.Server, mint: Mint) -> None:
    @server.rpc("orders.create")
    def create(session: wsguard.Session, payload: Dict[str, Any]) -> Any:
        return {"order": payload["sku"], "by": session.subject}

    host, port = server.address

    async def body() -> None:
        async with wsguard.Client(f"ws://{host}:{port}/ws", token_source(mint)) as client:
            assert await client.rpc("orders.create", {"sku": "A-1"}) == {"order": "A-1", "by": "alice"}

    run(body)


def test_refused_token_stops_with_a_handshake_error(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve()

    async def bad_token() -> str:
        return mint("alice", iss="https://someone-else.test")

    async def body() -> None:
        events = Recorder()
        client = wsguard.Client(server.url, bad_token, on_event=events)
        with pytest.raises(wsguard.HandshakeError) as refused:
            await client.connect()
        assert (refused.value.status, refused.value.code, refused.value.code_name) == (401, 3007, "token_wrong_issuer")
        assert client.closed and not events.of(wc.Reconnecting)
        with pytest.raises(wsguard.ClientClosedError):
            await client.publish("news", {})

    run(body)


def test_send_queue_holds_requests_while_disconnected_and_overflows_loudly(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve()
    server.stop()  # nothing listens: the client retries with backoff meanwhile

    async def body() -> None:
        events = Recorder()
        client = wsguard.Client(server.url, token_source(mint), send_queue_size=2, backoff_base=0.05, backoff_cap=0.2, on_event=events)
        connecting = asyncio.ensure_future(client.connect())
        with pytest.raises(wsguard.RequestTimeoutError) as late:
            await client.ping(timeout=0.05)  # a timeout while waiting in the queue
        assert (late.value.code, late.value.code_name) == (0, "timeout")
        first = asyncio.ensure_future(client.publish("news", {"n": 1}))
        second = asyncio.ensure_future(client.publish("news", {"n": 2}))
        await asyncio.sleep(0)
        with pytest.raises(wsguard.SendQueueFullError) as full:
            await client.publish("news", {"n": 3})
        assert (full.value.code, full.value.code_name) == (0, "queue_full")
        await until(lambda: events.of(wc.Reconnecting), "a retry")
        assert not first.done() and not second.done()

        await asyncio.get_running_loop().run_in_executor(None, server.start)
        await asyncio.wait_for(connecting, WAIT)
        await asyncio.wait_for(asyncio.gather(first, second), WAIT)  # both sent and acked
        await client.close()

    run(body)


def test_server_restart_reconnects_and_resubscribes(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve()

    async def body() -> None:
        events = Recorder()
        sub_events: List[wc.SubscriptionEvent] = []
        client = wsguard.Client(server.url, token_source(mint), backoff_base=0.05, backoff_cap=0.5, on_event=events)
        await client.connect()
        await client.subscribe("news", on_event=sub_events.append)

        await asyncio.get_running_loop().run_in_executor(None, server.stop)  # 1001 server_shutdown
        disconnected = await until(lambda: events.of(wc.Disconnected), "the 1001 close")
        assert disconnected[0].code == 1001 and disconnected[0].reason == "server_shutdown"
        await asyncio.get_running_loop().run_in_executor(None, server.start)

        resubscribed = await until(
            lambda: [e for e in sub_events if isinstance(e, wc.Subscribed) and e.resubscribed], "the resubscription"
        )
        assert resubscribed[0].recovered is None and resubscribed[0].position is None  # no history here
        assert len(events.of(wc.Connected)) == 2 and not client.closed
        await client.publish("news", {"after": "restart"})
        await until(lambda: [e for e in sub_events if isinstance(e, wc.Message) and e.payload == {"after": "restart"}], "a live message")
        await client.close()

    run(body)


def test_handshake_429_retry_after_is_honoured(serve: Callable[..., Serve], mint: Mint) -> None:
    # Burst 1 and one token every 2 s: the second handshake is refused with Retry-After.
    server = serve(limits="handshakes_per_ip_per_sec = 0.5")
    with sync_connect(server.url, subprotocols=["wsguard.v1", "bearer." + mint()], proxy=None):  # type: ignore[list-item]
        pass

    async def body() -> None:
        events = Recorder()
        client = wsguard.Client(server.url, token_source(mint), backoff_base=0.01, backoff_cap=0.02, on_event=events)
        await client.connect()  # refused once, then admitted after Retry-After
        retries = events.of(wc.Reconnecting)
        assert retries, "the first handshake should have been rate limited"
        first = retries[0]
        assert first.cause == "handshake_rate_limited"
        assert first.retry_after is not None and first.retry_after >= 1
        assert first.delay >= first.retry_after  # the backoff (at most 0.02 s) alone would be shorter
        await client.ping()
        await client.close()

    run(body)


def test_short_lived_token_is_refreshed_across_several_expiries(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve()

    async def body() -> None:
        events = Recorder()
        # 3 s tokens, no leeway: without a refresh the session would end with 4100 within 3 s.
        client = wsguard.Client(server.url, token_source(mint, ttl=3), on_event=events)
        await client.connect()
        started = time.monotonic()
        sub = await client.subscribe("news")
        # Stay past two lifetimes: every token the session held until then has expired.
        await until(lambda: time.monotonic() - started > 6.5 and events.of(wc.TokenRefreshed), "two lifetimes", timeout=15)
        assert len(events.of(wc.TokenRefreshed)) >= 3
        assert not events.of(wc.Disconnected) and not events.of(wc.RefreshFailed)
        assert len(events.of(wc.Connected)) == 1
        await client.publish("news", {"still": "here"})
        assert (await sub.next_message(WAIT)).payload == {"still": "here"}
        await client.close()

    run(body)


def test_expiry_without_refresh_reconnects_at_once_with_a_fresh_token(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve()

    async def body() -> None:
        events = Recorder()
        client = wsguard.Client(server.url, token_source(mint, ttl=3), refresh=False, on_event=events)
        await client.connect()
        await until(lambda: len(events.of(wc.Connected)) >= 2, "the reconnect after 4100")
        closes = events.of(wc.Disconnected)
        assert (closes[0].code, closes[0].reason) == (4100, "token_expired")
        retry = events.of(wc.Reconnecting)[0]
        assert retry.delay == 0.0 and retry.cause == "token_expired"
        await client.close()

    run(body)


def test_revocation_stops_the_client_and_surfaces_the_error(server: wsguard.Server, mint: Mint) -> None:
    host, port = server.address

    async def body() -> None:
        events = Recorder()
        client = wsguard.Client(f"ws://{host}:{port}/ws", token_source(mint), backoff_base=0.01, on_event=events)
        await client.connect()
        sub = await client.subscribe("news")
        server.revoke(sub="alice")
        error = await asyncio.wait_for(client.wait_closed(), WAIT)
        assert isinstance(error, wsguard.SessionClosedError)
        assert (error.code, error.code_name) == (4501, "token_revoked")
        assert not events.of(wc.Reconnecting) and len(events.of(wc.Connected)) == 1
        ended = [e async for e in sub]
        assert isinstance(ended[-1], wc.Unsubscribed) and ended[-1].error is error
        with pytest.raises(wsguard.ClientClosedError) as closed:
            await client.publish("news", {})
        assert closed.value.__cause__ is error

    run(body)


def test_slow_consumer_close_then_reconnect(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve(limits="outbound_queue_messages = 4\noutbound_queue_bytes = 65536")
    publisher_token = mint("bob")

    def flood() -> None:
        with sync_connect(server.url, subprotocols=["wsguard.v1", "bearer." + publisher_token], proxy=None) as ws:  # type: ignore[list-item]
            # 15 MB: more than the loopback socket buffers hold while the subscriber stalls.
            for n in range(250):
                ws.send('{"action":"publish","channel":"big","payload":{"n":%d,"pad":"%s"}}' % (n, "x" * 60000))
                ws.recv(timeout=WAIT)

    async def body() -> None:
        events = Recorder()
        blocked = threading.Event()

        def stall(event: wc.SubscriptionEvent) -> None:
            if isinstance(event, wc.Message) and not blocked.is_set():
                blocked.set()
                # Stall the event loop (the client stops reading) while the flood fills the
                # server's outbound queue for this session.
                flooding.join(WAIT)

        client = wsguard.Client(server.url, token_source(mint), backoff_base=0.05, backoff_cap=0.2, on_event=events)
        await client.connect()
        await client.subscribe("big", on_event=stall)
        flooding = threading.Thread(target=flood)
        flooding.start()
        await until(lambda: events.of(wc.Disconnected), "the slow-consumer close")
        closes = events.of(wc.Disconnected)
        assert closes[0].code in (4000, 1006), closes  # 1006 when the half-written frame could not be finished
        await until(lambda: len(events.of(wc.Connected)) >= 2, "the reconnect")
        flooding.join(WAIT)
        await client.close()

    run(body)


# -- needs server features being merged --------------------------------------------------------


HISTORY_RULE = '\n[[channels]]\npattern = "chat:{room}"\nsubscribe = {}\npublish = {}\nhistory_size = 1000\nhistory_ttl_secs = 300\nhistory = {}\n'


class CutProxy:
    """A TCP relay in front of the server whose connections can all be cut at once (a restarted
    load balancer or network: the server keeps its history)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = 0
        self.writers: List[asyncio.StreamWriter] = []
        self.server: Optional[asyncio.AbstractServer] = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()

    async def stop(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


def test_connection_lost_mid_stream_recovers_every_message_without_duplicates(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve(HISTORY_RULE)

    async def body() -> None:
        proxy = CutProxy(server.port)
        await proxy.start()
        received: List[wc.SubscriptionEvent] = []
        subscriber = wsguard.Client(f"ws://127.0.0.1:{proxy.port}/ws", token_source(mint), backoff_base=0.05, backoff_cap=0.2)
        await subscriber.connect()
        await subscriber.subscribe("chat:1", on_event=received.append)
        async with wsguard.Client(server.url, token_source(mint, sub="bob")) as publisher:
            for n in range(200):
                await publisher.publish("chat:1", {"n": n})
                if n in (50, 120):
                    proxy.cut()
        payloads = await until(
            lambda: (lambda ns: ns if len(ns) >= 200 else None)([e.payload["n"] for e in received if isinstance(e, wc.Message)]),
            "every message",
        )
        assert payloads == list(range(200))  # all, in order, no duplicate
        assert any(isinstance(e, wc.Subscribed) and e.recovered for e in received)
        await subscriber.close()
        await proxy.stop()

    run(body)


def test_server_restart_with_history_surfaces_the_epoch_change(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve(HISTORY_RULE)

    async def body() -> None:
        received: List[wc.SubscriptionEvent] = []
        client = wsguard.Client(server.url, token_source(mint), backoff_base=0.05, backoff_cap=0.2)
        await client.connect()
        await client.subscribe("chat:1", on_event=received.append)
        await client.publish("chat:1", {"n": 1})
        await until(lambda: [e for e in received if isinstance(e, wc.Message)], "a message")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, server.stop)
        await loop.run_in_executor(None, server.start)
        # History is kept in memory: a restarted server has a new epoch, announced as a gap.
        await until(lambda: [e for e in received if isinstance(e, wc.Gap) and e.reason == "epoch_changed"], "the epoch gap")
        subscribed = [e for e in received if isinstance(e, wc.Subscribed) and e.resubscribed]
        assert subscribed[0].recovered is False
        page = await client.history("chat:1", limit=10)
        position = subscribed[0].position
        assert position is not None and position.proof is not None  # the next recovery sends it back
        assert (page.position.offset, page.position.epoch) == (position.offset, position.epoch)
        await client.close()

    run(body)


def test_slow_consumer_close_then_recovery(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve(HISTORY_RULE, limits="outbound_queue_messages = 4\noutbound_queue_bytes = 65536")
    publisher_token = mint("bob")

    def flood() -> None:
        with sync_connect(server.url, subprotocols=["wsguard.v1", "bearer." + publisher_token], proxy=None) as ws:  # type: ignore[list-item]
            for n in range(250):
                ws.send('{"action":"publish","channel":"chat:1","payload":{"n":%d,"pad":"%s"}}' % (n, "x" * 60000))
                ws.recv(timeout=WAIT)

    async def body() -> None:
        events = Recorder()
        received: List[int] = []
        flooding = threading.Thread(target=flood)

        def on_event(event: wc.SubscriptionEvent) -> None:
            if isinstance(event, wc.Message):
                received.append(event.payload["n"])
                if len(received) == 1:
                    flooding.join(WAIT)  # stall the loop: the server's queue for us overflows

        client = wsguard.Client(server.url, token_source(mint), backoff_base=0.05, backoff_cap=0.2, on_event=events)
        await client.connect()
        await client.subscribe("chat:1", on_event=on_event)
        flooding.start()
        await until(lambda: len(received) >= 250, "every publication, recovered after the close")
        assert received == list(range(250))
        assert events.of(wc.Disconnected)
        await client.close()

    run(body)


def test_presence_helpers_and_join_leave(serve: Callable[..., Serve], mint: Mint) -> None:
    server = serve('\n[[channels]]\npattern = "room:{id}"\nsubscribe = {}\npublish = {}\npresence = true\njoin_leave = true\npresence_access = {}\n')

    async def body() -> None:
        seen: List[wc.SubscriptionEvent] = []
        async with wsguard.Client(server.url, token_source(mint)) as alice:
            await alice.subscribe("room:1", on_event=seen.append)
            async with wsguard.Client(server.url, token_source(mint, sub="bob")) as bob:
                await bob.subscribe("room:1")
                await until(lambda: [e for e in seen if isinstance(e, wc.Join) and e.user == "bob"], "bob's join")
                stats = await alice.presence_stats("room:1")
                assert (stats.users, stats.clients) == (2, 2)
                page = await alice.presence("room:1", limit=1)
                assert [m.user for m in page.members] == ["alice"] and page.next == "alice"
            await until(lambda: [e for e in seen if isinstance(e, wc.Leave) and e.user == "bob"], "bob's leave")

    run(body)


def test_revocation_through_the_server_api_stops_the_client(serve: Callable[..., Serve], mint: Mint) -> None:
    api_port = free_port()  # the server API has its own listener (docs/API.md)
    server = serve(f'\n[api]\nlisten = "127.0.0.1:{api_port}"\nkey_env = "{API_KEY_ENV}"\n')

    async def body() -> None:
        events = Recorder()
        client = wsguard.Client(server.url, token_source(mint), on_event=events)
        await client.connect()
        request = urllib.request.Request(
            f"http://127.0.0.1:{api_port}/api/v1/revoke",
            data=b'{"sub":"alice"}',
            headers={"Authorization": "Bearer " + "k" * 40, "Content-Type": "application/json"},
            method="POST",
        )
        await asyncio.get_running_loop().run_in_executor(None, lambda: urllib.request.urlopen(request, timeout=WAIT).read())
        error = await asyncio.wait_for(client.wait_closed(), WAIT)
        assert isinstance(error, wsguard.SessionClosedError) and error.code == 4501
        assert not events.of(wc.Reconnecting)

    run(body)


# -- the client's recovery logic against a scripted server speaking the history/presence drafts --


class DraftServer:
    """A scripted WebSocket server that speaks the history and presence drafts of PROTOCOL.md for
    one channel, so the client's side of recovery runs before the real server has it. It records
    every frame the client sends."""

    EPOCH = "e1"

    def __init__(self) -> None:
        self.log: List[Dict[str, Any]] = []  # the channel's publications, offset = index + 1
        self.received: List[Dict[str, Any]] = []
        self.live: List[Any] = []
        self.duplicate_on_recovery = False
        self.refuse_since = False
        self.port = 0
        self.server: Any = None

    async def start(self) -> None:
        from websockets.asyncio.server import serve as ws_serve

        self.server = await ws_serve(self._session, "127.0.0.1", 0, subprotocols=["wsguard.v1"])  # type: ignore[list-item]
        self.port = self.server.sockets[0].getsockname()[1]

    async def _session(self, ws: Any) -> None:
        import json

        async for raw in ws:
            frame = json.loads(raw)
            self.received.append(frame)
            action, rid = frame["action"], frame.get("id")
            if action == "subscribe":
                since = frame.get("since")
                if since is not None and self.refuse_since:
                    await ws.send(json.dumps({"type": "error", "id": rid, "code": "history_not_kept", "message": "no history"}))
                    continue
                ack: Dict[str, Any] = {"type": "ack", "id": rid, "offset": len(self.log), "epoch": self.EPOCH}
                replay: List[Dict[str, Any]] = []
                if since is not None:
                    ack["recovered"] = since["epoch"] == self.EPOCH
                    if ack["recovered"]:
                        start = since["offset"] - 1 if self.duplicate_on_recovery else since["offset"]
                        replay = [self._message(n) for n in range(max(start, 0), len(self.log))]
                await ws.send(json.dumps(ack))
                for message in replay:
                    await ws.send(json.dumps(message))
                if ws not in self.live:
                    self.live.append(ws)
                if since is not None and not ack["recovered"]:
                    await ws.send(json.dumps({"type": "gap", "channel": frame["channel"], "reason": "epoch_changed"}))
            elif action == "unsubscribe":
                if ws in self.live:
                    self.live.remove(ws)
                await ws.send(json.dumps({"type": "ack", "id": rid}))
            elif action == "history":
                page = [self._message(n) for n in range(len(self.log))][: frame.get("limit", 100)]
                await ws.send(json.dumps({"type": "history", "id": rid, "channel": frame["channel"], "offset": len(self.log), "epoch": self.EPOCH, "publications": page}))
            elif action == "presence_stats":
                await ws.send(json.dumps({"type": "presence_stats", "id": rid, "channel": frame["channel"], "users": 2, "clients": 3}))
            elif action == "presence":
                await ws.send(json.dumps({"type": "presence", "id": rid, "channel": frame["channel"], "members": [{"user": "alice", "sessions": 2, "claims": {"name": "A"}}], "next": "alice"}))
            else:
                await ws.send(json.dumps({"type": "ack", "id": rid}))

    def _message(self, index: int) -> Dict[str, Any]:
        return {"type": "message", "channel": "chat:1", "payload": self.log[index], "offset": index + 1}

    async def publish(self, payload: Dict[str, Any], deliver: bool = True) -> None:
        import json

        self.log.append(payload)
        if deliver:
            for ws in list(self.live):
                await ws.send(json.dumps(self._message(len(self.log) - 1)))

    async def send_all(self, frame: Dict[str, Any]) -> None:
        import json

        for ws in list(self.live):
            await ws.send(json.dumps(frame))

    def cut(self) -> None:
        for ws in self.live:
            ws.transport.abort()
        self.live.clear()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


def test_recovery_logic_against_the_draft_protocol(mint: Mint) -> None:
    async def body() -> None:
        fake = DraftServer()
        await fake.start()
        events: List[wc.SubscriptionEvent] = []
        client = wsguard.Client(f"ws://127.0.0.1:{fake.port}/ws", token_source(mint), backoff_base=0.01, backoff_cap=0.05)
        await client.connect()
        sub = await client.subscribe("chat:1", on_event=events.append)
        assert sub.position == wc.Position(0, "e1")

        def payloads() -> List[int]:
            return [e.payload["n"] for e in events if isinstance(e, wc.Message)]

        for n in range(1, 4):
            await fake.publish({"n": n})
        await until(lambda: payloads() == [1, 2, 3], "the live messages")

        # The connection breaks; 4..6 are published meanwhile; the server replays one duplicate.
        fake.cut()
        for n in range(4, 7):
            await fake.publish({"n": n}, deliver=False)
        fake.duplicate_on_recovery = True
        await until(lambda: payloads() == [1, 2, 3, 4, 5, 6], "the recovered messages")
        resubscribe = [f for f in fake.received if f["action"] == "subscribe"][-1]
        assert resubscribe["since"] == {"offset": 3, "epoch": "e1"}
        assert any(isinstance(e, wc.Subscribed) and e.resubscribed and e.recovered for e in events)
        assert sub.position == wc.Position(6, "e1")

        # A slow-consumer gap: the client resubscribes from its position and gets what was dropped.
        await fake.publish({"n": 7}, deliver=False)
        await fake.publish({"n": 8}, deliver=False)
        fake.duplicate_on_recovery = False
        await fake.send_all({"type": "gap", "channel": "chat:1", "missed": 2})
        await until(lambda: payloads() == list(range(1, 9)), "the messages dropped before the gap")
        assert [f["action"] for f in fake.received[-2:]] == ["unsubscribe", "subscribe"]
        assert fake.received[-1]["since"] == {"offset": 6, "epoch": "e1"}

        # An epoch change: the gap surfaces and the position restarts from the ack.
        fake.EPOCH = "e2"
        fake.cut()
        await until(lambda: [e for e in events if isinstance(e, wc.Gap) and e.reason == "epoch_changed"], "the epoch gap")
        assert sub.position == wc.Position(8, "e2")

        # The rule stopped keeping history: the position is refused, the client subscribes without.
        fake.refuse_since = True
        fake.cut()
        await until(lambda: [e for e in events if isinstance(e, wc.Gap) and e.reason == "history_not_kept"], "the refused position")
        await until(lambda: fake.live and "since" not in fake.received[-1], "a plain subscribe")
        assert sub.active

        # Presence frames and helpers.
        await fake.send_all({"type": "join", "channel": "chat:1", "user": "bob", "claims": {"name": "B"}})
        await fake.send_all({"type": "leave", "channel": "chat:1", "user": "bob"})
        await until(lambda: [e for e in events if isinstance(e, wc.Leave)], "join and leave")
        assert wc.Join("chat:1", "bob", {"name": "B"}) in events
        stats = await client.presence_stats("chat:1")
        assert (stats.users, stats.clients) == (2, 3)
        page = await client.presence("chat:1", limit=1)
        assert page.members == [wc.PresenceMember("alice", 2, {"name": "A"})] and page.next == "alice"
        history = await client.history("chat:1", limit=2)
        assert history.position == wc.Position(8, "e2") and [m.offset for m in history.publications] == [1, 2]

        await client.close()
        await fake.stop()

    run(body)
