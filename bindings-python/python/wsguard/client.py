"""``wsguard.Client``: an asyncio client of the wsguard wire protocol v1 (docs/PROTOCOL.md).

Pure Python, on the ``websockets`` library (``pip install wsguard[client]``), imported only when a
client connects, so ``import wsguard`` works without it. The secure behaviour is the default one:

- the token travels only as the subprotocol pair ``wsguard.v1, bearer.<token>``, never in a URL;
- it comes from an async ``get_token()`` callback, called for every (re)connect and before the
  token's ``exp`` for the in-band ``refresh`` (see :func:`refresh_delay`);
- reconnects follow the close code (:func:`reconnect_policy`, the "Client reconnect table" of
  docs/PROTOCOL.md) with exponential backoff and full jitter; a handshake 429/503 waits at least its
  ``Retry-After``; a revocation, a policy close or an authentication refusal stops the client;
- subscriptions are resubscribed after a reconnect, with ``since`` on channels that keep history,
  and duplicates (an offset already seen in the same epoch) are dropped;
- ``publish()``, ``rpc()`` and the other requests are awaitable with a timeout; failures are
  :class:`~wsguard.WsguardError` subclasses carrying a ``code`` and ``code_name``;
- a bounded send queue holds requests while disconnected; a full queue raises
  :class:`SendQueueFullError`, nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
)

from ._errors import WsguardError

if TYPE_CHECKING:  # pragma: no cover - typing only; websockets is imported lazily at runtime
    from websockets.asyncio.client import ClientConnection

_log = logging.getLogger("wsguard.client")

__all__ = [
    "Client",
    "ClientClosedError",
    "ClientEvent",
    "Closed",
    "Connected",
    "ConnectionLostError",
    "Disconnected",
    "Gap",
    "HandshakeError",
    "HistoryPage",
    "Join",
    "Leave",
    "Message",
    "Position",
    "PresenceMember",
    "PresencePage",
    "PresenceStats",
    "Reconnecting",
    "RefreshFailed",
    "ReplyError",
    "RequestTimeoutError",
    "SendQueueFullError",
    "SessionClosedError",
    "Subscribed",
    "Subscription",
    "SubscriptionEvent",
    "TokenError",
    "TokenRefreshed",
    "Unsubscribed",
    "reconnect_policy",
    "refresh_delay",
]

#: The registry's numbers (core/src/error.rs, docs/ERROR_CODES.md) for the codes a client can meet:
#: handshake refusals (2xxx, 3xxx) and reply errors (4xxx). Reply frames carry only the name; the
#: client fills ``code`` from here (0 for a name it does not know). tests/test_client.py checks it
#: against docs/ERROR_CODES.md.
ERROR_CODES: Dict[str, int] = {
    "bad_request": 2001,
    "not_found": 2002,
    "method_not_allowed": 2003,
    "upgrade_required": 2004,
    "headers_too_large": 2005,
    "handshake_timeout": 2006,
    "origin_not_allowed": 2007,
    "server_full": 2008,
    "too_many_connections_per_ip": 2009,
    "too_many_connections_per_user": 2010,
    "handshake_rate_limited": 2011,
    "tls_handshake_failed": 2012,
    "bad_forwarded_header": 2013,
    "rejected_by_hook": 2014,
    "subprotocol_required": 2015,
    "shutting_down": 2016,
    "replay_cache_full": 2017,
    "banned": 2018,
    "over_memory_budget": 2019,
    "quota_unavailable": 2020,
    "keys_unavailable": 2021,
    "proxy_header_untrusted": 2022,
    "proxy_header_missing": 2023,
    "proxy_header_invalid": 2024,
    "too_many_pending_handshakes_per_ip": 2025,
    "jti_store_unavailable": 2026,
    "proxy_unavailable": 2030,
    "token_missing": 3001,
    "token_malformed": 3002,
    "token_expired": 3003,
    "token_not_yet_valid": 3004,
    "token_bad_signature": 3005,
    "token_alg_not_allowed": 3006,
    "token_wrong_issuer": 3007,
    "token_wrong_audience": 3008,
    "token_lifetime_too_long": 3009,
    "token_missing_claim": 3010,
    "token_unknown_key": 3011,
    "token_invalid_claim": 3012,
    "token_revoked": 3013,
    "token_replayed": 3014,
    "invalid_json": 4001,
    "invalid_frame": 4002,
    "invalid_channel": 4003,
    "forbidden": 4004,
    "not_subscribed": 4005,
    "too_many_subscriptions": 4006,
    "payload_too_deep": 4007,
    "unknown_method": 4008,
    "rpc_failed": 4009,
    "hook_timeout": 4010,
    "rate_limited": 4011,
    "replay": 4012,
    "payload_invalid": 4013,
    "refresh_mismatch": 4014,
    "broker_unavailable": 4015,
    # History and recovery (issue 21) and presence: the numbers of their drafts.
    "history_not_kept": 4020,
    "history_offset_ahead": 4021,
    "history_limit_invalid": 4022,
    "history_epoch_changed": 4023,
    "presence_unavailable": 4030,
}


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


class ReplyError(WsguardError):
    """The server answered a request with an ``error`` frame; the session stays open.

    ``code_name`` is the registry name the frame carried (``"forbidden"``), ``code`` its registry
    number (4004). ``retry_after_ms`` is set with ``rate_limited``."""

    __module__ = "wsguard"
    retry_after_ms: Optional[int]

    def __init__(self, message: str, code: int, code_name: str, retry_after_ms: Optional[int] = None) -> None:
        super().__init__(message, code, code_name)
        self.retry_after_ms = retry_after_ms

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self), self.code, self.code_name, self.retry_after_ms))


class HandshakeError(WsguardError):
    """The server refused the WebSocket handshake with an HTTP status.

    ``code`` / ``code_name`` come from the refusal's JSON body (``{"error": name, "code": n}``);
    ``status`` is the HTTP status and ``retry_after`` the ``Retry-After`` header in seconds, if any.
    Raised (and the client stops) for 401, 403 and the statuses that mean "fix the request"
    (400, 404, 405, 426, 431); 408, 429 and 5xx are retried."""

    __module__ = "wsguard"
    status: int
    retry_after: Optional[float]

    def __init__(self, message: str, code: int, code_name: str, status: int, retry_after: Optional[float] = None) -> None:
        super().__init__(message, code, code_name)
        self.status = status
        self.retry_after = retry_after

    def __reduce__(self) -> Tuple[Any, ...]:
        return (type(self), (str(self), self.code, self.code_name, self.status, self.retry_after))


class SessionClosedError(WsguardError):
    """The server closed the session with a close code the client does not reconnect after
    (4501 ``token_revoked``, 1008 ``too_many_violations``, 1002, 1003, 1007, 1009, or a code not in
    the reconnect table).

    Close codes are their own catalogue (docs/PROTOCOL.md section 3): ``code`` is the close code
    (4501) and ``code_name`` the close reason the server sent (``"token_revoked"``)."""

    __module__ = "wsguard"

    @property
    def close_code(self) -> int:
        return self.code


class _ClientSideError(WsguardError):
    """A failure decided by the client itself: ``code`` is 0 (no registry number)."""

    __module__ = "wsguard"
    _name = "client_error"

    def __init__(self, message: str, code: int = 0, code_name: str = "") -> None:
        super().__init__(message, code, code_name or self._name)


class RequestTimeoutError(_ClientSideError, asyncio.TimeoutError):
    """No reply within the request's timeout (``code_name`` ``"timeout"``, ``code`` 0). The request
    may still have been processed by the server."""

    __module__ = "wsguard"
    _name = "timeout"


class SendQueueFullError(_ClientSideError):
    """The send queue already holds ``send_queue_size`` requests (``code_name``
    ``"queue_full"``, ``code`` 0); this request was not queued."""

    __module__ = "wsguard"
    _name = "queue_full"


class ConnectionLostError(_ClientSideError):
    """The connection ended after the request was sent and before its reply (``code_name``
    ``"connection_lost"``, ``code`` 0): whether the server processed it is unknown. Requests
    still queued are not affected; they are sent after the reconnect."""

    __module__ = "wsguard"
    _name = "connection_lost"


class TokenError(_ClientSideError):
    """``get_token()`` raised or returned something that is not a non-empty string
    (``code_name`` ``"get_token_failed"``, ``code`` 0); reported with :class:`RefreshFailed`, and
    at a (re)connect retried with backoff."""

    __module__ = "wsguard"
    _name = "get_token_failed"


class ClientClosedError(_ClientSideError):
    """The client is closed (``code_name`` ``"client_closed"``, ``code`` 0): by ``close()``, or
    because a terminal error stopped it, which is then ``__cause__`` and ``Client.error``."""

    __module__ = "wsguard"
    _name = "client_closed"


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Position:
    """A stream position the server gave out: a ``message`` offset, the channel's epoch, and the
    ``proof`` of the subscribe ack it follows (the server replays only from a position it can
    verify this user was subscribed at; without the proof a recovery is a :class:`Gap`)."""

    offset: int
    epoch: str
    proof: Optional[str] = None


@dataclass(frozen=True)
class Message:
    """A publication on a subscribed channel. ``offset`` is set on channels that keep history;
    ``publisher`` is the server's ``from`` stamp on channels whose rule stamps publishers."""

    channel: str
    payload: Dict[str, Any]
    offset: Optional[int] = None
    publisher: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class Subscribed:
    """The server acknowledged a (re)subscription. ``position`` is the channel's position when
    the subscription started (channels with history); ``recovered`` is ``True`` when the missed
    publications follow (a resubscription with ``since``), ``False`` when they could not be
    (a :class:`Gap` follows), ``None`` when no ``since`` was sent. ``resubscribed`` is ``True``
    after a reconnect or a resync."""

    channel: str
    position: Optional[Position]
    recovered: Optional[bool]
    resubscribed: bool


