"""The npm package (service/npm) for the tests: its tools installed from the lock file, the
package built, packed and unpacked once per session; pages bundled against the unpacked
tarball (what a user installs), and served from a directory of their own (another origin
than the relay's, as in production)."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "service" / "npm"
TSC = PACKAGE_DIR / "node_modules" / ".bin" / "tsc"
# Written into node_modules after a clean `npm ci`: the hash of the lock file it installed.
INSTALLED = PACKAGE_DIR / "node_modules" / ".progress-relay-lock"


def run(*args: str, cwd: Path = PACKAGE_DIR) -> str:
    """Run a command of the package's toolchain; its stdout, or a failure with its output."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def install() -> None:
    """``npm ci`` from the committed lock file, unless node_modules holds exactly that one."""
    digest = hashlib.sha256((PACKAGE_DIR / "package-lock.json").read_bytes()).hexdigest()
    if INSTALLED.exists() and INSTALLED.read_text().strip() == digest:
        return
    run("npm", "ci", "--no-audit", "--no-fund")
    INSTALLED.write_text(digest)


@dataclass(frozen=True)
class Package:
    tarball: Path
    files: list[str]  # the tarball's paths, from `npm pack --json`
    unpacked: Path  # its package/ directory: the package as npm installs it
    manifest: dict[str, Any]  # its package.json


def build_and_pack(workdir: Path) -> Package:
    """Install, build and pack the package into ``workdir``, once for all the pytest-xdist
    workers of a run (they share ``workdir``: the first builds, under a lock, and the others
    take what it left there)."""
    workdir.mkdir(parents=True, exist_ok=True)
    packed_json = workdir / "packed.json"
    with open(workdir / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not packed_json.exists():
            install()
            run("npm", "run", "build")
            output = run("npm", "pack", "--json", "--pack-destination", str(workdir))
            packed = json.loads(output)[0]
            with tarfile.open(workdir / packed["filename"]) as archive:
                archive.extractall(workdir, filter="data")
            packed_json.write_text(json.dumps(packed))
    packed = json.loads(packed_json.read_text())
    unpacked = workdir / "package"
    return Package(
        tarball=workdir / packed["filename"],
        files=sorted(entry["path"] for entry in packed["files"]),
        unpacked=unpacked,
        manifest=json.loads((unpacked / "package.json").read_text()),
    )


def shared_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of this test run that every pytest-xdist worker of it sees (the workers'
    temporary directories have one parent per run); the run's own one without xdist."""
    base: Path = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "npm-package"


def bundle(package: Package, entry: Path, outfile: Path, *, development: bool = False) -> None:
    """One ES module of ``entry`` (JSX or Svelte) and everything it imports, the client from
    ``package``'s tarball."""
    flags = ["--development"] if development else []
    run(
        "node",
        "scripts/bundle-page.mjs",
        str(entry),
        str(outfile),
        "--client",
        str(package.unpacked),
        *flags,
    )


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """A static file server of ``directory`` on a free port of 127.0.0.1; its base URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
