"""The wheel as a user gets it: what it holds, a slim install beside a package named `service`,
and a worker on that slim install publishing to a real relay."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import progress_relay
from tests.support.process import Relay, start_relay

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "service" / "progress_relay"
PIP = ("-m", "pip", "--disable-pip-version-check", "-q")
# what only the server (or the aio extra) needs: none of it may be in the slim install
SERVER_ONLY = ("aiohttp", "aiohttp_sse", "msgspec", "redis", "jwt", "prometheus_client")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would put the dev tree on another python's path."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSAFEPATH"}
    }
    return {**env, **extra}


def run(
    *command: str | Path, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def run_json(python: Path, script: str, *args: str, cwd: Path, **env: str) -> object:
    """Run ``script`` with ``python`` (cwd outside the repository, so `service/` of the repo is
    not on its path); the JSON it prints last."""
    done = run(python, "-c", script, *args, cwd=cwd, env=clean_env(**env))
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built once. From a copy of what the build reads, so that the build writes
    neither build/ nor an egg-info into the work tree, and a stale build/lib there cannot put
    files into the wheel that the source no longer has."""
    tmp = tmp_path_factory.mktemp("wheel")
    tree = tmp / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "service",
        tree / "service",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    out = tmp / "dist"
    run(
        sys.executable, *PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", out, tree, cwd=tmp
    )
    (built,) = out.glob("progress_relay-*.whl")
    return built


@pytest.fixture(scope="module")
def slim(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtualenv with the wheel installed without extras."""
    venv = tmp_path_factory.mktemp("slim") / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=venv.parent)
    python = venv / "bin" / "python"
    run(python, *PIP, "install", wheel, cwd=venv.parent)
    return python


@pytest.fixture(scope="module")
def user_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An application's own package named `service`, with a `service.client` module."""
    root = tmp_path_factory.mktemp("user")
    package = root / "service"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "client.py").write_text('OWNER = "the application"\n')
    return root


@pytest.fixture(scope="module")
def relay() -> Iterator[Relay]:
    relay = start_relay()
    yield relay
    relay.close()