@dataclass(frozen=True)
class Gap:
    """Publications may have been lost: ``missed`` of them (a slow-consumer drop), or an unknown
    number with ``reason`` (``broker_reconnected``, ``epoch_changed``, ``history_trimmed``,
    ``position_unproven``; or ``history_not_kept`` / ``history_offset_ahead`` when a
    resubscription's position was refused and the client subscribed without it). On a channel without history a reconnect is not a
    ``Gap``: the ``Subscribed(resubscribed=True)`` without a position says the publications in
    between were not recovered."""

    channel: str
    missed: Optional[int] = None
    reason: Optional[str] = None


@dataclass(frozen=True)
class Join:
    """A user's first session subscribed to the channel (rules with ``join_leave``)."""

    channel: str
    user: str
    claims: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class Leave:
    """A user's last session left the channel (rules with ``join_leave``)."""

    channel: str
    user: str


@dataclass(frozen=True)
class Unsubscribed:
    """The subscription ended: the server removed it (``reason`` ``"forbidden"`` after a
    ``refresh``), a resubscription was refused (``error`` set), or ``unsubscribe()`` /
    ``close()`` ended it (``reason`` ``"unsubscribed"`` / ``"client_closed"``). It is the last
    event of the subscription."""

    channel: str
    reason: str
    error: Optional[WsguardError] = None


