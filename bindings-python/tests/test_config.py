"""Configuration: every input form reaches the same core loader; every problem is reported by the
core, with its key path and stable code."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any, Dict, List

import pytest

import wsguard


def test_two_misspelled_keys_are_both_reported(config: Dict[str, Any]) -> None:
    config["server"]["listn"] = "127.0.0.1:0"
    config["limits"]["conections_per_ip"] = 3
    with pytest.raises(wsguard.ConfigError) as caught:
        wsguard.Server(config)
    err = caught.value
    assert isinstance(err, ValueError) and isinstance(err, wsguard.WsguardError)
    assert err.code == 1002 and err.code_name == "config_invalid"
    paths = [path for path, _ in err.problems]
    assert "server.listn" in paths and "limits.conections_per_ip" in paths
    assert "server.listn" in str(err) and "limits.conections_per_ip" in str(err)


def test_wrong_types_are_reported_with_their_path(config: Dict[str, Any]) -> None:
    config["server"]["max_connections"] = "many"
    with pytest.raises(wsguard.ConfigError) as caught:
        wsguard.Server(config)
    assert caught.value.code_name == "config_invalid"
    assert "server.max_connections" in [path for path, _ in caught.value.problems]


def toml_text(secret_file: Path) -> str:
    return f"""
[server]
listen = "127.0.0.1:0"
[origins]
allow_missing = true
[auth]
hmac_secret_file = "{secret_file}"
issuer = "https://issuer.test"
audience = "wsguard"
[[channels]]
pattern = "news"
subscribe = {{}}
"""


def test_toml_json_and_paths_load_the_same_schema(
    tmp_path: Path, secret_file: Path, config: Dict[str, Any]
) -> None:
    text = toml_text(secret_file)
    toml_file = tmp_path / "wsguard.toml"
    toml_file.write_text(text)
    json_file = tmp_path / "wsguard.json"
    json_file.write_text(json.dumps(config))
    sources: List[wsguard.ConfigInput] = [text, json.dumps(config), toml_file, str(toml_file), json_file, str(json_file)]
    for source in sources:
        server = wsguard.Server(source)
        with server:
            assert server.port > 0


def test_paths_inside_a_dict_may_be_path_objects(config: Dict[str, Any], secret_file: Path) -> None:
    config["auth"]["hmac_secret_file"] = secret_file
    wsguard.Server(config)


def test_syntax_errors_carry_config_syntax() -> None:
    with pytest.raises(wsguard.ConfigError) as caught:
        wsguard.Server("[server]\nlisten = \n")
    assert caught.value.code == 1001 and caught.value.code_name == "config_syntax"
    assert "line 2" in str(caught.value)


def test_a_missing_file_is_config_file(tmp_path: Path) -> None:
    missing: List[wsguard.ConfigInput] = [tmp_path / "absent.toml", str(tmp_path / "absent.toml")]
    for source in missing:
        with pytest.raises(wsguard.ConfigError) as caught:
            wsguard.Server(source)
        assert caught.value.code_name == "config_file" and caught.value.code == 1003


def test_secrets_are_checked_at_construction(config: Dict[str, Any], tmp_path: Path) -> None:
    short = tmp_path / "short.secret"
    short.write_text("too short")
    config["auth"]["hmac_secret_file"] = str(short)
    with pytest.raises(wsguard.ConfigError) as caught:
        wsguard.Server(config)
    assert caught.value.code_name == "config_secret_missing" and caught.value.code == 1004


def test_other_objects_are_a_type_error() -> None:
    with pytest.raises(TypeError):
        wsguard.Server(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        wsguard.Server({"server": {"listen": object()}})


def test_errors_pickle_with_their_code(config: Dict[str, Any]) -> None:
    config["bogus"] = 1
    with pytest.raises(wsguard.ConfigError) as caught:
        wsguard.Server(config)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert isinstance(copy, wsguard.ConfigError)
    assert (copy.code, copy.code_name, copy.problems) == (1002, "config_invalid", [("bogus", "unknown key")])
