"""The command line as a new user meets it: clear errors, and a gateway without backend deps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCK_BACKEND = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'fastapi', 'psycopg', 'psycopg_pool', 'numpy', 'aiomqtt',
                                   'uvicorn', 'pydantic_settings', 'starlette'}:
            raise ImportError(f'{name} is blocked: a gateway must not need it')
        return None
sys.meta_path.insert(0, Block())
"""


def anju(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    prog = code + "from anju.cli import main\nraise SystemExit(main())\n"
    return subprocess.run(
        [sys.executable, "-c", prog, *args], capture_output=True, text=True, timeout=60
    )


def test_the_gateway_runs_without_the_backend_dependencies(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCK_BACKEND + "import gateway, gateway.service\n"
            "from anju.cli import build_parser\n"
            "build_parser().parse_args(['gateway', 'run', '--config', 'x'])\n",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("gateway_id: gw-1\nlan: {url: 'mqtt://127.0.0.1:1'}\n")
    r = anju("gateway", "run", "--config", str(cfg), code=BLOCK_BACKEND)
    assert r.returncode == 2
    assert "gw.yaml" in r.stderr and "uplink" in r.stderr and "Traceback" not in r.stderr


def test_a_wrong_gateway_config_names_the_line_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "gateway_id: gw-1\n"
        "lan: {url: 'mqtt://127.0.0.1:1883'}\n"
        "uplink: {url: 'http://example'}\n"
        "outbox: {path: /tmp/x.sqlite3, batchmax: 3}\n"
        "devices: []\n"
    )
    r = anju("gateway", "run", "--config", str(cfg))
    assert r.returncode == 2, r.stderr
    assert "gw.yaml:3: uplink.url" in r.stderr
    assert "gw.yaml:4: outbox.batchmax" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_wrong_registry_is_a_clear_error(tmp_path: Path) -> None:
    reg = tmp_path / "city.yaml"
    reg.write_text(
        "districts: []\ncommunities:\n  - {id: c1, name: x, district: '330402',"
        " property: p, gateways: []}\n"
    )
    r = anju("registry", "check", str(reg))
    assert r.returncode == 2
    assert "city.yaml:3" in r.stderr and "unknown district" in r.stderr
    r = anju("demo", "--registry", str(tmp_path / "missing.yaml"), "--data-dir", str(tmp_path))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_backend_settings_errors_are_clear() -> None:
    r = anju(
        "backend",
        "run",
        "--db",
        "mysql://x",
        "--mqtt",
        "mqtt://127.0.0.1:1",
        "--registry",
        "r.yaml",
    )
    assert r.returncode == 2
    assert "database_url" in r.stderr and "Traceback" not in r.stderr


def test_unknown_benchmark() -> None:
    r = anju("bench", "nonsense")
    assert r.returncode == 2 and "no benchmark called 'nonsense'" in r.stderr
