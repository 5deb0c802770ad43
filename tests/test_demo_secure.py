"""``anju demo`` behaves the same on every run (issue 13, item 8): after a ``kill -9`` the
rerun's first stdout line is still the endpoints JSON, with the same credentials (the
provisioned city is kept), and stderr says what it carried over; ``--fresh`` starts from an
empty data folder (new credentials, nothing carried over); ``--insecure`` is the old demo."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anju.mqtturl import parse_mqtt_url

pytestmark = pytest.mark.integration


def _start(data: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "anju", "demo", "--data-dir", str(data), "--duration", "60",
         "--time-scale", "4", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _first_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("{"):
        proc.kill()
        pytest.fail(f"first line {line!r}; stderr: {proc.communicate(timeout=10)[1]}")
    doc: dict[str, Any] = json.loads(line)
    return doc


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> tuple[str, str]:
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    return out, err


def test_rerun_after_kill_9_and_fresh(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    procs: list[subprocess.Popen[str]] = []
    try:
        procs.append(first := _start(data))
        one = _first_line(first)
        _stop(first, signal.SIGKILL)  # its children die with it (PR_SET_PDEATHSIG)

        procs.append(again := _start(data))
        two = _first_line(again)

        def logins(doc: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
            return {
                k: (parse_mqtt_url(v).username, parse_mqtt_url(v).password)
                for k, v in doc["subscribers"].items()
            }

        assert logins(two) == logins(one)  # the same users and passwords (ports are new)
        assert two["api_token"] == one["api_token"] and two["ca_file"] == one["ca_file"]
        _, err = _stop(again)
        assert again.returncode == 0, err
        assert "carried over from the last run" in err and str(data / "city") in err, err

        procs.append(fresh := _start(data, "--fresh"))
        three = _first_line(fresh)
        assert three["api_token"] != one["api_token"]
        _, err = _stop(fresh)
        assert fresh.returncode == 0, err
        assert "carried over" not in err, err

        procs.append(old := _start(tmp_path / "insecure", "--insecure", "--no-simulators"))
        four = _first_line(old)
        assert four["api_token"] is None and four["alerts_mqtt"].startswith("mqtt://127.0.0.1:")
        _stop(old)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for d in (data, tmp_path / "insecure"):
            marker = d / "postgres" / "PGDATA-IS-ELSEWHERE"
            if marker.exists():
                shutil.rmtree(Path(marker.read_text().strip()).parent, ignore_errors=True)


def test_fresh_refuses_a_folder_the_demo_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("mine")
    r = subprocess.run(
        [sys.executable, "-m", "anju", "demo", "--data-dir", str(tmp_path), "--fresh"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "precious.txt" in r.stderr, r.stderr
    assert (tmp_path / "precious.txt").read_text() == "mine"
