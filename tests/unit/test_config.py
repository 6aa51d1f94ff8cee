"""Settings: the documented defaults file, environment and CLI precedence, and clear errors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import msgspec
import pytest

from progress_relay.cli import main as cli
from progress_relay.config import ConfigError, Settings, load_settings

DEFAULT_TOML = Path(__file__).resolve().parents[2] / "config" / "default.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_default_toml_loads_to_exactly_the_defaults() -> None:
    assert load_settings(DEFAULT_TOML, environ={}) == Settings()


def test_default_toml_documents_every_field_with_a_comment() -> None:
    documented: dict[str, dict[str, str]] = {}
    section = ""
    for line in DEFAULT_TOML.read_text().splitlines():
        header = re.fullmatch(r"\[(\w+)\]\s*(#.*)?", line.strip())
        if header:
            section = header.group(1)
            documented.setdefault(section, {})
            continue
        entry = re.fullmatch(r"(\w+)\s*=\s*[^#]+#\s*(\S.*)", line.strip())
        if entry:
            documented.setdefault(section, {})[entry.group(1)] = entry.group(2)
    expected = {
        field.name: {f.name for f in msgspec.structs.fields(field.type)}
        for field in msgspec.structs.fields(Settings)
    }
    assert set(documented) == set(expected)
    for name, keys in expected.items():
        assert set(documented[name]) == keys, name
        for key, comment in documented[name].items():
            assert len(comment) > 5, f"{name}.{key} has no real comment"


def test_no_file_gives_the_defaults() -> None:
    assert load_settings(environ={}) == Settings()


def test_file_values_are_used(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n[jobs]\nring_events = 7\n")
    settings = load_settings(path, environ={})
    assert (settings.server.port, settings.jobs.ring_events) == (9000, 7)
    assert settings.stream == Settings().stream


def test_env_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[stream]\nheartbeat = 20.0\nretry_ms = 100\n")
    settings = load_settings(path, environ={"PROGRESS_RELAY_STREAM_HEARTBEAT": "5"})
    assert settings.stream.heartbeat == 5.0
    assert settings.stream.retry_ms == 100


def test_env_key_with_underscores(tmp_path: Path) -> None:
    settings = load_settings(
        DEFAULT_TOML,
        environ={"PROGRESS_RELAY_JOBS_RING_EVENTS": "5", "PROGRESS_RELAY_SERVER_HOST": "0.0.0.0"},
    )
    assert settings.jobs.ring_events == 5
    assert settings.server.host == "0.0.0.0"


def test_env_ignores_other_variables() -> None:
    environ = {"PATH": "/bin", "PROGRESS_RELAYX": "1", "RELAY_STREAM_HEARTBEAT": "2"}
    assert load_settings(environ=environ) == Settings()


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n[stream]\nheartbeat = 20.0\n")
    settings = load_settings(
        path,
        environ={"PROGRESS_RELAY_STREAM_HEARTBEAT": "5", "PROGRESS_RELAY_SERVER_PORT": "9001"},
        overrides={"stream": {"heartbeat": 7.0}, "server": {"port": 9002}},
    )
    assert settings.stream.heartbeat == 7.0
    assert settings.server.port == 9002


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "[stream]\nbogus = 1\n"), environ={})
    assert "bogus" in message and "stream" in message, message


def test_unknown_section_in_file_is_named(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "[streams]\nheartbeat = 1\n"), environ={})
    assert "streams" in message, message


def test_key_outside_a_section_is_refused(tmp_path: Path) -> None:
    message = config_error(path=write(tmp_path, "port = 1\n"), environ={})
    assert "port" in message, message


@pytest.mark.parametrize(
    ("text", "key", "expectation"),
    [
        ('[server]\nport = "abc"\n', "server.port", "int"),
        ("[server]\nport = 70000\n", "server.port", "65535"),
        ("[stream]\nheartbeat = -1\n", "stream.heartbeat", "> 0"),
        ("[stream]\nheartbeat = 0\n", "stream.heartbeat", "> 0"),
        ("[jobs]\nring_events = 0\n", "jobs.ring_events", ">= 1"),
        ("[jobs]\nring_events = 1.5\n", "jobs.ring_events", "int"),
        ('[broker]\nurl = "postgres://x"\n', "broker.url", "memory|redis"),
    ],
)
def test_bad_value_names_key_and_expectation(
    tmp_path: Path, text: str, key: str, expectation: str
) -> None:
    message = config_error(path=write(tmp_path, text), environ={})
    assert key in message, message
    assert expectation in message, message


def test_bad_env_value_names_the_key() -> None:
    message = config_error(environ={"PROGRESS_RELAY_SERVER_PORT": "abc"})
    assert "server.port" in message, message


def test_queue_smaller_than_a_batch_is_refused() -> None:
    message = config_error(
        environ={}, overrides={"stream": {"queue_frames": 10}, "limits": {"max_batch_events": 11}}
    )
    assert "queue_frames" in message and "max_batch_events" in message, message


@pytest.mark.parametrize(
    "name", ["PROGRESS_RELAY_BOGUS_KEY", "PROGRESS_RELAY_STREAM", "PROGRESS_RELAY_STREAM_BOGUS"]
)
def test_unknown_env_var_with_our_prefix_is_named(name: str) -> None:
    message = config_error(environ={name: "1"})
    assert name in message, message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    message = config_error(path=missing, environ={})
    assert str(missing) in message


def test_invalid_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = = 1\n")
    message = config_error(path=path, environ={})
    assert str(path) in message and "TOML" in message


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PROGRESS_RELAY_"):
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[stream]\nheartbeat = -1\n", "stream.heartbeat"),
        ("[stream]\nbogus = 1\n", "bogus"),
        ("not toml [", "TOML"),
    ],
)
def test_cli_bad_config_exits_2_with_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    assert cli.main(["serve", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert fragment in captured.err, captured.err
    assert captured.err.startswith("progress-relay: ")
    assert captured.out == ""


@pytest.mark.usefixtures("clean_env")
def test_cli_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "absent.toml"
    assert cli.main(["serve", "--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_bad_env_exits_2(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROGRESS_RELAY_NOPE_X", "1")
    assert cli.main(["serve", "--config", str(DEFAULT_TOML)]) == 2
    assert "PROGRESS_RELAY_NOPE_X" in capsys.readouterr().err
