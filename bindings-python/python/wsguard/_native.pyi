"""Type stubs of the private native module ``wsguard._native`` (checked against the built module
by ``python -m mypy.stubtest wsguard._native`` in tests/run.sh). Use the ``wsguard`` package."""

import asyncio
import os
from collections.abc import Mapping
from typing import Any, final

from typing_extensions import disjoint_base

__all__ = [
    "__version__",
    "AuthorizeRequest",
    "HandshakeInfo",
    "Identity",
    "Server",
    "Session",
    "stop_all",
]

__version__: str

@final
class Identity:
    """The verified identity of a connecting client."""

    @property
    def subject(self) -> str: ...
    @property
    def roles(self) -> list[str]: ...
    @property
    def scopes(self) -> list[str]: ...
    @property
    def claims(self) -> dict[str, Any]: ...
    @property
    def expires_at(self) -> int: ...
    @property
    def issued_at(self) -> int | None: ...
    @property
    def token_id(self) -> str | None: ...

@final
class Session:
    """A connected session: its id and verified identity."""

    @property
    def session_id(self) -> int: ...
    @property
    def subject(self) -> str: ...
    @property
    def roles(self) -> list[str]: ...
    @property
    def scopes(self) -> list[str]: ...
    @property
    def claims(self) -> dict[str, Any]: ...
    @property
    def expires_at(self) -> int: ...
    @property
    def token_id(self) -> str | None: ...

@final
class HandshakeInfo:
    """What the ``authenticate`` hook sees of the handshake (never the token)."""

    @property
    def client_ip(self) -> str: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def user_agent(self) -> str | None: ...

@final
class AuthorizeRequest:
    """May ``session`` perform ``action`` (``"subscribe"``, ``"publish"`` or ``"history"``) on ``channel``?"""

    @property
    def session(self) -> Session: ...
    @property
    def action(self) -> str: ...
    @property
    def channel(self) -> str: ...

@disjoint_base
class Server:
    def __new__(cls, config: Mapping[str, Any] | str | os.PathLike[str]) -> Server: ...
    def start(self, event_loop: asyncio.AbstractEventLoop | None = None) -> None: ...
    def stop(self, grace_secs: float | None = None) -> None: ...
    def serve_forever(self) -> None: ...
    @property
    def is_running(self) -> bool: ...
    @property
    def port(self) -> int: ...
    @property
    def address(self) -> tuple[str, int]: ...
    def _set_rpc_handler(self, method: str, handler: Any) -> None: ...
    def _set_authenticate_handler(self, handler: Any) -> None:
        """``handler(info, identity)`` answers, as JSON, what the core's one parser accepts:
        ``True``; ``False`` or ``{"deny": reason}`` (refused); ``{roles?, scopes?, claims?}``
        (roles and scopes replace, claims merge key by key, ``None`` removes a claim, a registered
        claim or an unknown key refuses). Anything else, or raising, refuses."""
    def _set_authorize_handler(self, handler: Any) -> None: ...
    def _set_event_handler(self, handler: Any) -> None:
        """``handler(event)``, called from the core's one bounded event queue, which waits for
        it (a coroutine is awaited): a slow handler makes the core drop and count events."""
    def publish(self, channel: str, payload: Mapping[str, Any]) -> int: ...
    def disconnect(self, session_id: int | None = None, user: str | None = None) -> int:
        """Not exactly one of ``session_id``, ``user``: ``InvalidArgumentError``."""
    def send(
        self, payload: Mapping[str, Any], *, session_id: int | None = None, user: str | None = None,
        node: str | None = None,
    ) -> dict[str, Any]:
        """A ``push`` frame to one session or a user's sessions. Returns ``node``, ``matched``,
        ``changed``, ``at_limit``, ``is_forwarded``. Not exactly one of ``session_id``, ``user``
        (or ``node`` without ``session_id``): ``InvalidArgumentError``."""
    def disconnect_with(
        self, code: int, reason: str = "", *, session_id: int | None = None, user: str | None = None,
        node: str | None = None,
    ) -> dict[str, Any]:
        """``code`` 4000-4999 except 4000, 4002, 4003, 4100, 4501; ``reason`` at most 123 bytes:
        otherwise ``InvalidArgumentError``."""
    def subscribe(
        self, channel: str, *, session_id: int | None = None, user: str | None = None, node: str | None = None
    ) -> dict[str, Any]: ...
    def unsubscribe(
        self, channel: str, *, session_id: int | None = None, user: str | None = None, node: str | None = None
    ) -> dict[str, Any]: ...
    def sessions(
        self, *, user: str | None = None, cursor: int | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """``limit`` 1-1000 (default 100); ``cursor`` is the previous page's ``next_cursor``."""
    def channels(
        self, *, pattern: str | None = None, cursor: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """``pattern`` in the channel-rule syntax (``{name}`` for any one segment)."""
    def history(
        self,
        channel: str,
        *,
        since_offset: int | None = None,
        since_epoch: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> dict[str, Any]:
        """``{"offset", "epoch", "publications": [{"offset", "payload"}]}``; ``since_offset`` and
        ``since_epoch`` together or not at all; ``limit`` 1-1000 (default 100)."""
    def presence(self, channel: str, *, limit: int | None = None, after: str | None = None) -> dict[str, Any]:
        """``{"members": [{"user", "sessions", "claims"?}], "next"}``; blocking (see ``presence_async``)."""
    def presence_stats(self, channel: str) -> dict[str, Any]:
        """``{"users", "clients"}``; blocking (see ``presence_stats_async``)."""
    def revoke(self, jti: str | None = None, sub: str | None = None, issued_before: int | None = None) -> None:
        """Not exactly one of ``jti``, ``sub``, ``issued_before``: ``InvalidArgumentError``."""
    def reload(self, config: Mapping[str, Any] | str | os.PathLike[str]) -> None: ...
    def bans(self) -> list[dict[str, Any]]: ...
    def ban(self, *, ip: str | None = None, user: str | None = None, secs: float) -> bool:
        """Not exactly one of ``ip``, ``user``, an IP that is not an address, or ``secs``
        negative, not finite or over 100 years: ``InvalidArgumentError``."""
    def lift_ban(self, *, ip: str | None = None, user: str | None = None) -> bool:
        """Not exactly one of ``ip``, ``user``, or an IP that is not an address:
        ``InvalidArgumentError``."""
    def stats(self) -> dict[str, int]: ...

def stop_all() -> None: ...
