"""Drives ffi/tests/c/test_server.c: real WebSocket clients against a server started from C.

Usage: driver.py --secret FILE [--slow] -- COMMAND...   (COMMAND runs test_server, maybe under valgrind)

The C program prints `PORT n`, then obeys one command per line on stdin (see handle_command() in
test_server.c) and reports its own checks as `ok NAME` / `not ok NAME: ...` lines. This driver
makes the client-side checks, counts both kinds, and prints `driver: N passed, M failed` last.
Every wait is bounded; the whole run is bounded by --deadline seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time

import jwt
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

ISSUER = "wsguard-ffi-test"
AUDIENCE = "wsguard"


class Run:
    def __init__(self, proc: asyncio.subprocess.Process, secret: bytes, wait: float):
        self.proc = proc
        self.secret = secret
        self.wait = wait  # upper bound on any single wait
        self.lines: list[str] = []
        self.seen = asyncio.Condition()
        self.passed = 0
        self.failed = 0
        self.port = 0

    # ---- the C program's stdout ------------------------------------------------------------
    async def pump(self) -> None:
        assert self.proc.stdout is not None
        while True:
            raw = await self.proc.stdout.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\n")
            print(f"  c| {line}", flush=True)
            async with self.seen:
                self.lines.append(line)
                self.seen.notify_all()
        async with self.seen:
            self.lines.append("<eof>")
            self.seen.notify_all()

    async def expect(self, pattern: str, wait: float | None = None) -> re.Match[str]:
        """Waits for (and consumes) the first stdout line matching `pattern`."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + (wait or self.wait)
        async with self.seen:
            while True:
                for i, line in enumerate(self.lines):
                    match = regex.match(line)
                    if match:
                        del self.lines[i]
                        return match
                if "<eof>" in self.lines:
                    raise AssertionError(f"C program exited before printing /{pattern}/")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no line /{pattern}/ within {wait or self.wait:.0f} s")
                try:
                    await asyncio.wait_for(self.seen.wait(), remaining)
                except asyncio.TimeoutError:
                    pass

    async def command(self, text: str, reply: str) -> re.Match[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((text + "\n").encode())
        await self.proc.stdin.drain()
        return await self.expect(reply)

    # ---- clients ---------------------------------------------------------------------------
    def token(self, sub: str, jti: str | None = None) -> str:
        now = int(time.time())
        claims = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
        if jti:
            claims["jti"] = jti
        return jwt.encode(claims, self.secret, algorithm="HS256")

    async def connect(self, sub: str, jti: str | None = None, token: str | None = None):
        return await websockets.connect(
            f"ws://127.0.0.1:{self.port}/ws",
            additional_headers={"Authorization": f"Bearer {token or self.token(sub, jti)}"},
            open_timeout=self.wait,
            close_timeout=self.wait,
        )

    async def open_session(self, sub: str, jti: str | None = None, token: str | None = None):
        """Connects and waits for the `session_opened` event, the C side's proof that the session
        is registered: only then do disconnects and revocations reach it (a revocation that lands
        between the 101 and the session's start is a core race, reported separately)."""
        ws = await self.connect(sub, jti, token)
        opened = await self.expect(r'event (\{"kind":"session_opened".*"user":"' + re.escape(sub) + r'".*\})')
        return ws, json.loads(opened.group(1))["session_id"]

    async def recv(self, ws) -> dict:
        return json.loads(await asyncio.wait_for(ws.recv(), self.wait))

    async def call(self, ws, frame: dict) -> dict:
        await ws.send(json.dumps(frame))
        return await self.recv(ws)

    async def close_code(self, ws) -> int | None:
        """Reads until the server closes the connection; returns the close code it sent."""
        try:
            while True:
                await asyncio.wait_for(ws.recv(), self.wait)
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None

    async def refusal_status(self, sub: str, token: str | None = None) -> int | None:
        try:
            ws = await self.connect(sub, token=token)
        except InvalidStatus as refused:
            return refused.response.status_code
        await ws.close()
        return 101

    # ---- bookkeeping -----------------------------------------------------------------------
    def check(self, name: str, ok: bool, detail: object = "") -> None:
        if ok:
            self.passed += 1
            print(f"PASS {name}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}", flush=True)

    async def step(self, name: str, body) -> None:
        try:
            await body()
        except Exception as error:  # noqa: BLE001 - a failed step is reported, the run goes on
            self.check(name, False, f"{type(error).__name__}: {error}")


async def scenario(run: Run) -> None:
    run.port = int((await run.expect(r"PORT (\d+)")).group(1))
    run.check("server_started_from_c", run.port > 0, run.port)

    alice, _ = await run.open_session("alice")

    async def rpc_sync():
        reply = await run.call(alice, {"action": "rpc", "id": 1, "method": "echo", "payload": {"x": 1}})
        run.check(
            "rpc_answered_synchronously_by_c",
            reply.get("type") == "result" and reply.get("id") == 1
            and reply["payload"]["echo"] == {"x": 1} and reply["payload"]["subject"] == "alice"
            and reply["payload"]["method"] == "echo" and reply["payload"]["session_id"] > 0,
            reply,
        )

    async def rpc_later():
        reply = await run.call(alice, {"action": "rpc", "id": 2, "method": "echo_later", "payload": {"y": [1, 2]}})
        run.check(
            "rpc_answered_later_from_a_c_thread",
            reply.get("type") == "result" and reply["payload"]["echo"] == {"y": [1, 2]},
            reply,
        )

    async def rpc_failures():
        reply = await run.call(alice, {"action": "rpc", "id": 3, "method": "fail"})
        run.check("rpc_fail_gives_rpc_failed_with_message",
                  reply.get("code") == "rpc_failed" and reply.get("message") == "nope", reply)
        reply = await run.call(alice, {"action": "rpc", "id": 4, "method": "drop"})
        run.check("rpc_call_freed_unanswered_gives_rpc_failed", reply.get("code") == "rpc_failed", reply)
        reply = await run.call(alice, {"action": "rpc", "id": 5, "method": "bad_json"})
        code = (await run.expect(r"bad_json_respond (\d+)")).group(1)
        run.check("rpc_invalid_json_result_gives_rpc_failed",
                  reply.get("code") == "rpc_failed" and code == "4001", (reply, code))
        reply = await run.call(alice, {"action": "rpc", "id": 6, "method": "stop_inside"})
        run.check("blocking_call_inside_hook_is_wrong_thread",
                  reply.get("payload") == {"stop_result": 9006}, reply)

    async def rpc_time_box():
        started = time.monotonic()
        reply = await run.call(alice, {"action": "rpc", "id": 7, "method": "too_late"})
        run.check("rpc_time_box_fails_closed_with_hook_timeout",
                  reply.get("type") == "error" and reply.get("code") == "hook_timeout"
                  and time.monotonic() - started >= 1.5, reply)
        late = await run.expect(r"late_respond (\d+) (\w+)")
        run.check("late_rpc_answer_is_discarded_safely", late.group(1) == "4010", late.group(0))
        reply = await run.call(alice, {"action": "ping", "id": 8})
        run.check("session_still_healthy_after_late_answer", reply == {"type": "pong", "id": 8}, reply)

    async def authorize_deny():
        reply = await run.call(alice, {"action": "subscribe", "id": 10, "channel": "room:denied"})
        run.check("c_authorize_denies_subscribe",
                  reply.get("type") == "error" and reply.get("code") == "forbidden" and reply.get("id") == 10, reply)
        reply = await run.call(alice, {"action": "publish", "id": 11, "channel": "room:denied", "payload": {}})
        run.check("c_authorize_denies_publish", reply.get("code") == "forbidden", reply)

    async def publish_from_c():
        reply = await run.call(alice, {"action": "subscribe", "id": 12, "channel": "room:1"})
        run.check("c_authorize_allows_other_channels", reply == {"type": "ack", "id": 12}, reply)
        published = await run.command('publish room:1 {"n":1,"from":"c"}', r"published (\d+) (\d+)")
        message = await run.recv(alice)
        run.check("publish_from_c_reaches_subscriber",
                  published.groups() == ("0", "1")
                  and message == {"type": "message", "channel": "room:1", "payload": {"n": 1, "from": "c"}},
                  (published.group(0), message))
        for text, code, name in [
            ("publish bad*channel {}", "4003", "publish_invalid_channel_is_invalid_channel"),
            ("publish room:1 [1,2]", "4002", "publish_non_object_is_invalid_frame"),
            ("publish room:1 {oops", "4001", "publish_invalid_json_is_invalid_json"),
        ]:
            reply = await run.command(text, r"published (\d+) ")
            run.check(name, reply.group(1) == code, reply.group(0))

    async def authenticate_refusal():
        status = await run.refusal_status("mallory")
        run.check("c_authenticate_refusal_is_403", status == 403, status)

    async def stats():
        reply = await run.command("stats", r"stats (\d+) (.*)")
        snapshot = json.loads(reply.group(2))
        run.check("stats_json", reply.group(1) == "0" and snapshot["sessions_active"] >= 1
                  and snapshot["publications"] >= 1 and snapshot["handshakes_rejected"] >= 1, snapshot)

    async def disconnects_and_revocations():
        carol, session_id = await run.open_session("carol")
        reply = await run.command(f"disconnect_session {session_id}", r"disconnected_session (\d+)")
        code = await run.close_code(carol)
        run.check("disconnect_session_closes_with_4001", reply.group(1) == "0" and code == 4001, (reply.group(0), code))
        reply = await run.command("disconnect_session 987654321", r"disconnected_session (\d+) (\w+)")
        run.check("disconnect_unknown_session_is_unknown_session", reply.group(1) == "5004", reply.group(0))

        dave, _ = await run.open_session("dave")
        reply = await run.command("disconnect_user dave", r"disconnected_user (\d+) (\d+)")
        code = await run.close_code(dave)
        run.check("disconnect_user_closes_with_4001", reply.groups() == ("0", "1") and code == 4001,
                  (reply.group(0), code))

        bob_token = run.token("bob")
        bob, _ = await run.open_session("bob", token=bob_token)
        reply = await run.command("revoke_sub bob", r"revoked (\d+)")
        code = await run.close_code(bob)
        status = await run.refusal_status("bob", token=bob_token)
        run.check("revoke_sub_closes_with_4501_and_refuses_the_token",
                  reply.group(1) == "0" and code == 4501 and status == 401, (reply.group(0), code, status))

        erin, _ = await run.open_session("erin", jti="jti-erin")
        reply = await run.command("revoke_jti jti-erin", r"revoked (\d+)")
        code = await run.close_code(erin)
        run.check("revoke_jti_closes_with_4501", reply.group(1) == "0" and code == 4501, (reply.group(0), code))

    async def stop_drains():
        waiter = asyncio.ensure_future(run.close_code(alice))
        reply = await run.command("stop 5", r"stopped (\d+)")
        code = await waiter
        run.check("stop_drains_with_close_1001", reply.group(1) == "0" and code == 1001, (reply.group(0), code))

    for name, body in [
        ("rpc_sync", rpc_sync), ("rpc_later", rpc_later), ("rpc_failures", rpc_failures),
        ("rpc_time_box", rpc_time_box), ("authorize_deny", authorize_deny), ("publish_from_c", publish_from_c),
        ("authenticate_refusal", authenticate_refusal), ("stats", stats),
        ("disconnects_and_revocations", disconnects_and_revocations), ("stop_drains", stop_drains),
    ]:
        await run.step(name, body)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--wait", type=float, default=10.0, help="bound on any single wait, seconds")
    parser.add_argument("--deadline", type=float, default=300.0, help="bound on the whole run, seconds")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    with open(args.secret, "rb") as f:
        secret = f.read().rstrip(b"\r\n")

    proc = await asyncio.create_subprocess_exec(
        *args.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    run = Run(proc, secret, args.wait)
    pump = asyncio.ensure_future(run.pump())
    try:
        await asyncio.wait_for(scenario(run), args.deadline)
        assert proc.stdin is not None
        proc.stdin.close()
        status = await asyncio.wait_for(proc.wait(), args.deadline)
        await pump
    except Exception as error:  # noqa: BLE001
        run.check("scenario_completed", False, f"{type(error).__name__}: {error}")
        if proc.returncode is None:
            proc.kill()
        status = await proc.wait()
    c_passed = sum(1 for line in run.lines if line.startswith("ok "))
    c_failed = sum(1 for line in run.lines if line.startswith("not ok "))
    done = [line for line in run.lines if line.startswith("done ")]
    run.check("c_program_reported_done", len(done) == 1, done)
    run.check("c_program_exit_status_0", status == 0, status)
    passed, failed = run.passed + c_passed, run.failed + c_failed
    print(f"driver: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
