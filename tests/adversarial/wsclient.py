"""A deliberately small RFC 6455 client over raw asyncio streams, for attacking wsguard.

Off-the-shelf WebSocket clients refuse to send what the attacks need (unmasked frames, reserved
bits, unknown opcodes, oversized control frames, a length field of 2^63 - 1, invalid UTF-8), and
they hide the HTTP refusal. Here every byte is ours: the upgrade request is written by hand, the
response head is parsed as it comes, and frames are built field by field. Every connection can be
bound to its own loopback source address (127.0.0.0/8), so each attack has its own client IP and
the per-IP quotas, handshake rates and bans of one attack never touch another, nor the canary.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from dataclasses import dataclass, field

# Opcodes (RFC 6455 §5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# How long a response head may take to arrive before a test gives up on it.
DEFAULT_TIMEOUT = 5.0


@dataclass
class Response:
    """An HTTP response to an upgrade request."""

    status: int
    reason: str
    headers: dict[str, str]
    body: bytes = b""

    @property
    def code(self) -> str | None:
        """The stable error name from a refusal body `{"error": name, "code": n}`."""
        try:
            return json.loads(self.body)["error"]
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        return f"{self.status} {self.code or self.reason}"


class Closed(Exception):
    """The server closed the connection: its close code (1006 when no close frame came)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(f"closed {code} {reason}".strip())
        self.code = code
        self.reason = reason


def mask_bytes(data: bytes, key: bytes) -> bytes:
    """XOR `data` with the repeated 4-byte masking key (RFC 6455 §5.3)."""
    if not data:
        return data
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


def build_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame, field by field. `length` overrides the announced payload length (the payload
    that follows is still `payload`); `rsv` is the 3 reserved bits (RSV1 = 4)."""
    announced = len(payload) if length is None else length
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    mask_bit = 0x80 if mask else 0
    if announced < 126:
        head = bytes([first, mask_bit | announced])
    elif announced < 1 << 16:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", announced)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", announced)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + mask_bytes(payload, key)


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack("!H", code) + reason.encode()


async def open_tcp(port: int, source_ip: str, *, rcvbuf: int | None = None):
    """A TCP connection to 127.0.0.1:`port` from `source_ip` (any 127.0.0.0/8 address)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    if rcvbuf is not None:
        # Before connect, so the advertised window stays small (the never-reading subscriber).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind((source_ip, 0))
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), DEFAULT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


def upgrade_request(port: int, headers: list[tuple[str, str]], *, path: str = "/ws") -> bytes:
    """A well-formed RFC 6455 upgrade request with `headers` appended."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader, timeout: float = DEFAULT_TIMEOUT) -> Response:
    """Reads one HTTP response head (and its body when it announces a Content-Length)."""

    async def read() -> Response:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _version, status, *reason = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = b""
        if int(status) != 101 and int(headers.get("content-length", "0")) > 0:
            body = await reader.readexactly(int(headers["content-length"]))
        return Response(int(status), reason[0] if reason else "", headers, body)

    return await asyncio.wait_for(read(), timeout)


@dataclass
class Conn:
    """An upgraded connection: send frames, read frames, answer pings."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    messages: list[str] = field(default_factory=list)

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str) -> None:
        await self.send_raw(build_frame(TEXT, text.encode()))

    async def send_json(self, value) -> None:
        await self.send_text(json.dumps(value, separators=(",", ":")))

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """One server frame: (fin, opcode, payload). Raises Closed(1006) at EOF or reset."""
        try:
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            key = await self.reader.readexactly(4) if b1 & 0x80 else None
            payload = await self.reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            raise Closed(1006, "connection lost") from e
        if key is not None:
            payload = mask_bytes(payload, key)
        return bool(b0 & 0x80), b0 & 0x0F, payload

    async def recv_text(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        """The next text message; pings are answered, pongs skipped. Raises Closed on a close."""

        async def recv() -> str:
            parts: list[bytes] = []
            while True:
                fin, opcode, payload = await self.read_frame()
                if opcode == PING:
                    await self.send_raw(build_frame(PONG, payload))
                elif opcode == PONG:
                    continue
                elif opcode == CLOSE:
                    code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    reason = payload[2:].decode("utf-8", "replace")
                    try:
                        await self.send_raw(build_frame(CLOSE, payload[:2]))
                    except (ConnectionError, OSError):
                        pass
                    raise Closed(code, reason)
                elif opcode in (TEXT, BINARY, CONT):
                    parts.append(payload)
                    if fin:
                        text = b"".join(parts).decode("utf-8", "replace")
                        self.messages.append(text)
                        return text

        return await asyncio.wait_for(recv(), timeout)

    async def recv_json(self, timeout: float = DEFAULT_TIMEOUT) -> dict:
        return json.loads(await self.recv_text(timeout))

    async def request(self, frame: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Sends a frame with an `id` and returns the reply with that id (skipping deliveries)."""
        await self.send_json(frame)
        while True:
            reply = await self.recv_json(timeout)
            if reply.get("id") == frame.get("id") and reply.get("type") != "message":
                return reply

    async def expect_close(self, timeout: float = DEFAULT_TIMEOUT) -> Closed:
        """Reads until the server closes; the text messages seen on the way stay in `messages`."""
        try:
            while True:
                await self.recv_text(timeout)
        except Closed as closed:
            return closed
        except asyncio.TimeoutError:
            return Closed(-1, "no close within %.1f s" % timeout)

    def close(self) -> None:
        try:
            self.writer.close()
        except (ConnectionError, OSError, RuntimeError):
            pass

    async def goodbye(self) -> None:
        """A polite close handshake (bounded), then the socket goes."""
        try:
            await self.send_raw(build_frame(CLOSE, close_payload(1000)))
            await asyncio.wait_for(self.expect_close(2.0), 2.5)
        except (ConnectionError, OSError, asyncio.TimeoutError):
            pass
        self.close()


async def upgrade(
    port: int,
    source_ip: str,
    headers: list[tuple[str, str]],
    *,
    path: str = "/ws",
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[Response, Conn | None]:
    """Sends an upgrade request; returns the response and, on 101, the open connection."""
    reader, writer = await open_tcp(port, source_ip)
    writer.write(upgrade_request(port, headers, path=path))
    await writer.drain()
    try:
        response = await read_response(reader, timeout)
    except BaseException:
        writer.close()
        raise
    if response.status == 101:
        return response, Conn(reader, writer)
    writer.close()
    return response, None


async def http_get(port: int, path: str, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
    """A plain GET (the admin listener): status and body text."""

    async def get() -> tuple[int, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if b"transfer-encoding: chunked" in head.lower():
            body = dechunk(body)
        return status, body.decode("utf-8", "replace")

    return await asyncio.wait_for(get(), timeout)


def dechunk(body: bytes) -> bytes:
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)


async def raw_request(
    port: int, source_ip: str, data: bytes, *, timeout: float = DEFAULT_TIMEOUT
) -> Response | str:
    """Writes `data` as is (ignoring a reset while writing, since the server may refuse before it
    has read everything) and reads the response; returns a string naming what happened when no
    response could be read."""
    reader, writer = await open_tcp(port, source_ip)
    try:
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        try:
            return await read_response(reader, timeout)
        except asyncio.TimeoutError:
            return "no response"
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as e:
            return f"connection ended without a response ({type(e).__name__})"
    finally:
        writer.close()