SubscriptionEvent = Union[Message, Subscribed, Gap, Join, Leave, Unsubscribed]


@dataclass(frozen=True)
class Connected:
    """A session is open (``attempt`` is 1 for the first connection, counting every try)."""

    attempt: int


@dataclass(frozen=True)
class Disconnected:
    """The session ended. ``code`` is the close code (1006 when the connection broke without a
    close frame), ``reason`` the close reason."""

    code: int
    reason: str


@dataclass(frozen=True)
class Reconnecting:
    """The client will try again after ``delay`` seconds, because of ``cause`` (the close code's
    reason, the refused handshake's error name, or ``"network"``). ``retry_after`` is the
    server's ``Retry-After`` when it sent one."""

    delay: float
    cause: str
    retry_after: Optional[float] = None


@dataclass(frozen=True)
class TokenRefreshed:
    """An in-band ``refresh`` succeeded; the session now ends at ``expires_at`` (Unix seconds)."""

    expires_at: Optional[float]


@dataclass(frozen=True)
class RefreshFailed:
    """An in-band ``refresh`` failed; the session keeps its old token (and ends at its expiry
    with 4100, after which the client reconnects with a fresh token)."""

    error: WsguardError


@dataclass(frozen=True)
class Closed:
    """The client stopped for good: ``error`` is the terminal error, ``None`` after ``close()``."""

    error: Optional[WsguardError]


ClientEvent = Union[Connected, Disconnected, Reconnecting, TokenRefreshed, RefreshFailed, Closed]


@dataclass(frozen=True)
class HistoryPage:
    """Answer to ``history()``: the channel's position when read and the kept publications."""

    channel: str
    position: Position
    publications: List[Message]


@dataclass(frozen=True)
class PresenceMember:
    user: str
    sessions: int
    claims: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class PresencePage:
    """One page of ``presence()``: pass ``next`` as ``after`` for the following page."""

    channel: str
    members: List[PresenceMember]
    next: Optional[str] = None


@dataclass(frozen=True)
class PresenceStats:
    channel: str
    users: int
    clients: int


# ---------------------------------------------------------------------------------------------
# The reconnect table and the refresh rule (pure functions, documented in the README)
# ---------------------------------------------------------------------------------------------

#: Close codes after which the client reconnects with backoff.
_BACKOFF_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014, 4000, 4001, 4002, 4003})


def reconnect_policy(close_code: int) -> str:
    """The client reconnect table (docs/PROTOCOL.md, "Client reconnect table"): ``"backoff"``,
    ``"now"`` (with a fresh token) or ``"stop"``.

    - backoff: 1001 server_shutdown, 1006 abnormal closure (also 4002 write_timeout and network
      errors), 1011-1014, and 4000-4099 (4000 slow_consumer, 4001 disconnected, 4003
      idle_timeout, or a host's own code in that range);
    - now: 4100-4199 (4100 token_expired; with backoff instead when the session lasted under 1 s);
    - stop: 4500-4599 (4501 token_revoked), 1008 too_many_violations, 1002, 1003, 1007, 1009 and
      every other code (1000 and the application's 4200-4499 and 4600-4999 included: a safe
      default)."""
    if close_code in _BACKOFF_CODES or 4000 <= close_code <= 4099:
        return "backoff"
    if 4100 <= close_code <= 4199:
        return "now"
    return "stop"


#: The shortest wait before a refresh (seconds), so a very short token never loops.
MIN_REFRESH_DELAY = 1.0


