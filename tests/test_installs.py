"""Installs that work as documented: each extra, installed from this working tree into a clean
virtual environment (PyPI through pip's own configuration), starts its commands and imports
every module they import; the gateway's core install pulls none of the backend's weight."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
PIP_TIMEOUT = 600  # a cold pip cache on a slow link; warm, each install takes seconds

# Fuzz harnesses (`anju fuzz`, `anju bench fuzz-*`: development) import hypothesis, which only
# the dev extra has: outside dev, a module may fail for that reason alone.
DEV_ONLY = "hypothesis"

# What each install must import: every module of these packages (firmware_stubs are MicroPython
# sources for the devices, not modules of this Python).
CHECKS: dict[str, dict[str, object]] = {
    "core": {
        "spec": "",
        "commands": [["--help"], ["gateway", "--help"], ["gateway", "run", "--help"],
                     ["registry", "check", "--help"], ["simulate", "--help"]],
        "packages": ["gateway", "device_simulators"],  # (modbus modules import pymodbus late)
        "skip": [],
        "absent": ["fastapi", "psycopg", "numpy", "aiomqtt", "uvicorn", "cryptography"],
    },
    "modbus": {
        "spec": "[modbus]",
        "commands": [["gateway", "--help"]],
        "packages": ["gateway", "device_simulators"],
        "skip": [],
        "absent": ["fastapi", "psycopg", "numpy"],
    },
    "backend": {
        "spec": "[backend]",
        "commands": [["--help"], ["backend", "--help"], ["backend", "run", "--help"],
                     ["db", "migrate", "--help"], ["provision", "--help"]],
        "packages": ["anju", "backend"],
        "skip": ["anju.__main__"],
        "absent": [],
    },
    "dev": {
        "spec": "[dev]",
        "commands": [["--help"], ["backend", "--help"], ["gateway", "--help"], ["demo", "--help"]],
        "packages": ["benches"],  # a superset of backend and modbus, walked above: its own here
        "skip": [],
        "absent": [],
        "also": ["pytest", "hypothesis", "playwright.async_api", "pytest_asyncio", "mypy",
                 "anju.fuzz", "backend.fuzzing", "gateway.adapters.fuzz"],
    },
}  # fmt: skip

_IMPORT_ALL = """
import importlib, pkgutil, sys
packages = [p for p in sys.argv[1].split(",") if p]
skip, also, may_miss = set(sys.argv[2].split(",")) - {""}, sys.argv[3], sys.argv[4]
failed = []
names = [n for n in also.split(",") if n]
for pkg in packages:
    names.append(pkg)
    mod = importlib.import_module(pkg)
    names += [i.name for i in pkgutil.walk_packages(mod.__path__, pkg + ".")]
for name in names:
    if name in skip or any(name.startswith(s + ".") for s in skip) or name.endswith("__main__"):
        continue
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != may_miss:
            failed.append(f"{name}: {exc!r}")
    except Exception as exc:
        failed.append(f"{name}: {exc!r}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One wheel of the working tree (built from a clean copy: no build/ left in the tree)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in ("anju", "gateway", "backend", "benches", "device_simulators", "firmware_stubs"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
        PIP_TIMEOUT,
    )
    (whl,) = out.glob("anju-*.whl")
    return whl


def run(args: list[str], timeout: float) -> str:
    out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.fixture(scope="module")
def installs(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Install]]:
    """Every extra's clean virtual environment, installed in parallel (pip waits on the
    network and on unpacking more than on the CPU). The environments are made without pip of
    their own, and this pip installs into each (``pip --python``: the same resolver and
    installer): seeding pip into four environments cost more CPU than the installs."""
    base = tmp_path_factory.mktemp("venvs")
    started: dict[str, Install] = {}
    for extra, check in CHECKS.items():
        venv = base / extra
        log = base / f"{extra}.log"
        script = (
            f'"{sys.executable}" -m venv --without-pip "{venv}" && "{sys.executable}" -m pip '
            f'--python "{venv}/bin/python" install --quiet --no-compile "{wheel}{check["spec"]}"'
        )
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", script], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        started[extra] = Install(venv, log, proc)
    yield started
    for inst in started.values():
        if inst.proc.poll() is None:
            inst.proc.kill()
            inst.proc.wait(10)


@dataclass
class Install:
    venv: Path
    log: Path
    proc: subprocess.Popen[bytes]


@pytest.mark.parametrize("extra", list(CHECKS))
def test_each_extra_installs_and_starts_its_commands(
    extra: str, installs: dict[str, Install]
) -> None:
    check = CHECKS[extra]
    inst = installs[extra]
    try:
        rc = inst.proc.wait(PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        inst.proc.kill()
        raise
    assert rc == 0, f"pip install of the {extra} extra failed:\n{inst.log.read_text()}"
    venv = inst.venv
    py, anju = str(venv / "bin" / "python"), str(venv / "bin" / "anju")
    for command in check["commands"]:  # type: ignore[attr-defined]
        assert "usage:" in run([anju, *command], 60)
    run(
        [py, "-c", _IMPORT_ALL, ",".join(check["packages"]), ",".join(check["skip"]),  # type: ignore[arg-type]
         ",".join(check.get("also", [])),  # type: ignore[arg-type]
         "" if extra == "dev" else DEV_ONLY],
        300,
    )  # fmt: skip
    installed = {
        line.split("==")[0].lower().replace("_", "-")
        for line in run([sys.executable, "-m", "pip", "--python", py, "freeze"], 60).splitlines()
    }
    heavy = set(check["absent"]) & installed  # type: ignore[arg-type]
    assert not heavy, f"the {extra} install pulled {sorted(heavy)}"