def source_files() -> set[str]:
    """Every file of the package in the source tree, as a path inside the wheel."""
    return {
        path.relative_to(SOURCE.parent).as_posix()
        for path in SOURCE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_the_wheel_holds_progress_relay_and_its_data_only(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(name.split("/")[0] for name in names if name.endswith("/METADATA"))
        top_level = archive.read(f"{dist_info}/top_level.txt").decode().split()
    assert dist_info.startswith("progress_relay-")
    assert top_level == ["progress_relay"]
    outside = [
        name
        for name in names
        if not name.startswith("progress_relay/") and not name.startswith(f"{dist_info}/")
    ]
    assert outside == []
    packaged = {name for name in names if name.startswith("progress_relay/")}
    for data in (
        "progress_relay/py.typed",
        "progress_relay/brokers/lua/publish.lua",
        "progress_relay/static/progress-relay.js",
        "progress_relay/static/demo.html",
    ):
        assert data in packaged
    # every module and data file of the source, and nothing else: a package without
    # __init__.py, or a data file that package-data does not name, fails here
    assert packaged == source_files()


def test_the_slim_install_sits_beside_a_package_named_service(
    slim: Path, user_code: Path, tmp_path: Path
) -> None:
    found = run_json(
        slim,
        "import json, sysconfig\n"
        "from pathlib import Path\n"
        "import service.client, progress_relay.client\n"
        "site = Path(sysconfig.get_paths()['purelib'])\n"
        "print(json.dumps({\n"
        "    'owner': service.client.OWNER,\n"
        "    'service': service.client.__file__,\n"
        "    'sdk': progress_relay.client.__file__,\n"
        "    'relay': progress_relay.client.Relay.__name__,\n"
        "    'site': str(site),\n"
        "    'top': sorted(p.name for p in site.iterdir() if p.name.startswith('service')),\n"
        "}))",
        cwd=tmp_path,
        PYTHONPATH=str(user_code),
    )
    assert isinstance(found, dict)
    assert found["owner"] == "the application"
    assert Path(found["service"]).is_relative_to(user_code)
    assert Path(found["sdk"]).is_relative_to(found["site"])
    assert found["relay"] == "Relay"
    assert found["top"] == []


def test_the_slim_install_has_none_of_the_server_dependencies(slim: Path, tmp_path: Path) -> None:
    found = run_json(
        slim,
        "import importlib.util, json, sys\n"
        "print(json.dumps({n: importlib.util.find_spec(n) is not None for n in sys.argv[1:]}))",
        *SERVER_ONLY,
        cwd=tmp_path,
    )
    assert found == dict.fromkeys(SERVER_ONLY, False)


def test_the_slim_install_runs_the_cli(slim: Path, tmp_path: Path) -> None:
    for command in ((slim, "-m", "progress_relay"), (slim.with_name("progress-relay"),)):
        done = run(*command, "--help", cwd=tmp_path)
        assert "publish" in done.stdout and "watch" in done.stdout, done.stdout
    version = run(slim.with_name("progress-relay"), "--version", cwd=tmp_path)
    assert progress_relay.__version__ in version.stdout
    serve = subprocess.run(
        [slim.with_name("progress-relay"), "serve"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert serve.returncode != 0
    assert "pip install 'progress-relay[server]'" in serve.stderr
    assert "Traceback" not in serve.stderr


def test_a_worker_on_the_slim_install_publishes_to_a_real_relay(
    slim: Path, relay: Relay, tmp_path: Path
) -> None:
    found = run_json(
        slim,
        "import json, sys\n"
        "from progress_relay.client import Relay\n"
        "with Relay(sys.argv[1]) as relay:\n"
        "    job = relay.create_job('slim-worker')\n"
        "    relay.progress(job.id, 40, stage='searching')\n"
        "    relay.complete(job.id, {'pages': 12})\n"
        "print(json.dumps({'id': job.id, 'sys.modules': sorted(sys.modules)}))",
        relay.base_url,
        cwd=tmp_path,
    )
    assert isinstance(found, dict)
    assert found["id"] == "slim-worker"
    assert not set(SERVER_ONLY) & set(found["sys.modules"])
    with httpx.Client(base_url=relay.base_url, timeout=10) as http:
        snapshot = http.get("/v1/jobs/slim-worker").json()
        history = http.get("/v1/jobs/slim-worker/events").json()
    assert (snapshot["status"], snapshot["percent"], snapshot["result"]) == (
        "completed",
        100,
        {"pages": 12},
    )
    assert [(event["event"], event["data"]) for event in history["events"]] == [
        ("progress", {"percent": 40, "stage": "searching"}),
        ("complete", {"result": {"pages": 12}}),
    ]


def test_the_asyncio_client_on_the_slim_install_names_the_aio_extra(
    slim: Path, tmp_path: Path
) -> None:
    found = run_json(
        slim,
        "import json, progress_relay.client as client\n"
        "messages = {}\n"
        "for name in ('AsyncRelay', 'AsyncTracker'):\n"
        "    try:\n"
        "        exec(f'from progress_relay.client import {name}')\n"
        "    except ImportError as error:\n"
        "        messages[name] = str(error)\n"
        "print(json.dumps(messages))",
        cwd=tmp_path,
    )
    assert isinstance(found, dict)
    assert sorted(found) == ["AsyncRelay", "AsyncTracker"]
    for message in found.values():
        assert "pip install 'progress-relay[aio]'" in message


def test_every_module_of_the_wheel_imports_with_the_server_dependencies(
    wheel: Path, tmp_path: Path
) -> None:
    """The wheel's own files (unpacked ahead of the editable install on the path) with the dev
    environment's dependencies, which include the server extra's."""
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    found = run_json(
        Path(sys.executable),
        "import importlib, json, pkgutil, progress_relay\n"
        "walk = pkgutil.walk_packages(progress_relay.__path__, 'progress_relay.')\n"
        "names = [module.name for module in walk]\n"
        "for name in names:\n"
        "    if name != 'progress_relay.__main__':  # runs the CLI; tested on the slim install\n"
        "        importlib.import_module(name)\n"
        "print(json.dumps({'from': progress_relay.__file__, 'modules': names}))",
        cwd=tmp_path,
        PYTHONPATH=str(unpacked),
    )
    assert isinstance(found, dict)
    assert Path(found["from"]).is_relative_to(unpacked)
    expected = {
        ".".join(Path(name).with_suffix("").parts).removesuffix(".__init__")
        for name in source_files()
        if name.endswith(".py") and name != "progress_relay/__init__.py"
    }
    assert set(found["modules"]) == expected