def refresh_delay(iat: Optional[float], exp: float, now: float, received: Optional[float] = None) -> float:
    """Seconds from ``now`` until the in-band refresh of a token valid from ``iat`` to ``exp``: the
    earlier of 80 % of its lifetime (``iat + 0.8 * (exp - iat)``) and ``exp - 30 s``, but never
    sooner than 1 s from now (the same rule as the TypeScript client). Without ``iat`` the
    lifetime counts from ``received`` (when the client got the token; default ``now``)."""
    issued = iat if iat is not None else (now if received is None else received)
    target = min(issued + 0.8 * (exp - issued), exp - 30.0)
    return max(MIN_REFRESH_DELAY, target - now)


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**attempt)]`` (``attempt`` from 0)."""
    return float(rng() * min(cap, base * (2.0 ** min(attempt, 62))))


def _token_times(token: str) -> Tuple[Optional[float], Optional[float]]:
    """``(iat, exp)`` read from the token's payload, unverified (only to schedule the refresh;
    the server verifies). ``(None, None)`` when the token is not a readable JWT."""
    try:
        body = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (IndexError, ValueError):
        return None, None
    if not isinstance(claims, dict):
        return None, None

    def number(key: str) -> Optional[float]:
        value = claims.get(key)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    return number("iat"), number("exp")


def _reply_error(frame: Mapping[str, Any]) -> ReplyError:
    name = str(frame.get("code", ""))
    retry = frame.get("retry_after_ms")
    return ReplyError(
        str(frame.get("message", name)),
        ERROR_CODES.get(name, 0),
        name,
        retry if isinstance(retry, int) else None,
    )


def _message(frame: Mapping[str, Any]) -> Message:
    offset = frame.get("offset")
    publisher = frame.get("from")
    payload = frame.get("payload")
    return Message(
        channel=str(frame.get("channel", "")),
        payload=payload if isinstance(payload, dict) else {},
        offset=offset if isinstance(offset, int) else None,
        publisher=publisher if isinstance(publisher, dict) else None,
    )


# ---------------------------------------------------------------------------------------------
# Subscriptions
# ---------------------------------------------------------------------------------------------

_END = object()


class Subscription:
    """A channel subscription, kept across reconnects until ``unsubscribe()``.

    Iterate it (``async for event in sub``) for its typed events, or pass ``on_event`` to
    ``Client.subscribe``. Events wait in an unbounded queue until read, so read them (or use
    ``on_event``). ``position`` is the last position seen on a channel with history."""

    def __init__(self, channel: str, on_event: Optional[Callable[[SubscriptionEvent], None]]) -> None:
        self.channel = channel
        self.position: Optional[Position] = None
        self._on_event = on_event
        self._queue: "asyncio.Queue[object]" = asyncio.Queue()
        self._active = True
        # While resyncing after a gap, the channel's frames are dropped until the subscribe ack.
        self._resyncing = False
        self._acked = False

    @property
    def active(self) -> bool:
        return self._active

    def _emit(self, event: SubscriptionEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # the application's callback must not break the connection
                _log.exception("wsguard.Client: on_event callback of %r raised", self.channel)
        else:
            self._queue.put_nowait(event)

    def _end(self, event: Unsubscribed) -> None:
        if self._active:
            self._active = False
            self._emit(event)
            self._queue.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[SubscriptionEvent]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[SubscriptionEvent]:
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # later iterations end too
                return
            assert isinstance(item, (Message, Subscribed, Gap, Join, Leave, Unsubscribed))
            yield item

    async def next_message(self, timeout: Optional[float] = None) -> Message:
        """The next :class:`Message`, skipping other events; raises :class:`ClientClosedError`
        when the subscription ends, :class:`RequestTimeoutError` after ``timeout`` seconds."""

        async def read() -> Message:
            async for event in self:
                if isinstance(event, Message):
                    return event
            raise ClientClosedError(f"subscription to {self.channel!r} ended")

        try:
            return await asyncio.wait_for(read(), timeout)
        except asyncio.TimeoutError as exc:
            if isinstance(exc, RequestTimeoutError):
                raise
            raise RequestTimeoutError(f"no message on {self.channel!r} within {timeout} s") from None


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------


@dataclass
class _Request:
    frame: Dict[str, Any]
    future: "asyncio.Future[Dict[str, Any]]"
    sent: bool = False
    #: Called by the reader with the reply, before any later frame is handled.
    on_reply: Optional[Callable[[Dict[str, Any]], None]] = None


@dataclass
class _Attempt:
    """What one connection attempt ended with, for the reconnect decision."""

    policy: str  # "backoff" | "now" | "stop"
    cause: str
    error: Optional[WsguardError] = None
    retry_after: Optional[float] = None
    stable: bool = False


GetToken = Callable[[], Awaitable[str]]


class Client:
    """An asyncio wsguard client. ``get_token`` is awaited for every (re)connect and for each
    in-band refresh. Use ``async with Client(...) as client:`` or ``await client.connect()`` /
    ``await client.close()``.

    Options (seconds unless named otherwise): ``origin`` (sent as ``Origin``), ``request_timeout``
    (default of every request, 10), ``open_timeout`` (one handshake, 10), ``backoff_base`` (0.5),
    ``backoff_cap`` (30), ``stable_after`` (a session open this long resets the backoff, 10),
    ``send_queue_size`` (requests waiting to be sent, 1000), ``refresh`` (refresh in band before
    ``exp``, True), ``ping_interval`` (WebSocket pings, 20; None: off), ``on_event`` (receives
    every :data:`ClientEvent`), ``max_message_bytes`` (largest frame accepted, 1 MiB)."""

    def __init__(
        self,
        url: str,
        get_token: GetToken,
        *,
        origin: Optional[str] = None,
        request_timeout: float = 10.0,
        open_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        stable_after: float = 10.0,
        send_queue_size: int = 1000,
        refresh: bool = True,
        ping_interval: Optional[float] = 20.0,
        max_message_bytes: int = 1 << 20,
        on_event: Optional[Callable[[ClientEvent], None]] = None,
    ) -> None:
        if "access_token=" in url:
            raise ValueError("wsguard.Client: never put a token in the URL; get_token() provides it")
        if send_queue_size < 1:
            raise ValueError("send_queue_size must be at least 1")
        if backoff_base <= 0 or backoff_cap < backoff_base:
            raise ValueError("backoff_base must be > 0 and backoff_cap >= backoff_base")
        self.url = url
        self._get_token = get_token
        self._origin = origin
        self.request_timeout = request_timeout
        self._open_timeout = open_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._stable_after = stable_after
        self._queue_size = send_queue_size
        self._refresh_enabled = refresh
        self._ping_interval = ping_interval
        self._max_message_bytes = max_message_bytes
        self._on_event = on_event

        self._subs: Dict[str, Subscription] = {}
        self._queue: Deque[_Request] = collections.deque()
        self._inflight: Dict[int, _Request] = {}
        self._next_id = 0
        self._wake = asyncio.Event()
        self._ws: Optional[ClientConnection] = None
        self._open = asyncio.Event()
        self._runner: Optional["asyncio.Task[None]"] = None
        self._closing = False
        self._stopped = asyncio.Event()
        self.error: Optional[WsguardError] = None
        self._attempts = 0
        self._token_exp: Optional[float] = None
        self._token_iat: Optional[float] = None
        self._token_received: Optional[float] = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while a session is open."""
        return self._open.is_set()

    @property
    def closed(self) -> bool:
        """True once the client stopped (``close()`` or a terminal error)."""
        return self._stopped.is_set()

    async def connect(self) -> None:
        """Starts the client and waits for its first session. Retries (per the reconnect table)
        until one opens; raises the terminal error if the client stops first."""
        if self._stopped.is_set():
            raise ClientClosedError("the client is closed") from self.error
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run())
        await self.wait_connected()

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Waits until a session is open; raises the terminal error if the client stops."""
        opened = asyncio.ensure_future(self._open.wait())
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            done, _ = await asyncio.wait({opened, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            opened.cancel()
            stopped.cancel()
        if self._open.is_set():
            return
        if self._stopped.is_set():
            if self.error is not None:
                raise self.error
            raise ClientClosedError("the client is closed")
        raise RequestTimeoutError(f"not connected within {timeout} s")

    async def wait_closed(self) -> Optional[WsguardError]:
        """Waits until the client stops; returns its terminal error (``None`` after ``close()``)."""
        await self._stopped.wait()
        return self.error

    async def close(self) -> None:
        """Closes the session (code 1000) and stops the client. Pending requests fail with
        :class:`ClientClosedError`; subscriptions end with :class:`Unsubscribed`."""
        self._closing = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._finish(None)

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.close()

    # -- requests -------------------------------------------------------------------------------

    async def subscribe(
        self,
        channel: str,
        *,
        on_event: Optional[Callable[[SubscriptionEvent], None]] = None,
        timeout: Optional[float] = None,
    ) -> Subscription:
        """Subscribes to ``channel`` and waits for the server's ``ack`` (a refusal raises
        :class:`ReplyError`). The subscription is renewed after every reconnect until
        ``unsubscribe()``. Subscribing twice returns the existing subscription."""
        self._check_open()
        existing = self._subs.get(channel)
        if existing is not None and existing.active:
            return existing
        sub = Subscription(channel, on_event)
        self._subs[channel] = sub

        def on_ack(reply: Dict[str, Any]) -> None:
            if reply.get("type") != "error" and self._subs.get(channel) is sub:
                self._on_subscribe_ack(sub, reply, since=None, resubscribed=False)

        try:
            while True:
                try:
                    await self._request({"action": "subscribe", "channel": channel}, timeout, on_ack)
                    break
                except ConnectionLostError:
                    continue  # sent on a connection that broke before the ack: ask again
        except BaseException:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            sub._active = False
            raise
        return sub

    async def unsubscribe(self, channel: str, *, timeout: Optional[float] = None) -> None:
        """Ends the subscription (its iterator ends with an :class:`Unsubscribed`)."""
        sub = self._subs.pop(channel, None)
        if sub is None:
            return
        sub._end(Unsubscribed(channel, "unsubscribed"))
        if self.connected:
            with contextlib.suppress(ReplyError):  # not_subscribed: already gone server-side
                await self._request({"action": "unsubscribe", "channel": channel}, timeout)

    async def publish(self, channel: str, payload: Mapping[str, Any], *, timeout: Optional[float] = None) -> None:
        """Publishes ``payload`` (a JSON object) and waits for the ``ack``."""
        await self._request({"action": "publish", "channel": channel, "payload": dict(payload)}, timeout)

    async def rpc(self, method: str, payload: Optional[Mapping[str, Any]] = None, *, timeout: Optional[float] = None) -> Any:
        """Calls RPC ``method`` and returns its result (any JSON value)."""
        frame: Dict[str, Any] = {"action": "rpc", "method": method}
        if payload is not None:
            frame["payload"] = dict(payload)
        reply = await self._request(frame, timeout)
        return reply.get("payload")

    async def ping(self, *, timeout: Optional[float] = None) -> None:
        """An application-level ``ping`` answered by ``pong``."""
        await self._request({"action": "ping"}, timeout)

    async def history(
        self,
        channel: str,
        *,
        limit: Optional[int] = None,
        since: Optional[Position] = None,
        newest_first: bool = False,
        timeout: Optional[float] = None,
    ) -> HistoryPage:
        """Reads kept publications of ``channel`` (the ``history`` action; see docs/PROTOCOL.md,
        "History and recovery")."""
        frame: Dict[str, Any] = {"action": "history", "channel": channel}
        if limit is not None:
            frame["limit"] = limit
        if since is not None:
            frame["since"] = {"offset": since.offset, "epoch": since.epoch}
        if newest_first:
            frame["newest_first"] = True
        reply = await self._request(frame, timeout)
        publications = reply.get("publications")
        return HistoryPage(
            channel=str(reply.get("channel", channel)),
            position=Position(int(reply.get("offset", 0)), str(reply.get("epoch", ""))),
            publications=[_message(p) for p in publications if isinstance(p, dict)] if isinstance(publications, list) else [],
        )

    async def presence(
        self, channel: str, *, limit: Optional[int] = None, after: Optional[str] = None, timeout: Optional[float] = None
    ) -> PresencePage:
        """One page of the channel's members (the ``presence`` action)."""
        frame: Dict[str, Any] = {"action": "presence", "channel": channel}
        if limit is not None:
            frame["limit"] = limit
        if after is not None:
            frame["after"] = after
        reply = await self._request(frame, timeout)
        members = reply.get("members")
        next_after = reply.get("next")
        return PresencePage(
            channel=str(reply.get("channel", channel)),
            members=[
                PresenceMember(
                    str(m.get("user", "")),
                    int(m.get("sessions", 0)),
                    m.get("claims") if isinstance(m.get("claims"), dict) else None,
                )
                for m in (members if isinstance(members, list) else [])
                if isinstance(m, dict)
            ],
            next=next_after if isinstance(next_after, str) else None,
        )

    async def presence_stats(self, channel: str, *, timeout: Optional[float] = None) -> PresenceStats:
        """Distinct users and subscribed sessions of the channel (the ``presence_stats`` action)."""
        reply = await self._request({"action": "presence_stats", "channel": channel}, timeout)
        return PresenceStats(str(reply.get("channel", channel)), int(reply.get("users", 0)), int(reply.get("clients", 0)))

    # -- internals: requests --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._stopped.is_set() or self._closing:
            raise ClientClosedError("the client is closed") from self.error

    def _allocate_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def _request(
        self,
        frame: Dict[str, Any],
        timeout: Optional[float],
        on_reply: Optional[Callable[[Dict[str, Any]], None]] = None,
    ) -> Dict[str, Any]:
        """Queues ``frame`` and waits for its reply (``ack``, ``result``, ...); an ``error`` reply
        raises :class:`ReplyError`. The timeout covers the wait in the queue too."""
        self._check_open()
        if len(self._queue) >= self._queue_size:
            raise SendQueueFullError(f"the send queue holds {self._queue_size} requests")
        future: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        request = _Request(frame, future, on_reply=on_reply)
        self._queue.append(request)
        self._wake.set()
        wait = self.request_timeout if timeout is None else timeout
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), wait)
        except asyncio.TimeoutError:
            raise RequestTimeoutError(f"{frame['action']}: no reply within {wait} s") from None
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                self._queue.remove(request)
            request_id = frame.get("id")
            if isinstance(request_id, int) and self._inflight.get(request_id) is request:
                del self._inflight[request_id]
        if reply.get("type") == "error":
            raise _reply_error(reply)
        return reply

    # -- internals: the connection loop ---------------------------------------------------------

    def _emit(self, event: ClientEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # the application's callback must not break the client
                _log.exception("wsguard.Client: on_event callback raised")

    def _finish(self, error: Optional[WsguardError]) -> None:
        if self._stopped.is_set():
            return
        self.error = error
        closed = ClientClosedError("the client is closed")
        if error is not None:
            closed.__cause__ = error
        for request in list(self._inflight.values()) + list(self._queue):
            if not request.future.done():
                request.future.set_exception(closed)
        self._inflight.clear()
        self._queue.clear()
        for sub in list(self._subs.values()):
            sub._end(Unsubscribed(sub.channel, "client_closed", error))
        self._subs.clear()
        self._open.clear()
        self._stopped.set()
        self._emit(Closed(error))

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._closing:
                outcome = await self._attempt()
                if self._closing:
                    break
                if outcome.policy == "stop":
                    self._finish(outcome.error)
                    return
                if outcome.stable:
                    failures = 0
                if outcome.policy == "now":
                    delay = 0.0
                else:
                    delay = backoff_delay(failures, self._backoff_base, self._backoff_cap)
                    failures += 1
                    if outcome.retry_after is not None:
                        delay = max(delay, outcome.retry_after)
                self._emit(Reconnecting(delay, outcome.cause, outcome.retry_after))
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            if not self._stopped.is_set() and self._closing:
                self._finish(None)

    async def _attempt(self) -> _Attempt:
        """One connection: handshake, resubscribe, serve until it ends; says what to do next."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidHandshake
        from websockets.typing import Subprotocol

        self._attempts += 1
        try:
            token = await self._get_token()
            if not isinstance(token, str) or not token:
                raise ValueError("not a non-empty string")
        except Exception:  # the application's token source failed: try again later
            return _Attempt("backoff", "get_token_failed")
        self._remember_token(token)
        headers = {"Origin": self._origin} if self._origin else None
        try:
            ws = await connect(
                self.url,
                subprotocols=[Subprotocol("wsguard.v1"), Subprotocol("bearer." + token)],
                additional_headers=headers,
                open_timeout=self._open_timeout,
                ping_interval=self._ping_interval,
                max_size=self._max_message_bytes,
                proxy=None,
                compression=None,
            )
        except InvalidStatus as exc:
            body = exc.response.body
            return self._refused(exc.response.status_code, exc.response.headers.get("Retry-After"), bytes(body) if body else None)
        except (OSError, asyncio.TimeoutError, InvalidHandshake):
            return _Attempt("backoff", "network")

        self._ws = ws
        opened_at = time.monotonic()
        self._open.set()
        self._emit(Connected(self._attempts))
        tasks: List["asyncio.Task[None]"] = []
        try:
            loop = asyncio.get_running_loop()
            reader = loop.create_task(self._reader(ws))
            tasks = [reader, loop.create_task(self._writer(ws))]
            if self._refresh_enabled:
                tasks.append(loop.create_task(self._refresher(ws)))
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                failure = task.exception() if task.done() and not task.cancelled() else None
                if failure is not None and not isinstance(failure, ConnectionClosed):
                    _log.error("wsguard.Client: internal failure, closing the session", exc_info=failure)
                    await ws.close(1011)
            await ws.wait_closed()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            self._ws = None
            self._open.clear()
            self._connection_lost()
        lasted = time.monotonic() - opened_at
        stable = lasted >= self._stable_after
        code = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ("connection_lost" if code == 1006 else f"close_{code}")
        self._emit(Disconnected(code, reason))
        policy = reconnect_policy(code)
        if policy == "now" and lasted < 1.0:
            policy = "backoff"  # a token that expires at once: do not loop
        error = SessionClosedError(f"the server closed the session: {code} {reason}", code, reason) if policy == "stop" else None
        return _Attempt(policy, reason or str(code), error, stable=stable)

    def _refused(self, status: int, retry_after_header: Optional[str], body: Optional[bytes]) -> _Attempt:
        name, code = f"http_{status}", 0
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            parsed = json.loads(body or b"")
            name, code = str(parsed["error"]), int(parsed["code"])
        retry_after: Optional[float] = None
        if retry_after_header is not None:
            with contextlib.suppress(ValueError):
                retry_after = max(float(retry_after_header), 0.0)
        error = HandshakeError(f"handshake refused: {status} {name}", code, name, status, retry_after)
        if status in (408, 429) or status >= 500:
            return _Attempt("backoff", name, error, retry_after)
        return _Attempt("stop", name, error)

    def _remember_token(self, token: str) -> None:
        self._token_iat, self._token_exp = _token_times(token)
        self._token_received = time.time()

    def _connection_lost(self) -> None:
        """Requests sent on the lost connection fail with :class:`ConnectionLostError`; queued ones
        wait for the next connection."""
        lost = [r for r in self._inflight.values()]
        self._inflight.clear()
        for request in lost:
            if not request.future.done():
                request.future.set_exception(ConnectionLostError(f"{request.frame['action']}: the connection was lost"))

    async def _send(self, ws: "ClientConnection", frame: Dict[str, Any]) -> None:
        await ws.send(json.dumps(frame, separators=(",", ":")))

    async def _writer(self, ws: "ClientConnection") -> None:
        # The resubscribe round first, then the queue in order.
        for sub in list(self._subs.values()):
            if sub._acked:
                await self._resubscribe(ws, sub)
        while True:
            while self._queue:
                request = self._queue.popleft()
                if request.future.done():
                    continue
                request.frame["id"] = self._allocate_id()
                self._inflight[request.frame["id"]] = request
                request.sent = True
                try:
                    await self._send(ws, request.frame)
                except BaseException:
                    # Not sent: back to the head of the queue for the next connection.
                    del self._inflight[request.frame["id"]]
                    request.sent = False
                    self._queue.appendleft(request)
                    raise
            self._wake.clear()
            await self._wake.wait()

    async def _resubscribe(self, ws: "ClientConnection", sub: Subscription, extra: Optional[List[Dict[str, Any]]] = None) -> None:
        """Sends ``subscribe`` (with ``since`` when the channel has a position); the reply is
        handled by the reader."""
        frame: Dict[str, Any] = {"action": "subscribe", "channel": sub.channel, "id": self._allocate_id()}
        since = sub.position
        if since is not None:
            frame["since"] = {"offset": since.offset, "epoch": since.epoch}
            if since.proof is not None:
                frame["proof"] = since.proof
        future: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()

        def on_reply(reply: Dict[str, Any]) -> None:
            if self._subs.get(sub.channel) is not sub:
                return
            if reply.get("type") == "error":
                error = _reply_error(reply)
                if since is not None and error.code_name in ("history_not_kept", "history_offset_ahead"):
                    # The position cannot be used (the rule stopped keeping history): say so and
                    # subscribe without it.
                    sub._emit(Gap(sub.channel, reason=error.code_name))
                    sub.position = None
                    asyncio.get_running_loop().create_task(self._resubscribe(ws, sub))
                    return
                del self._subs[sub.channel]
                sub._end(Unsubscribed(sub.channel, error.code_name, error))
                return
            self._on_subscribe_ack(sub, reply, since=since, resubscribed=True)

        # Nobody awaits this future: retrieve a lost connection's exception so it is not reported.
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._inflight[frame["id"]] = _Request(frame, future, sent=True, on_reply=on_reply)
        for pre in extra or []:
            await self._send(ws, pre)
        await self._send(ws, frame)

    def _on_subscribe_ack(self, sub: Subscription, reply: Mapping[str, Any], *, since: Optional[Position], resubscribed: bool) -> None:
        offset, epoch, recovered = reply.get("offset"), reply.get("epoch"), reply.get("recovered")
        proof = reply.get("proof") if isinstance(reply.get("proof"), str) else None
        position = Position(offset, epoch, proof) if isinstance(offset, int) and isinstance(epoch, str) else None
        sub._acked = True
        sub._resyncing = False
        recovered_flag = recovered if isinstance(recovered, bool) and since is not None else None
        if position is not None and recovered_flag is not True:
            sub.position = position
        elif position is None:
            sub.position = None
        elif sub.position is not None:
            # Recovered: the replayed messages move the offset; the new proof vouches for it.
            sub.position = Position(sub.position.offset, sub.position.epoch, proof)
        sub._emit(Subscribed(sub.channel, position, recovered_flag, resubscribed))

    async def _reader(self, ws: "ClientConnection") -> None:
        async for raw in ws:
            try:
                frame = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(frame, dict):
                continue
            kind = frame.get("type")
            request_id = frame.get("id")
            if kind in ("ack", "pong", "result", "error", "history", "presence", "presence_stats") and isinstance(request_id, int):
                request = self._inflight.pop(request_id, None)
                if request is not None:
                    if request.on_reply is not None:
                        request.on_reply(frame)
                    if not request.future.done():
                        request.future.set_result(frame)
                continue
            self._dispatch(ws, frame)

    def _dispatch(self, ws: "ClientConnection", frame: Dict[str, Any]) -> None:
        kind = frame.get("type")
        channel = frame.get("channel")
        if not isinstance(channel, str):
            return
        sub = self._subs.get(channel)
        if sub is None or not sub.active:
            return
        if kind == "message":
            if sub._resyncing:
                return
            message = _message(frame)
            if message.offset is not None and sub.position is not None:
                if message.offset <= sub.position.offset:
                    return  # already delivered: a duplicate across a reconnect
                sub.position = Position(message.offset, sub.position.epoch, sub.position.proof)
            sub._emit(message)
        elif kind == "gap":
            missed, reason = frame.get("missed"), frame.get("reason")
            gap = Gap(channel, missed if isinstance(missed, int) else None, reason if isinstance(reason, str) else None)
            if sub._resyncing:
                return
            sub._emit(gap)
            if sub.position is not None and (gap.missed is not None or gap.reason == "broker_reconnected"):
                # Recover the dropped publications: unsubscribe, then subscribe from the position
                # held before the gap; the channel's frames are dropped until that ack.
                sub._resyncing = True
                unsub = {"action": "unsubscribe", "channel": channel, "id": self._allocate_id()}
                asyncio.get_running_loop().create_task(self._resubscribe(ws, sub, [unsub]))
        elif kind == "join":
            claims = frame.get("claims")
            sub._emit(Join(channel, str(frame.get("user", "")), claims if isinstance(claims, dict) else None))
        elif kind == "leave":
            sub._emit(Leave(channel, str(frame.get("user", ""))))
        elif kind == "unsubscribed":
            del self._subs[channel]
            sub._end(Unsubscribed(channel, str(frame.get("reason", "forbidden"))))

    async def _refresher(self, ws: "ClientConnection") -> None:
        exp = self._token_exp
        if exp is None:
            return  # not a readable JWT: the session ends at its expiry (4100) and reconnects
        delay = refresh_delay(self._token_iat, exp, time.time(), self._token_received)
        while True:
            await asyncio.sleep(delay)
            try:
                token = await self._get_token()
                if not isinstance(token, str) or not token:
                    raise ValueError("get_token() did not return a non-empty string")
            except Exception as exc:  # the application's token source failed
                error: WsguardError = TokenError(f"get_token() failed: {exc!r}")
            else:
                received = time.time()
                try:
                    await self._request({"action": "refresh", "token": token}, None)
                except WsguardError as refused:
                    error = refused
                else:
                    iat, new_exp = _token_times(token)
                    self._token_iat, self._token_received = iat, received
                    self._emit(TokenRefreshed(new_exp))
                    if new_exp is None:
                        return
                    exp = new_exp
                    self._token_exp = exp
                    delay = refresh_delay(iat, exp, time.time(), received)
                    continue
            self._emit(RefreshFailed(error))
            if isinstance(error, (ConnectionLostError, ClientClosedError)):
                return
            # Try again halfway to the current expiry if that leaves time; otherwise the session
            # ends at its expiry (4100) and the client reconnects with a fresh token.
            left = exp - time.time()
            if left < 2.0:
                return
            delay = max(1.0, left / 2)
