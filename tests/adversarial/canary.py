"""The canary: a well-behaved subscriber and a polite publisher, in their own process so that the
attacks (in the suite's process) cannot slow the canary's own event loop and distort what it
measures.

The publisher sends `{"seq": n, "ts": t}` on the canary's channel at a steady rate; the subscriber
checks that every sequence number arrives, in order, exactly once, and records the latency
`receive time - ts` (one monotonic clock, one process). The suite asks over stdin, one command per
line, and gets one JSON line back on stdout:

- `check NAME`: wait (at most 5 s) until everything published so far has arrived, then report the
  window since the previous check: received, missing, out of order, foreign messages, p99/max
  latency, whether both connections are still open.
- `phase attack`: from now on latencies count as "during the attacks" (before: the baseline).
- `report`: totals and the baseline and attack-phase latency percentiles.
- `stop`: close both connections politely, report, exit.

Usage (started by harness.Canary): canary.py '{"port":..., "sub_token":..., "pub_token":...,
"channel":..., "origin":..., "rate_per_sec":...}'
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import wsclient


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Canary:
    def __init__(self, settings: dict) -> None:
        self.settings = settings
        self.published = 0
        self.publisher_errors: list[dict] = []
        self.publisher_closed: str | None = None
        self.last_seq = 0
        self.received = 0
        self.missing = 0
        self.out_of_order = 0
        self.foreign = 0
        self.subscriber_closed: str | None = None
        self.phase = "baseline"
        self.latencies = {"baseline": [], "attack": []}
        self.window: list[float] = []
        self.window_counts = (0, 0, 0, 0)
        self.arrived = asyncio.Event()

    async def connect(self, token: str) -> wsclient.Conn:
        response, conn = await wsclient.upgrade(
            self.settings["port"],
            "127.0.0.1",
            [("Origin", self.settings["origin"]), ("Authorization", f"Bearer {token}")],
        )
        if conn is None:
            raise RuntimeError(f"canary handshake refused: {response.describe()}")
        return conn

    async def subscribe(self, conn: wsclient.Conn) -> None:
        reply = await conn.request({"action": "subscribe", "id": 1, "channel": self.settings["channel"]})
        if reply.get("type") != "ack":
            raise RuntimeError(f"canary subscribe refused: {reply}")

    async def listen(self, conn: wsclient.Conn) -> None:
        try:
            while True:
                frame = json.loads(await conn.recv_text(timeout=3600))
                now = time.monotonic()
                payload = frame.get("payload") or {}
                if frame.get("type") != "message" or frame.get("channel") != self.settings["channel"] or "seq" not in payload:
                    self.foreign += 1
                    continue
                seq = payload["seq"]
                if seq <= self.last_seq:
                    self.out_of_order += 1
                    continue
                self.missing += seq - self.last_seq - 1
                self.last_seq = seq
                self.received += 1
                latency_ms = (now - payload["ts"]) * 1000
                self.latencies[self.phase].append(latency_ms)
                self.window.append(latency_ms)
                self.arrived.set()
        except wsclient.Closed as closed:
            self.subscriber_closed = f"{closed.code} {closed.reason}".strip()

    async def publish(self, conn: wsclient.Conn) -> None:
        interval = 1.0 / self.settings["rate_per_sec"]
        next_at = time.monotonic()
        try:
            while True:
                self.published += 1
                frame = {
                    "action": "publish",
                    "id": self.published,
                    "channel": self.settings["channel"],
                    "payload": {"seq": self.published, "ts": time.monotonic()},
                }
                await conn.send_json(frame)
                # No catch-up bursts after a stall: the publisher stays polite.
                next_at = max(next_at + interval, time.monotonic())
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        except (ConnectionError, OSError) as e:
            self.publisher_closed = f"send failed: {e}"

    async def read_acks(self, conn: wsclient.Conn) -> None:
        try:
            while True:
                reply = json.loads(await conn.recv_text(timeout=3600))
                if reply.get("type") == "error":
                    self.publisher_errors.append(reply)
        except wsclient.Closed as closed:
            self.publisher_closed = f"{closed.code} {closed.reason}".strip()

    async def check(self, name: str) -> dict:
        target = self.published
        deadline = time.monotonic() + 5
        while self.last_seq < target and self.subscriber_closed is None and time.monotonic() < deadline:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
        received, missing, out_of_order, foreign = self.window_counts
        report = {
            "name": name,
            "connected": self.subscriber_closed is None and self.publisher_closed is None,
            "subscriber_closed": self.subscriber_closed,
            "publisher_closed": self.publisher_closed,
            "publisher_errors": len(self.publisher_errors),
            "published": target,
            "last_seq": self.last_seq,
            "caught_up": self.last_seq >= target,
            "received": self.received - received,
            "missing": self.missing - missing,
            "out_of_order": self.out_of_order - out_of_order,
            "foreign": self.foreign - foreign,
            "p99_ms": round(percentile(self.window, 99), 1),
            "max_ms": round(max(self.window, default=0.0), 1),
        }
        self.window = []
        self.window_counts = (self.received, self.missing, self.out_of_order, self.foreign)
        return report

    def report(self) -> dict:
        return {
            "connected": self.subscriber_closed is None and self.publisher_closed is None,
            "subscriber_closed": self.subscriber_closed,
            "publisher_closed": self.publisher_closed,
            "publisher_errors": self.publisher_errors[:5],
            "published": self.published,
            "received": self.received,
            "missing": self.missing,
            "out_of_order": self.out_of_order,
            "foreign": self.foreign,
            "baseline_n": len(self.latencies["baseline"]),
            "baseline_p50_ms": round(percentile(self.latencies["baseline"], 50), 1),
            "baseline_p99_ms": round(percentile(self.latencies["baseline"], 99), 1),
            "attack_n": len(self.latencies["attack"]),
            "attack_p50_ms": round(percentile(self.latencies["attack"], 50), 1),
            "attack_p99_ms": round(percentile(self.latencies["attack"], 99), 1),
            "max_ms": round(max(self.latencies["baseline"] + self.latencies["attack"], default=0.0), 1),
        }


def say(value: dict) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def main() -> None:
    settings = json.loads(sys.argv[1])
    canary = Canary(settings)
    subscriber = await canary.connect(settings["sub_token"])
    await canary.subscribe(subscriber)
    publisher = await canary.connect(settings["pub_token"])
    tasks = [
        asyncio.create_task(canary.listen(subscriber)),
        asyncio.create_task(canary.read_acks(publisher)),
        asyncio.create_task(canary.publish(publisher)),
    ]
    await asyncio.wait_for(canary.arrived.wait(), 10)
    say({"state": "ready"})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command.startswith("check "):
            say(await canary.check(command[6:]))
        elif command == "phase attack":
            canary.phase = "attack"
            say({"phase": "attack"})
        elif command == "report":
            say(canary.report())
        elif command in ("stop", ""):
            report = canary.report()
            # The readers must stop before the close handshake reads from the same streams.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in (publisher, subscriber):
                await conn.goodbye()
            say(report)
            return


if __name__ == "__main__":
    asyncio.run(main())
