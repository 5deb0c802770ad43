"""``anju demo --workers 2`` (issue 11): the endpoints line lists the workers (pid, API); one
of them answers (the leader); a worker killed is started again by the demo, which carries on,
and the other worker takes the lead."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _answers(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/healthz", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _until(check: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_demo_with_two_workers_restarts_a_killed_worker(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "anju", "demo", "--data-dir", str(tmp_path / "demo"),
         "--duration", "90", "--no-simulators", "--insecure", "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("{"), line
        doc: dict[str, Any] = json.loads(line)
        workers = doc["workers"]
        assert len(workers) == 2
        assert all(set(w) == {"pid", "api"} and w["api"].startswith("http://") for w in workers)
        leading = [w for w in workers if _answers(w["api"])]
        assert [w["api"] for w in leading] == [doc["api"]]
        [standby] = [w for w in workers if w not in leading]
        os.kill(leading[0]["pid"], signal.SIGKILL)
        _until(lambda: _answers(standby["api"]), 30, "the standby taking the lead")
        logs = tmp_path / "demo" / "logs"

        def standbys() -> int:
            return sum(f.read_text().count("stands by") for f in logs.glob("backend*.log"))

        _until(lambda: standbys() >= 2, 60, "the killed worker started again, standing by")
        assert proc.poll() is None, "the demo stopped"
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert "exited (-9); starting it again" in err, err[-2000:]
    for w in workers:
        assert not _alive(w["pid"])
