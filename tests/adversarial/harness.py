"""The adversarial suite's harness: the servers under test, the canary process, the memory sampler,
the metrics scraper, source addresses, and the PASS/FAIL record.

Only processes started here are ever stopped, each by its own PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import wsclient

HERE = Path(__file__).resolve().parent


class Checks:
    """One line per check, then `adversarial: N passed, M failed`.

    `known_issues` maps a check's name to a reported core bug that makes it fail today. Such a
    check prints XFAIL and does not fail the run; it is strict, though: once it passes (XPASS) the
    run fails, so that the entry is removed together with the fix."""

    def __init__(self, known_issues: dict[str, str] | None = None) -> None:
        self.passed = 0
        self.failed: list[str] = []
        self.expected_failures: list[str] = []
        self.known_issues = dict(known_issues or {})

    def record(self, name: str, ok: bool, detail: str = "") -> bool:
        suffix = f" - {detail}" if detail else ""
        issue = self.known_issues.get(name)
        if issue is not None and not ok:
            self.expected_failures.append(name)
            print(f"XFAIL {name}{suffix} [known core bug: {issue}]", flush=True)
            return ok
        if issue is not None:
            self.failed.append(name)
            print(f"FAIL {name}{suffix} [XPASS: the known core bug is fixed; remove it from KNOWN_ISSUES]", flush=True)
            return ok
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        print(f"{'PASS' if ok else 'FAIL'} {name}{suffix}", flush=True)
        return ok

    def summary(self) -> str:
        return f"adversarial: {self.passed} passed, {len(self.failed)} failed"


class SourceIps:
    """Hands out a fresh loopback source address per attack (127.0.0.1 is the canary's)."""

    def __init__(self) -> None:
        self.next = 2

    def take(self) -> str:
        n = self.next
        self.next += 1
        return f"127.0.{n // 250}.{n % 250 + 2}" if n >= 250 else f"127.0.0.{n}"


@dataclass
class Server:
    """One `wsguard serve --config` process."""

    name: str
    process: subprocess.Popen
    log_path: Path
    port: int
    metrics_port: int | None
    rss_peak_kib: int = 0
    rss_samples: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def is_running(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int | None:
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return None
        return None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def metrics(self) -> dict[tuple[str, frozenset], float]:
        """`/metrics` parsed into {(name, frozenset(labels)): value}."""
        assert self.metrics_port is not None
        status, body = await wsclient.http_get(self.metrics_port, "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_metrics(body)

    def stop(self) -> int | None:
        """SIGTERM (graceful drain), then SIGKILL after 10 s; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    out: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            continue
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(3))
        except ValueError:
            continue
    return out


def metric_sum(metrics: dict, name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and want <= set(ls))


# Every server this process started, so that an interrupted run still stops them (by PID).
STARTED: list[Server] = []


def start_server(binary: Path, config: Path, workdir: Path, name: str) -> Server:
    """Starts the server (cwd = workdir, so relative key paths resolve there) and waits for its
    `listening` log line, which carries the bound port and the admin port."""
    log_path = workdir / f"{name}.log"
    env = {k: v for k, v in os.environ.items() if k != "WSGUARD_LOG"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), "serve", "--config", str(config)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if '"message":"listening"' not in line:
                continue
            record = json.loads(line)
            port = int(record["local_addr"].rsplit(":", 1)[1])
            found = re.search(r":(\d+)\)", record.get("metrics", ""))
            server = Server(name, process, log_path, port, int(found.group(1)) if found else None)
            STARTED.append(server)
            return server
        if process.poll() is not None:
            break
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait()
    raise RuntimeError(f"{name} server did not start:\n{log_path.read_text(errors='replace')}")


async def sample_rss(servers: list[Server], stop: asyncio.Event, interval: float = 0.1) -> None:
    """Records each server's peak VmRSS until `stop` is set."""
    while not stop.is_set():
        for server in servers:
            rss = server.rss_kib()
            if rss is not None:
                server.rss_peak_kib = max(server.rss_peak_kib, rss)
                server.rss_samples += 1
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except asyncio.TimeoutError:
            pass


@dataclass
class Canary:
    """The canary process (canary.py): a subscriber plus a polite publisher, asked for its state
    over stdin/stdout, one JSON line per question."""

    process: asyncio.subprocess.Process
    reports: list[dict] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: dict) -> "Canary":
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "canary.py"),
            json.dumps(settings),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        canary = cls(process)
        ready = await canary.read(15)
        if ready.get("state") != "ready":
            raise RuntimeError(f"canary did not start: {ready}")
        return canary

    async def read(self, timeout: float) -> dict:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError("the canary process exited")
        return json.loads(line)

    async def ask(self, command: str, timeout: float = 10) -> dict:
        assert self.process.stdin is not None
        self.process.stdin.write((command + "\n").encode())
        await self.process.stdin.drain()
        return await self.read(timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.ask("stop", 5)
            except (RuntimeError, asyncio.TimeoutError, ConnectionError):
                pass
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
