"""The exceptions wsguard raises. The native module fills them from the core's ``ErrorCode``.

Defined in Python, not in the native module, so that ``ConfigError`` and
``InvalidArgumentError`` can also derive from Python's built-in exceptions and all pickle like
ordinary exceptions.
"""

from __future__ import annotations

from typing import Any, List, Tuple

__all__ = ["ConfigError", "InvalidArgumentError", "WsguardError"]


class WsguardError(Exception):
    """Base class of every wsguard error.

    ``code`` is the stable number and ``code_name`` the stable snake_case name of the core's error
    code (the same in Rust, C, Node and Python; see docs/ERROR_CODES.md). Branch on them, not on
    the message.
    """

    __module__ = "wsguard"
    code: int
    code_name: str

    def __init__(self, message: str, code: int, code_name: str) -> None:
        super().__init__(message)
        self.code = code
        self.code_name = code_name

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.code, self.code_name))


class ConfigError(WsguardError, ValueError):
    """The configuration is invalid. ``problems`` lists every problem as ``(key_path, message)``;
    the message lists them too. Codes: ``config_syntax``, ``config_invalid``, ``config_file``,
    ``config_secret_missing``."""

    __module__ = "wsguard"
    problems: List[Tuple[str, str]]

    def __init__(self, message: str, code: int, code_name: str, problems: List[Tuple[str, str]]) -> None:
        super().__init__(message, code, code_name)
        self.problems = [(str(path), str(text)) for path, text in problems]

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.code, self.code_name, self.problems))


class InvalidArgumentError(WsguardError, ValueError, TypeError):
    """An argument of a server method is refused by the core (code ``invalid_argument``): not
    exactly one of ``ip=`` / ``user=``, ``jti=`` / ``sub=`` / ``issued_before=`` or
    ``session_id=`` / ``user=``; an IP that is not an address; a ban length that is negative,
    not finite or too long. Also a ``ValueError`` and a ``TypeError``, the exceptions Python code
    expects for a bad argument."""

    __module__ = "wsguard"
