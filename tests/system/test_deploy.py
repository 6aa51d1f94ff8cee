"""The deployment examples (examples/deploy/): checked against the relay's real settings, routes
and command line, the systemd unit by systemd's own `systemd-analyze`, and the Kubernetes
sidecar's relay run with exactly the manifest's environment."""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from progress_relay.cli.main import build_parser, run_serve, serve_overrides
from progress_relay.config import CLIENT_ENV, ENV_PREFIX, ConfigError, Settings, load_settings
from progress_relay.http.app import create_app
from tests.support.process import ENTRY_POINT, free_port, run_relay
from tests.support.redis_server import RedisServer

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"
UNIT = DEPLOY / "systemd" / "progress-relay.service"
ENV_FILE = DEPLOY / "systemd" / "relay.env"
MANIFEST = DEPLOY / "kubernetes" / "sidecar.yaml"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
INSTALLED_AT = "/opt/progress-relay/bin/progress-relay"
# `systemd-analyze security`'s exposure, on its internal scale of 0-100 (it prints 0.0-10.0):
# an unhardened service is at 96; 20 is "OK" and fails as soon as a few protections go.
EXPOSURE_AT_MOST = 20

# The Secret the manifest's comment tells the user to create; what its keys hold here.
SECRET = "progress-relay"


# ---------------------------------------------------------------------------- systemd


def unit_entries() -> dict[str, list[tuple[str, str]]]:
    """The unit file's sections and their `Key=value` lines, in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert current is not None and sep, f"not a unit file line: {line!r}"
        current.append((key, value))
    return sections


def unit_value(section: str, key: str) -> str:
    values = [v for k, v in unit_entries()[section] if k == key]
    assert len(values) == 1, f"[{section}] {key}= should be set once, is {values}"
    return values[0]


def env_file() -> dict[str, str]:
    """relay.env as systemd reads it, kept to the subset where the relay's test reads it the
    same way: `NAME=value` lines, no quotes, no continuations."""
    found: dict[str, str] = {}
    for line in ENV_FILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and name.isidentifier() and name == name.strip(), f"bad line {line!r}"
        assert not value.startswith(("'", '"')) and not value.endswith("\\"), f"quoted {line!r}"
        assert name not in found, f"{name} twice"
        found[name] = value
    return found


def seconds(value: str) -> float:
    """A systemd time span as the unit writes them: `20s`, `2min`, or plain seconds."""
    for suffix, factor in (("min", 60.0), ("s", 1.0)):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def analyzable_unit(tmp_path: Path) -> Path:
    """The unit, with ExecStart pointed at this venv's real `progress-relay` script: verify
    checks that the binary exists and is executable, and /opt/progress-relay is not here."""
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED_AT} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED_AT} ", f"ExecStart={ENTRY_POINT} "))
    return copy


def systemd_analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if SYSTEMD_ANALYZE is None:
        raise AssertionError("systemd-analyze is missing: run .ci/install-system-deps")
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    unit = analyzable_unit(tmp_path)
    done = systemd_analyze("verify", f"./{unit.name}", cwd=tmp_path)
    # verify exits 0 on an unknown key or a bad value (it only warns): any output is a failure.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """What the test above relies on: verify does report a mistake here, without systemd as
    PID 1 (a misspelt key, and a binary that is not there)."""
    unit = analyzable_unit(tmp_path)
    unit.write_text(unit.read_text().replace("KillSignal=", "KillSignl="))
    misspelt = systemd_analyze("verify", f"./{unit.name}", cwd=tmp_path)
    assert "Unknown key 'KillSignl'" in misspelt.stderr
    unit.write_text(UNIT.read_text())
    missing = systemd_analyze("verify", f"./{unit.name}", cwd=tmp_path)
    assert missing.returncode != 0
    assert f"Command {INSTALLED_AT} is not executable" in missing.stderr


def test_unit_is_hardened(tmp_path: Path) -> None:
    unit = analyzable_unit(tmp_path)
    done = systemd_analyze(
        "security", "--offline=true", f"--threshold={EXPOSURE_AT_MOST}", f"./{unit.name}",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert unit_value("Service", "User") not in ("", "root")
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit_value("Service", key) == "yes"
    assert unit_value("Service", "ProtectSystem") == "strict"


def test_unit_matches_the_relay() -> None:
    environ = env_file()
    settings = load_settings(environ=environ)
    # The values took effect (each name is a real setting, or load_settings raised).
    assert settings.server.host == environ["PROGRESS_RELAY_SERVER_HOST"]
    assert settings.server.port == int(environ["PROGRESS_RELAY_SERVER_PORT"])
    assert settings.server.shutdown_timeout == float(
        environ["PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUT"]
    )
    assert settings.broker.url == environ["PROGRESS_RELAY_BROKER_URL"]
    assert settings.auth.publish_tokens == (environ["PROGRESS_RELAY_AUTH_PUBLISH_TOKENS"],)
    assert settings.log.format == environ["PROGRESS_RELAY_LOG_FORMAT"]
    assert all(name.startswith(ENV_PREFIX) and name not in CLIENT_ENV for name in environ)

    # The drain fits in the stop timeout; SIGTERM is what starts it.
    assert unit_value("Service", "KillSignal") == "SIGTERM"
    assert seconds(unit_value("Service", "TimeoutStopSec")) > settings.server.shutdown_timeout
    assert unit_value("Service", "Restart") == "on-failure"
    # A file descriptor per open stream, per Redis connection, and some to spare.
    limit = int(unit_value("Service", "LimitNOFILE"))
    assert limit > settings.limits.max_streams + settings.broker.pool_size + 1000

    assert Path(unit_value("Service", "EnvironmentFile")).name == ENV_FILE.name
    command = shlex.split(unit_value("Service", "ExecStart"))
    assert command[0] == INSTALLED_AT
    args = build_parser().parse_args(command[1:])
    assert args.run is run_serve
    assert load_settings(args.config, environ, serve_overrides(args)) == settings


# ---------------------------------------------------------------------------- Kubernetes


def manifest() -> list[dict[str, Any]]:
    with MANIFEST.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc is not None]


def of_kind(kind: str) -> dict[str, Any]:
    [doc] = [doc for doc in manifest() if doc["kind"] == kind]
    return doc


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = of_kind("Deployment")["spec"]["template"]["spec"]
    return spec


def relay_container() -> dict[str, Any]:
    [relay] = [c for c in pod_spec()["containers"] if c.get("command", [""])[0] == "progress-relay"]
    return relay


def container_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's or Service's port, by number or by the name of one of the container's ports."""
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    number = ports[port] if isinstance(port, str) else port
    assert number in ports.values(), f"{port} is not a port of {container['name']}"
    return number


