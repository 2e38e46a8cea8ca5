"""Drives ffi/tests/c/test_server.c: real WebSocket clients against a server started from C.

Usage: driver.py --secret FILE --config FILE [--wait S] [--deadline S] -- COMMAND...
       (COMMAND runs test_server, maybe under valgrind; --config is the TOML file it serves, which
       the reload checks vary)

The C program prints `PORT n`, then obeys one command per line on stdin (see handle_command() in
test_server.c) and reports its own checks as `ok NAME` / `not ok NAME: ...` lines. This driver
makes the client-side checks, counts both kinds, and prints `driver: N passed, M failed` last.
Every wait is bounded; the whole run is bounded by --deadline seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import copy
import pathlib
import re
import sys
import time
import tomllib

import jwt
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"
ISSUER = "wsguard-ffi-test"
AUDIENCE = "wsguard"


class Run:
    def __init__(self, proc: asyncio.subprocess.Process, secret: bytes, config: dict, wait: float,
                 secret_path: str = ""):
        self.proc = proc
        self.secret = secret
        self.secret_path = secret_path
        self.config = config  # the served configuration, as parsed from --config
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

    async def refusal(self, sub: str, token: str | None = None) -> tuple[int, str]:
        """The handshake's HTTP status and body: (101, "") when the upgrade succeeds."""
        try:
            ws = await self.connect(sub, token=token)
        except InvalidStatus as refused:
            return refused.response.status_code, refused.response.body.decode("utf-8", "replace")
        await ws.close()
        return 101, ""

    async def refusal_status(self, sub: str, token: str | None = None) -> int:
        return (await self.refusal(sub, token))[0]

    async def reload(self, config: dict) -> re.Match[str]:
        """Reloads the C server with `config` (sent as one line of JSON); the reply's groups are
        the code, its name and the one-line message."""
        return await self.command("reload_json " + json.dumps(config), r"reloaded (\d+) (\w+) ?(.*)$")

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

    async def fixture_authenticate_answers():
        """tests/fixtures/authenticate_answers.json, the same cases Rust, Python and Node run."""
        fixture = json.loads((FIXTURES / "authenticate_answers.json").read_text())
        now = int(time.time())
        claims = {**fixture["token_claims"], "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
        token = jwt.encode(claims, run.secret, algorithm="HS256")
        sub = claims["sub"]
        for case in fixture["cases"]:
            name = "fixture_authenticate: " + case["name"]
            expect = case["expect"]
            await run.command("auth_answer " + json.dumps(case["answer"]), r"auth_answer_set")
            try:
                if not expect["accepted"]:
                    status, body = await run.refusal(sub, token)
                    run.check(name, status == expect["status"] and f'"{expect["code"]}"' in body, (status, body))
                    continue
                ws = await run.connect(sub, token=token)
                reply = await run.call(ws, {"action": "rpc", "id": 1, "method": fixture["rpc_method"]})
                await ws.close()
                identity = reply.get("payload", {})
                got = identity.get("claims", {})
                ok = (identity.get("roles") == expect["roles"] and identity.get("scopes") == expect["scopes"]
                      and all(got.get(k) == v for k, v in expect["claims"].items())
                      and not any(k in got for k in expect["absent_claims"]))
                run.check(name, ok, reply)
            finally:
                await run.command("auth_answer_clear", r"auth_answer_cleared")

    async def fixture_config_errors():
        """tests/fixtures/config_errors.json: the codes wsg_config_from_text / _file report."""
        for case in json.loads((FIXTURES / "config_errors.json").read_text())["cases"]:
            if case["input"] == "path":
                command = "config_file " + case["path"]
            else:
                text = case["text"] if case["input"] == "text" else json.dumps(case["config"])
                command = "config_text_hex " + text.replace("{secret_file}", run.secret_path).encode().hex()
            reply = await run.command(command, r"config (\d+) (\w+) ?(.*)$")
            ok = reply.group(2) == case["code"] and all(p in reply.group(3) for p in case["paths"])
            run.check("fixture_config: " + case["name"], ok, reply.group(0))

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

    async def session_operations():
        gina, gina_id = await run.open_session("gina")
        reply = await run.command('op_send_user gina {"hello":"from c"}', r"applied (\d+) (\w+) (.*)")
        applied = json.loads(reply.group(3))
        push = await run.recv(gina)
        run.check("send_to_a_user_pushes_the_payload",
                  reply.group(1) == "0" and applied["matched"] == 1 and applied["changed"] == 1
                  and push == {"type": "push", "payload": {"hello": "from c"}}, (reply.group(0), push))
        for command, code, name in [
            ("op_send_session 987654321 {}", "5004", "send_to_an_unknown_session_is_unknown_session"),
            ("op_send_user gina [1]", "4002", "send_non_object_is_invalid_frame"),
            ("op_send_both " + str(gina_id) + " {}", "9004", "send_to_a_session_and_a_user_is_invalid_argument"),
            ("op_send_null gina {}", "9001", "send_without_a_target_is_null_argument"),
            ("op_subscribe_user gina room:*", "4003", "subscribe_to_a_bad_channel_is_invalid_channel"),
            ("op_close_user gina 4000 x", "9004", "close_with_a_code_of_wsguards_is_invalid_argument"),
        ]:
            reply = await run.command(command, r"applied (\d+) (\w+)")
            run.check(name, reply.group(1) == code, reply.group(0))
        pong = await run.call(gina, {"action": "ping", "id": 30})
        run.check("refused_session_operations_change_nothing", pong == {"type": "pong", "id": 30}, pong)

        reply = await run.command(f"op_subscribe_session {gina_id} lobby:c", r"applied (\d+) (\w+) (.*)")
        subscribed = await run.recv(gina)
        published = await run.command('publish lobby:c {"n":2}', r"published (\d+) (\d+)")
        message = await run.recv(gina)
        run.check("server_subscribe_then_publish_reaches_the_session",
                  reply.group(1) == "0" and subscribed == {"type": "subscribed", "channel": "lobby:c", "by": "server"}
                  and published.groups() == ("0", "1") and message["payload"] == {"n": 2},
                  (reply.group(0), subscribed, published.group(0), message))

        reply = await run.command("sessions gina 10", r"sessions (\d+) (\w+) (.*)")
        page = json.loads(reply.group(3))
        run.check("sessions_json_lists_the_session_and_its_subscriptions",
                  reply.group(1) == "0" and [s["id"] for s in page["sessions"]] == [gina_id]
                  and page["sessions"][0]["subscriptions"] == ["lobby:c"] and page["next_cursor"] is None
                  and page["node"], page)
        reply = await run.command("channels lobby:{x} 10", r"channels (\d+) (\w+) (.*)")
        page = json.loads(reply.group(3))
        run.check("channels_json_matches_the_pattern",
                  reply.group(1) == "0" and page["channels"] == [{"channel": "lobby:c", "subscribers": 1}], page)
        reply = await run.command("sessions - 0", r"sessions (\d+) (\w+)")
        run.check("sessions_json_limit_0_is_invalid_argument", reply.group(1) == "9004", reply.group(0))

        reply = await run.command("op_unsubscribe_user gina lobby:c", r"applied (\d+) (\w+)")
        notice = await run.recv(gina)
        run.check("server_unsubscribe_sends_unsubscribed_server",
                  reply.group(1) == "0" and notice == {"type": "unsubscribed", "channel": "lobby:c", "reason": "server"},
                  (reply.group(0), notice))
        reply = await run.command("op_close_user gina 4200 maintenance window", r"applied (\d+) (\w+)")
        try:
            while True:
                await asyncio.wait_for(gina.recv(), run.wait)
        except ConnectionClosed as closed:
            received = (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else None
        run.check("disconnect_with_sends_the_code_and_reason",
                  reply.group(1) == "0" and received == (4200, "maintenance window"), (reply.group(0), received))

    async def history_and_presence():
        hana, _ = await run.open_session("hana")
        reply = await run.call(hana, {"action": "subscribe", "id": 40, "channel": "feed:1"})
        run.check("subscribe_to_a_channel_with_history", reply.get("type") in ("ack", "subscribed"), reply)
        for n in range(3):
            await run.command(f'publish feed:1 {{"n":{n}}}', r"published (\d+) (\d+)")
            await run.recv(hana)
        reply = await run.command("history feed:1 10 - -", r"history (\d+) (\w+) (.*)")
        page = json.loads(reply.group(3))
        offsets = [p["offset"] for p in page["publications"]]
        run.check("history_json_pages_oldest_first",
                  reply.group(1) == "0" and [p["payload"] for p in page["publications"]] == [{"n": 0}, {"n": 1}, {"n": 2}]
                  and offsets == sorted(offsets) and page["offset"] == offsets[-1] and page["epoch"], page)
        epoch = page["epoch"]
        reply = await run.command(f"history feed:1 10 {offsets[0]} {epoch}", r"history (\d+) (\w+) (.*)")
        after = json.loads(reply.group(3))
        run.check("history_json_since_gives_what_followed",
                  [p["offset"] for p in after["publications"]] == offsets[1:], after)
        reply = await run.command(f"history feed:1 1 - - newest", r"history (\d+) (\w+) (.*)")
        newest = json.loads(reply.group(3))
        run.check("history_json_newest_first_with_a_limit",
                  [p["offset"] for p in newest["publications"]] == offsets[-1:], newest)
        for command, code, name in [
            ("history room:1 10 - -", "4020", "history_json_without_history_is_history_not_kept"),
            ("history feed:1 1001 - -", "4022", "history_json_limit_too_large_is_history_limit_invalid"),
            (f"history feed:1 10 {offsets[-1] + 5} {epoch}", "4021", "history_json_future_offset_is_offset_ahead"),
            ("history feed:1 10 1 other", "4023", "history_json_wrong_epoch_is_epoch_changed"),
            (f"history feed:1 10 - {epoch}", "9004", "history_json_epoch_without_offset_is_invalid_argument"),
        ]:
            reply = await run.command(command, r"history (\d+) (\w+)")
            run.check(name, reply.group(1) == code, reply.group(0))

        reply = await run.command("presence feed:1 10", r"presence (\d+) (\w+) (.*)")
        page = json.loads(reply.group(3))
        run.check("presence_json_lists_members",
                  reply.group(1) == "0" and page == {"members": [{"user": "hana", "sessions": 1}], "next": None}, page)
        reply = await run.command("presence_stats feed:1", r"presence_stats (\d+) (\w+) (.*)")
        run.check("presence_stats_json_counts",
                  reply.group(1) == "0" and json.loads(reply.group(3)) == {"users": 1, "clients": 1}, reply.group(0))
        for command, code, name in [
            ("presence room:1 10", "5030", "presence_json_untracked_is_presence_not_tracked"),
            ("presence feed:1 1001", "9004", "presence_json_limit_too_large_is_invalid_argument"),
            ("presence feed:* 10", "4003", "presence_json_bad_channel_is_invalid_channel"),
        ]:
            reply = await run.command(command, r"presence (\d+) (\w+)")
            run.check(name, reply.group(1) == code, reply.group(0))
        await hana.close()

    async def bans():
        reply = await run.command("ban_user frank 60", r"banned (\d+) (\d+)")
        status, body = await run.refusal("frank")
        run.check("ban_user_refuses_handshake_with_403_banned",
                  reply.groups() == ("0", "1") and status == 403 and '"banned"' in body, (reply.group(0), status, body))
        event = await run.expect(r'event (\{"kind":"ban_applied".*"value":"frank".*\})')
        run.check("ban_emits_ban_applied_event",
                  json.loads(event.group(1)) == {"kind": "ban_applied", "target": {"kind": "user", "value": "frank"},
                                                 "reason": "operator", "ban_secs": 60.0}, event.group(1))

        reply = await run.command("bans", r"bans (\d+) (.*)")
        listed = json.loads(reply.group(2))
        run.check("bans_json_lists_the_user_ban",
                  reply.group(1) == "0" and len(listed) == 1
                  and listed[0]["target"] == {"kind": "user", "value": "frank"}
                  and listed[0]["reason"] == "operator" and 0 < listed[0]["remaining_secs"] <= 60, listed)

        reply = await run.command("lift_ban_user frank", r"lifted (\d+) (\d+)")
        frank, _ = await run.open_session("frank")
        run.check("lift_ban_user_lets_the_user_connect", reply.groups() == ("0", "1"), reply.group(0))
        await frank.close()
        reply = await run.command("lift_ban_user frank", r"lifted (\d+) (\d+)")
        run.check("lift_without_ban_reports_nothing_lifted", reply.groups() == ("0", "0"), reply.group(0))
        reply = await run.command("bans", r"bans (\d+) (.*)")
        run.check("bans_json_empty_after_lift", reply.groups() == ("0", "[]"), reply.group(0))

        # Every test client connects from 127.0.0.1: banned, new handshakes fail; open ones go on.
        reply = await run.command("ban_ip 127.0.0.1 60", r"banned (\d+) (\d+)")
        status, body = await run.refusal("grace")
        pong = await run.call(alice, {"action": "ping", "id": 20})
        run.check("ban_ip_refuses_new_handshakes_keeps_open_sessions",
                  reply.groups() == ("0", "1") and status == 403 and '"banned"' in body
                  and pong == {"type": "pong", "id": 20}, (reply.group(0), status, body, pong))
        reply = await run.command("lift_ban_ip 127.0.0.1", r"lifted (\d+) (\d+)")
        status, _ = await run.refusal("grace")
        run.check("lift_ban_ip_lets_the_ip_connect", reply.groups() == ("0", "1") and status == 101,
                  (reply.group(0), status))

    async def reloads():
        # A configuration whose secret file is missing: refused with every problem's key path, and
        # nothing changes (alice keeps her subscription to room:1, new sessions still open). The
        # refusal comes from wsg_config_from_text, which checks files at construction as every
        # host does, so the server never sees it (no config_reloaded event).
        missing_secret = copy.deepcopy(run.config)
        missing_secret["auth"]["hmac_secret_file"] = "/nonexistent/wsguard-reload.secret"
        reply = await run.reload(missing_secret)
        run.check("reload_missing_secret_file_is_config_file_with_key_path",
                  reply.group(1) == "1003" and reply.group(2) == "config_file"
                  and "auth.hmac_secret_file" in reply.group(3), reply.group(0))
        restart_only = copy.deepcopy(run.config)
        restart_only["server"]["listen"] = "127.0.0.1:1"
        reply = await run.reload(restart_only)
        run.check("reload_restart_only_key_is_config_invalid_with_key_path",
                  reply.group(1) == "1002" and reply.group(2) == "config_invalid"
                  and "server.listen" in reply.group(3), reply.group(0))
        event = await run.expect(r'event (\{"kind":"config_reloaded".*\})')
        run.check("refused_reload_emits_config_reloaded_not_applied",
                  json.loads(event.group(1)).get("is_applied") is False, event.group(1))

        published = await run.command('publish room:1 {"after":"refused reloads"}', r"published (\d+) (\d+)")
        message = await run.recv(alice)
        henry, _ = await run.open_session("henry")
        await henry.close()
        run.check("server_keeps_serving_after_refused_reloads",
                  published.groups() == ("0", "1") and message["payload"] == {"after": "refused reloads"},
                  (published.group(0), message))

        # New channel rules without room:{id}: alice's subscription is dropped with a notice.
        lobby_only = copy.deepcopy(run.config)
        lobby_only["channels"] = [{"pattern": "lobby", "subscribe": {}, "publish": {}}]
        reply = await run.reload(lobby_only)
        notice = await run.recv(alice)
        run.check("reload_forbidding_a_channel_sends_unsubscribed",
                  reply.group(1) == "0" and reply.group(2) == "ok"
                  and notice == {"type": "unsubscribed", "channel": "room:1", "reason": "forbidden"},
                  (reply.group(0), notice))
        event = await run.expect(r'event (\{"kind":"config_reloaded".*\})')
        run.check("applied_reload_emits_config_reloaded",
                  json.loads(event.group(1)) == {"kind": "config_reloaded", "is_applied": True, "problems": []},
                  event.group(1))
        denied = await run.call(alice, {"action": "subscribe", "id": 21, "channel": "room:2"})
        allowed = await run.call(alice, {"action": "subscribe", "id": 22, "channel": "lobby"})
        run.check("reloaded_rules_apply_to_open_sessions",
                  denied.get("code") == "forbidden" and allowed == {"type": "ack", "id": 22}, (denied, allowed))

    async def stop_drains():
        waiter = asyncio.ensure_future(run.close_code(alice))
        reply = await run.command("stop 5", r"stopped (\d+)")
        code = await waiter
        run.check("stop_drains_with_close_1001", reply.group(1) == "0" and code == 1001, (reply.group(0), code))

    for name, body in [
        ("rpc_sync", rpc_sync), ("rpc_later", rpc_later), ("rpc_failures", rpc_failures),
        ("rpc_time_box", rpc_time_box), ("authorize_deny", authorize_deny), ("publish_from_c", publish_from_c),
        ("authenticate_refusal", authenticate_refusal), ("fixture_authenticate_answers", fixture_authenticate_answers),
        ("fixture_config_errors", fixture_config_errors), ("stats", stats),
        ("disconnects_and_revocations", disconnects_and_revocations), ("bans", bans),
        ("session_operations", session_operations), ("history_and_presence", history_and_presence),
        ("reloads", reloads),
        ("stop_drains", stop_drains),
    ]:
        await run.step(name, body)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--config", required=True, help="the TOML configuration the C program serves")
    parser.add_argument("--wait", type=float, default=10.0, help="bound on any single wait, seconds")
    parser.add_argument("--deadline", type=float, default=300.0, help="bound on the whole run, seconds")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    with open(args.secret, "rb") as f:
        secret = f.read().rstrip(b"\r\n")
    with open(args.config, "rb") as f:
        config = tomllib.load(f)

    proc = await asyncio.create_subprocess_exec(
        *args.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    run = Run(proc, secret, config, args.wait, args.secret)
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
