"""wsguard: a hardened WebSocket pub/sub server, driven from Python.

The Rust core does every check (TLS, Origin allowlist, JWT verification, quotas, rate limits,
strict frame decoding, channel policy); this package only starts it, passes it your handlers and
converts values. Quickstart::

    import wsguard

    server = wsguard.Server("wsguard.toml")      # or a dict, or TOML/JSON text

    @server.rpc("orders.create")                 # must be declared in [[rpc]]
    async def create_order(session, payload):
        return {"order_id": 42, "by": session.subject}

    async def main():
        async with server:                       # start_async() ... stop_async()
            server.publish("news", {"headline": "hello"})
            await asyncio.Event().wait()

Errors derive from ``WsguardError`` and carry the core's stable ``code`` / ``code_name``;
``ConfigError`` (also a ``ValueError``) lists every configuration problem with its key path;
``InvalidArgumentError`` (also a ``ValueError`` and a ``TypeError``, code ``invalid_argument``)
refuses a wrong argument to ``disconnect``, ``revoke``, ``ban``, ``lift_ban`` or the session
operations (``send``, ``disconnect_with``, ``subscribe``, ``unsubscribe``, ``sessions``, ``channels``).
``wsguard.Client`` (module ``wsguard.client``, needs ``pip install wsguard[client]``) is an
asyncio client of the wire protocol: token from an async ``get_token()``, in-band refresh,
reconnects driven by the close code, subscriptions with recovery, typed events and errors.
Core ``tracing`` events are logged to the ``wsguard`` logger (``wsguard.server``,
``wsguard.security``, ``wsguard.session``, ...); levels are read at each ``start()``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
from types import TracebackType
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Mapping, Optional, Type, TypeVar, Union

from . import _native
from ._errors import ConfigError, InvalidArgumentError, WsguardError
from ._native import AuthorizeRequest, HandshakeInfo, Identity, Session
from .client import (
    Client,
    ClientClosedError,
    ConnectionLostError,
    HandshakeError,
    ReplyError,
    RequestTimeoutError,
    SendQueueFullError,
    SessionClosedError,
    TokenError,
)

__all__ = [
    "AuthorizeRequest",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "ConnectionLostError",
    "HandshakeError",
    "HandshakeInfo",
    "Identity",
    "ConfigInput",
    "InvalidArgumentError",
    "ReplyError",
    "RequestTimeoutError",
    "SendQueueFullError",
    "Server",
    "Session",
    "SessionClosedError",
    "TokenError",
    "WsguardError",
    "serve",
]

__version__: str = _native.__version__

#: A configuration: a mapping (the same keys as the TOML file), TOML or JSON text, or a path to a
#: ``.toml`` / ``.json`` file.
ConfigInput = Union[Mapping[str, Any], str, "os.PathLike[str]"]

#: ``rpc(session, payload) -> result``: any JSON value, or a coroutine of one. Raising gives the
#: client ``rpc_failed`` with ``str(exc)`` as its message.
RpcHandler = Callable[[Session, Dict[str, Any]], Any]
#: ``authenticate(info, identity)``, answered the same way in every host (the core parses it):
#: ``True`` admits; ``False`` or ``{"deny": reason}`` refuses (403 ``rejected_by_hook``, the reason
#: goes to the logs); ``{"roles"?, "scopes"?, "claims"?}`` admits with an updated identity. See
#: ``Server.authenticate`` for the merge rule. Anything else, or raising, refuses.
AuthenticateHandler = Callable[[HandshakeInfo, Identity], Union[bool, Dict[str, Any], Awaitable[Union[bool, Dict[str, Any]]]]]
#: ``authorize(request) -> bool``: only ``True`` allows; anything else (or raising) gives ``forbidden``.
AuthorizeHandler = Callable[[AuthorizeRequest], Union[bool, Awaitable[bool]]]
#: ``on_event(event)``: a dict whose ``kind`` names the event (``session_opened``, ...). The core
#: waits for the handler (a coroutine is awaited) before it hands over the next event.
EventHandler = Callable[[Dict[str, Any]], Optional[Awaitable[None]]]

R = TypeVar("R", bound=RpcHandler)
A = TypeVar("A", bound=AuthenticateHandler)
Z = TypeVar("Z", bound=AuthorizeHandler)
E = TypeVar("E", bound=EventHandler)
S = TypeVar("S", bound="Server")


class Server(_native.Server):
    """A wsguard server on its own threads. ``Server(config)`` validates the whole configuration
    (keys, secrets, key files) and raises ``ConfigError`` listing every problem.

    Handlers may be plain functions or ``async def``; coroutines run on the asyncio loop that
    started the server (``start_async``, ``async with server``, ``serve``), plain functions on
    the server's threads with the GIL held only while they run. Every handler is time-boxed by
    the core (``hooks.timeout_secs``, ``limits.rpc_timeout_secs``) and fails closed.
    """

    def rpc(self, method: str) -> Callable[[R], R]:
        """Registers the handler of RPC ``method`` (which must be declared in ``[[rpc]]``)."""

        def register(handler: R) -> R:
            self._set_rpc_handler(method, handler)
            return handler

        return register

    def authenticate(self, handler: A) -> A:
        """Registers the hook called after the token is verified, before the upgrade (and again
        at every in-band ``refresh``), as ``handler(info, identity)``.

        Its answer, the same in every host and parsed by the core:

        - ``True``: admit with the verified identity;
        - ``False`` or ``{"deny": "reason"}``: refuse (403 ``rejected_by_hook``; the reason goes
          to the logs and the ``handshake_rejected`` event, never to the client);
        - ``{"roles": [...], "scopes": [...], "claims": {...}}``, each key optional: admit with
          the identity updated by the merge rule: ``roles`` / ``scopes`` replace the token's when
          present; ``claims`` merge key by key (a value adds or replaces that claim, ``None``
          removes it, claims not named are kept). Naming a registered claim (``iss``, ``sub``,
          ``aud``, ``exp``, ``nbf``, ``iat``, ``jti``) or any other key refuses.

        Anything else (``None``, a number, a non-JSON value) or raising refuses."""
        self._set_authenticate_handler(handler)
        return handler

    def authorize(self, handler: Z) -> Z:
        """Registers the hook asked once the channel rules allowed a channel action."""
        self._set_authorize_handler(handler)
        return handler

    def on_event(self, handler: E) -> E:
        """Registers the receiver of security and lifecycle events, delivered one at a time and
        in order from the core's bounded queue (``hooks.event_queue_capacity``). The core waits
        for each call (a coroutine is awaited; at most ``hooks.timeout_secs``) before the next:
        a slow handler fills the queue and the events that do not fit are dropped and counted
        (``stats()["events_dropped"]``, ``wsguard_events_dropped_total``)."""
        self._set_event_handler(handler)
        return handler

    async def start_async(self) -> None:
        """Starts the server from asyncio; coroutine handlers will run on the running loop."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.start, loop)

    async def stop_async(self, grace_secs: Optional[float] = None) -> None:
        """Stops the server without blocking the loop (coroutine handlers can finish). Use it
        instead of ``stop()`` in async code: ``stop()`` blocks the loop it is called on."""
        await asyncio.get_running_loop().run_in_executor(None, self.stop, grace_secs)

    async def presence_async(
        self, channel: str, *, limit: Optional[int] = None, after: Optional[str] = None
    ) -> Dict[str, Any]:
        """``presence()`` without blocking the loop (it may wait for the cluster's Redis)."""
        call = functools.partial(self.presence, channel, limit=limit, after=after)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    async def presence_stats_async(self, channel: str) -> Dict[str, Any]:
        """``presence_stats()`` without blocking the loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.presence_stats, channel)

    def __enter__(self: S) -> S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.stop()

    async def __aenter__(self: S) -> S:
        await self.start_async()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        await self.stop_async()


@contextlib.asynccontextmanager
async def serve(config: ConfigInput) -> AsyncIterator[Server]:
    """``async with wsguard.serve(config) as server:`` starts a server on the running loop and
    stops it on exit. Register handlers on ``server`` inside the block, or build a ``Server``
    and use ``async with server:`` to register them before the first client arrives."""
    async with Server(config) as server:
        yield server


# A running server's threads must end before the interpreter does.
atexit.register(_native.stop_all)