def resolved_env(container: dict[str, Any], secret: dict[str, str]) -> dict[str, str]:
    """The container's environment, its secretKeyRefs filled from ``secret``."""
    env: dict[str, str] = {}
    for var in container["env"]:
        if "value" in var:
            assert isinstance(var["value"], str), f"{var['name']}: env values must be strings"
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == SECRET
            env[var["name"]] = secret[ref["key"]]
    return env


def secret_keys(container: dict[str, Any]) -> dict[str, str]:
    return {
        var["name"]: var["valueFrom"]["secretKeyRef"]["key"]
        for var in container["env"]
        if "valueFrom" in var
    }


def prestop_seconds(container: dict[str, Any]) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0.0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def placeholder_secret() -> dict[str, str]:
    return {"redis-url": "redis://127.0.0.1:6379/0", "publish-token": "a-publisher-token"}


def manifest_settings(secret: dict[str, str]) -> tuple[Settings, list[str]]:
    relay = relay_container()
    args = build_parser().parse_args(relay["command"][1:])
    assert args.run is run_serve
    return (
        load_settings(args.config, resolved_env(relay, secret), serve_overrides(args)),
        relay["command"],
    )


def test_manifest_settings_are_the_relays() -> None:
    relay = relay_container()
    env = resolved_env(relay, placeholder_secret())
    assert all(name.startswith(ENV_PREFIX) for name in env)
    settings, _ = manifest_settings(placeholder_secret())
    assert settings.server.host == "0.0.0.0"
    assert settings.broker.url == placeholder_secret()["redis-url"]
    assert settings.auth.publish_tokens == (placeholder_secret()["publish-token"],)
    assert settings.server.shutdown_timeout == float(env["PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUT"])
    assert settings.log.format == env["PROGRESS_RELAY_LOG_FORMAT"]
    assert settings.cors.origins == (env["PROGRESS_RELAY_CORS_ORIGINS"],)
    # The credentials come from the Secret, not from the file.
    assert secret_keys(relay) == {
        "PROGRESS_RELAY_BROKER_URL": "redis-url",
        "PROGRESS_RELAY_AUTH_PUBLISH_TOKENS": "publish-token",
    }


