"""The shared fixtures of tests/fixtures/, run from Python: the same data files drive the Rust, C
and Node suites, so a host that answers differently fails its own tests. The cases are read from
the files, never copied here."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import TIMEOUT, Client, Mint, url
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Subprotocol

import wsguard

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def fixture(name: str) -> Dict[str, Any]:
    loaded: Dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return loaded


AUTHENTICATE = fixture("authenticate_answers.json")
CONFIG_ERRORS = fixture("config_errors.json")


def cases(fixture: Dict[str, Any]) -> Any:
    return [pytest.param(case, id=case["name"]) for case in fixture["cases"]]


@pytest.mark.parametrize("case", cases(AUTHENTICATE))
def test_authenticate_answers_mean_the_same_in_every_host(
    case: Dict[str, Any], config: Dict[str, Any], mint: Mint
) -> None:
    method = AUTHENTICATE["rpc_method"]
    config = copy.deepcopy(config)
    config["rpc"].append({"method": method})
    server = wsguard.Server(config)

    @server.authenticate
    def authenticate(info: wsguard.HandshakeInfo, identity: wsguard.Identity) -> Any:
        return copy.deepcopy(case["answer"])

    @server.rpc(method)
    def whoami(session: wsguard.Session, payload: Dict[str, Any]) -> Dict[str, Any]:
        return {"roles": session.roles, "scopes": session.scopes, "claims": session.claims}

    token = mint(**AUTHENTICATE["token_claims"])
    protocols: List[Subprotocol] = [Subprotocol("wsguard.v1"), Subprotocol(f"bearer.{token}")]
    expect = case["expect"]
    with server:
        if not expect["accepted"]:
            with pytest.raises(InvalidStatus) as refused:
                connect(url(server), subprotocols=protocols, open_timeout=TIMEOUT, proxy=None)
            assert refused.value.response.status_code == expect["status"]
            assert f'"{expect["code"]}"'.encode() in refused.value.response.body
            return
        with connect(url(server), subprotocols=protocols, open_timeout=TIMEOUT, proxy=None) as ws:
            reply = Client(ws).request("rpc", method=method)
    identity = reply["payload"]
    assert identity["roles"] == expect["roles"], reply
    assert identity["scopes"] == expect["scopes"], reply
    for claim, value in expect["claims"].items():
        assert identity["claims"].get(claim) == value, (claim, reply)
    for claim in expect["absent_claims"]:
        assert claim not in identity["claims"], (claim, reply)


@pytest.mark.parametrize("case", cases(CONFIG_ERRORS))
def test_config_mistakes_get_the_same_code_in_every_host(case: Dict[str, Any], secret_file: Path) -> None:
    given: Any
    if case["input"] == "value":
        # The path as it stands inside a JSON string (escaped), so any path survives the replace.
        secret = json.dumps(str(secret_file))[1:-1]
        given = json.loads(json.dumps(case["config"]).replace("{secret_file}", secret))
    elif case["input"] == "text":
        given = case["text"]
    elif case["input"] == "path":
        given = Path(case["path"])
    else:
        pytest.fail(f"unknown input {case['input']!r}")
    with pytest.raises(wsguard.ConfigError) as caught:
        wsguard.Server(given)
    assert caught.value.code_name == case["code"], caught.value
    for path in case["paths"]:
        assert path in str(caught.value), (path, caught.value)
