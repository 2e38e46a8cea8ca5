"""Server lifecycle: start/stop on the server's own threads, serve_forever, the asyncio forms, and
an interpreter that exits promptly whether or not the host stopped its server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Dict

import pytest
from conftest import Client, Mint, url
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import connect

import wsguard


def test_start_and_stop_are_prompt_and_idempotent(config: Dict[str, Any]) -> None:
    server = wsguard.Server(config)
    assert not server.is_running
    began = time.monotonic()
    server.start()
    server.start()
    assert time.monotonic() - began < 2
    assert server.is_running and server.port > 0
    host, port = server.address
    assert (host, port) == ("127.0.0.1", server.port)
    socket.create_connection((host, port), timeout=2).close()
    began = time.monotonic()
    server.stop(grace_secs=0.5)
    server.stop()
    assert time.monotonic() - began < 2
    assert not server.is_running
    with pytest.raises(wsguard.WsguardError) as caught:
        server.publish("news", {})
    assert caught.value.code_name == "not_running" and caught.value.code == 5003
    with pytest.raises(wsguard.WsguardError):
        server.port


def test_a_stopped_server_can_start_again(config: Dict[str, Any]) -> None:
    server = wsguard.Server(config)
    with server:
        first = server.port
    with server:
        assert server.port > 0 and first > 0


def test_bind_failure_is_an_io_error(config: Dict[str, Any]) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    config["server"]["listen"] = "127.0.0.1:%d" % taken.getsockname()[1]
    try:
        with pytest.raises(wsguard.WsguardError) as caught:
            wsguard.Server(config).start()
        assert caught.value.code_name == "io" and caught.value.code == 5001
    finally:
        taken.close()


def test_the_gil_is_released_while_serving(server: wsguard.Server, client: Any) -> None:
    # A sync handler needs the GIL on a server thread while this thread waits in recv().
    @server.rpc("orders.create")
    def create(session: wsguard.Session, payload: Dict[str, Any]) -> Dict[str, Any]:
        return {"ok": True}

    c: Client = client()
    assert c.request("rpc", method="orders.create", payload={})["payload"] == {"ok": True}


def test_serve_forever_returns_when_stopped_from_another_thread(config: Dict[str, Any]) -> None:
    server = wsguard.Server(config)
    done = threading.Event()

    def run() -> None:
        server.serve_forever()
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.is_running
    server.stop(grace_secs=0.2)
    thread.join(5)
    assert done.is_set() and not server.is_running


def test_stop_from_a_handler_ends_serve_forever(config: Dict[str, Any], mint: Mint) -> None:
    server = wsguard.Server(config)

    @server.rpc("orders.create")
    def shutdown(session: wsguard.Session, payload: Dict[str, Any]) -> str:
        server.stop(grace_secs=0.2)  # only starts the shutdown: we are on a server thread
        return "bye"

    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.is_running and time.monotonic() < deadline:
        time.sleep(0.01)
    with connect(url(server), additional_headers={"Authorization": f"Bearer {mint()}"}, proxy=None) as ws:
        c = Client(ws)
        assert c.request("rpc", method="orders.create")["payload"] == "bye"
    thread.join(5)
    assert not thread.is_alive() and not server.is_running


def test_start_from_a_handler_is_refused_by_the_core(
    server: wsguard.Server, client: Any, config: Dict[str, Any]
) -> None:
    other = wsguard.Server(config)

    @server.rpc("orders.create")
    def start_other(session: wsguard.Session, payload: Dict[str, Any]) -> str:
        try:
            other.start()
        except wsguard.WsguardError as refused:
            return refused.code_name
        return "started"

    c: Client = client()
    assert c.request("rpc", method="orders.create")["payload"] == "wrong_thread"
    assert not other.is_running


def test_async_forms(config: Dict[str, Any], mint: Mint) -> None:
    async def main() -> None:
        async with wsguard.serve(config) as server:
            assert server.is_running
            headers = {"Authorization": f"Bearer {mint()}"}
            async with async_connect(url(server), additional_headers=headers, proxy=None) as ws:
                await ws.send('{"action":"ping","id":1}')
                assert await asyncio.wait_for(ws.recv(), 5) == '{"type":"pong","id":1}'
        assert not server.is_running

        other = wsguard.Server(config)
        await other.start_async()
        assert other.is_running
        await other.stop_async(grace_secs=0.2)
        assert not other.is_running

    asyncio.run(main())


def run_script(body: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    script = "import sys, time, wsguard\n" + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
    )


def script_config(config: Dict[str, Any]) -> str:
    return f"config = {config!r}\n"


def test_the_interpreter_exits_promptly_after_stop(config: Dict[str, Any]) -> None:
    began = time.monotonic()
    done = run_script(
        script_config(config)
        + """
server = wsguard.Server(config)
server.rpc("orders.create")(lambda session, payload: {})
server.on_event(lambda event: None)
server.start()
server.stop()
print("stopped")
"""
    )
    assert done.returncode == 0, done.stderr
    assert "stopped" in done.stdout
    assert time.monotonic() - began < 8


def test_the_interpreter_exits_promptly_without_stop(config: Dict[str, Any], mint: Mint) -> None:
    # A server left running (with a live session) is stopped by the atexit hook.
    began = time.monotonic()
    done = run_script(
        script_config(config)
        + f"""
from websockets.sync.client import connect
server = wsguard.Server(config)
server.on_event(lambda event: None)
server.start()
headers = {{"Authorization": "Bearer {mint()}"}}
ws = connect("ws://127.0.0.1:%d/ws" % server.port, additional_headers=headers, proxy=None).__enter__()
ws.send('{{"action":"subscribe","channel":"news"}}')
print(ws.recv(timeout=5))
"""
    )
    assert done.returncode == 0, done.stderr
    assert '"type":"ack"' in done.stdout
    assert time.monotonic() - began < 8


def test_ctrl_c_stops_serve_forever(config: Dict[str, Any]) -> None:
    script = "import wsguard\n" + script_config(config) + textwrap.dedent(
        """
        server = wsguard.Server(config)
        server.start()
        print(server.port, flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("interrupted", server.is_running, flush=True)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert int(proc.stdout.readline()) > 0
        time.sleep(1.0)  # let it enter serve_forever
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=8)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "interrupted False" in out