def test_an_unknown_variable_beside_the_manifests_is_refused() -> None:
    """What makes the test above mean something: a name that is not a setting stops the relay."""
    env = resolved_env(relay_container(), placeholder_secret())
    env["PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUTS"] = "10"
    with pytest.raises(ConfigError, match="PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUTS"):
        load_settings(environ=env)


def test_probes_are_routes_of_the_relay_on_its_port() -> None:
    relay = relay_container()
    settings, _ = manifest_settings(placeholder_secret())
    # The app as this configuration builds it (not started: nothing connects to Redis).
    app = create_app(settings)
    get_paths = {
        route.resource.canonical
        for route in app.router.routes()
        if route.method == "GET" and route.resource is not None
    }
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        http_get = relay[probe]["httpGet"]
        assert http_get["path"] == path
        assert path in get_paths
        assert container_port(relay, http_get["port"]) == settings.server.port

    service = of_kind("Service")
    labels = of_kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert container_port(relay, port["targetPort"]) == settings.server.port


def test_grace_period_outlasts_the_drain() -> None:
    relay = relay_container()
    settings, _ = manifest_settings(placeholder_secret())
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert prestop_seconds(relay) > 0
    assert grace > settings.server.shutdown_timeout + prestop_seconds(relay)
    assert relay["resources"]["requests"] and relay["resources"]["limits"]


def test_app_container_reaches_the_sidecar() -> None:
    relay = relay_container()
    settings, _ = manifest_settings(placeholder_secret())
    [app] = [c for c in pod_spec()["containers"] if c["name"] != relay["name"]]
    env = resolved_env(app, placeholder_secret())
    # The client's variables only: anything else PROGRESS_RELAY_* would be a relay setting.
    assert {name for name in env if name.startswith(ENV_PREFIX)} <= CLIENT_ENV
    assert httpx.URL(env["PROGRESS_RELAY_URL"]).port == settings.server.port
    assert (
        secret_keys(app)["PROGRESS_RELAY_TOKEN"]
        == secret_keys(relay)["PROGRESS_RELAY_AUTH_PUBLISH_TOKENS"]
    )


def local_command(command: list[str], port: int) -> list[str]:
    """The manifest's command on this machine: the venv's script, loopback, a free port."""
    assert command[0] == "progress-relay"
    args = [str(ENTRY_POINT), *command[1:]]
    for option, value in (("--host", "127.0.0.1"), ("--port", str(port))):
        at = args.index(option)
        args[at + 1] = value
    return args


def test_the_manifests_relay_runs(redis_server: RedisServer) -> None:
    token = uuid.uuid4().hex
    secret = {"redis-url": redis_server.url, "publish-token": token}
    port = free_port()
    command = local_command(relay_container()["command"], port)
    # Exactly the manifest's environment (an image adds PATH; nothing of this shell leaks in).
    env = {"PATH": "/usr/bin:/bin", **resolved_env(relay_container(), secret)}
    relay = run_relay(command, env, f"http://127.0.0.1:{port}")
    try:
        with httpx.Client(base_url=relay.base_url, timeout=10) as http:
            assert http.get("/readyz").status_code == 200
            assert http.get("/healthz").status_code == 200
            job = f"deploy-{uuid.uuid4().hex[:8]}"
            event = {"event": "progress", "data": {"percent": 50}}
            assert http.post(f"/v1/jobs/{job}/events", json=event).status_code == 401
            published = http.post(
                f"/v1/jobs/{job}/events", json=event, headers={"Authorization": f"Bearer {token}"}
            )
            assert published.status_code == 200
            assert http.get(f"/v1/jobs/{job}").json()["percent"] == 50
        code, _, log = relay.stop(signal.SIGTERM)
    finally:
        relay.close()
    assert code == 0
    # log.format = json took effect: every line is an object.
    lines = log.splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)


def test_the_manifests_relay_refuses_a_misspelt_setting(redis_server: RedisServer) -> None:
    secret = {"redis-url": redis_server.url, "publish-token": uuid.uuid4().hex}
    command = local_command(relay_container()["command"], free_port())
    env = {"PATH": "/usr/bin:/bin", **resolved_env(relay_container(), secret)}
    env["PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUTS"] = "10"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "unknown environment variable PROGRESS_RELAY_SERVER_SHUTDOWN_TIMEOUTS" in done.stderr
