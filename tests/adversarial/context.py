"""What every attack gets: the servers, the keys, a fresh source address per attack, token minting
and the checks record, with small helpers for the two outcomes an attack is judged on (a refused
handshake, or a close code)."""

from __future__ import annotations

from dataclasses import dataclass, field

import jwts
import wsclient
from harness import Checks, Server, SourceIps

ORIGIN = "https://app.example.com"


@dataclass
class Context:
    main: Server
    rs256: Server
    jwks: Server
    hmac_secret: bytes
    rsa_private_pem: bytes
    rsa_public_pem: bytes
    other_private_pem: bytes
    checks: Checks = field(default_factory=Checks)
    ips: SourceIps = field(default_factory=SourceIps)
    serial: int = 0

    def sub(self, prefix: str) -> str:
        """A fresh subject, so per-user quotas and rates of one attack never touch another."""
        self.serial += 1
        return f"{prefix}-{self.serial}"

    def token(self, sub: str, *, tenant: str = "acme", scopes=(), roles=(), **overrides) -> str:
        """A valid HS256 token for the main server (fresh jti)."""
        payload = jwts.claims(sub, tenant=tenant, scope=" ".join(scopes), roles=list(roles), **overrides)
        return jwts.hs256(self.hmac_secret, payload)

    async def upgrade(
        self,
        headers: list[tuple[str, str]],
        *,
        ip: str | None = None,
        server: Server | None = None,
        path: str = "/ws",
    ) -> tuple[wsclient.Response, wsclient.Conn | None]:
        return await wsclient.upgrade((server or self.main).port, ip or self.ips.take(), headers, path=path)

    async def session(
        self, sub: str | None = None, *, ip: str | None = None, tenant: str = "acme", scopes=(), roles=()
    ) -> wsclient.Conn:
        """An authenticated session on the main server (raises when refused)."""
        token = self.token(sub or self.sub("client"), tenant=tenant, scopes=scopes, roles=roles)
        response, conn = await self.upgrade([("Origin", ORIGIN), ("Authorization", f"Bearer {token}")], ip=ip)
        if conn is None:
            raise RuntimeError(f"session refused: {response.describe()}")
        return conn

    def expect_status(self, name: str, response: wsclient.Response, status: int, code: str | None) -> bool:
        ok = response.status == status and (code is None or response.code == code)
        want = f"{status} {code or ''}".strip()
        return self.checks.record(name, ok, f"got {response.describe()}" + ("" if ok else f", want {want}"))

    async def expect_refusal(
        self,
        name: str,
        headers: list[tuple[str, str]],
        status: int,
        code: str | None,
        *,
        ip: str | None = None,
        server: Server | None = None,
        path: str = "/ws",
    ) -> wsclient.Response:
        response, conn = await self.upgrade(headers, ip=ip, server=server, path=path)
        if conn is not None:
            conn.close()
        self.expect_status(name, response, status, code)
        return response

    def expect_close(self, name: str, closed: wsclient.Closed, code: int, reason: str | None = None) -> bool:
        ok = closed.code == code and (reason is None or closed.reason == reason)
        detail = f"close {closed.code} {closed.reason}".strip()
        return self.checks.record(name, ok, detail + ("" if ok else f", want {code} {reason or ''}".rstrip()))


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Origin", ORIGIN), ("Authorization", f"Bearer {token}")]
