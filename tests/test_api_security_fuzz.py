"""No route answers 500 to bad input (issue 13): schemathesis against the backend's OpenAPI
document, on a real backend (``anju backend run``) with an admin token and a department's token,
a few examples per operation and token of every audience (bounded in time, ~20 s; the live
stream, which never ends, excluded)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from anju.servers import PrivateMosquitto, free_port

schemathesis = pytest.importorskip("schemathesis")  # the dev extra has it

pytestmark = pytest.mark.integration
TOKENS = {  # a token of every audience
    "ops": ("admin", None),
    "fire-nh": ("fire", "330402"),
    "market-nh": ("market_supervision", "330402"),
    "police-nh": ("public_security", "330402"),
    "bureau-nh": ("construction", "330402"),
    "greentown": ("property", "org-greentown-jx"),
    "otis": ("maintenance", "org-otis-jx"),
    "committee-nh": ("community", "jx-nh-0001"),
}
EXAMPLES = 8
CALLS: list[int] = []


@pytest.fixture
def backend_url(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path
) -> Iterator[str]:
    alerting = tmp_path / "alerting.yaml"
    alerting.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"name": n, "audience": a, **({"scope": s} if s else {}), "token": _tok(n)}
                    for n, (a, s) in TOKENS.items()
                ]
            }
        )
    )
    port = free_port()
    env = {
        **os.environ,
        "ANJU_DATABASE_URL": db_url,
        "ANJU_MQTT_URL": broker.url,
        "ANJU_REGISTRY": str(city_file),
        "ANJU_API_PORT": str(port),
        "ANJU_ALERTING": str(alerting),
    }
    log = (tmp_path / "backend.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "anju", "backend", "run"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "backend.log").read_text()
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the backend did not start"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def _tok(name: str) -> str:
    return f"token-{name}-for-the-schemathesis-test"


def _fuzz(op: Any, base_url: str, token: str, failures: list[str]) -> None:
    @given(case=op.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        response = case.call(
            base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=20
        )
        CALLS.append(response.status_code)
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {response.request.url}: "
                f"{response.status_code} {response.text[:200]}"
            )

    check()


def test_no_route_answers_500(backend_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{backend_url}/openapi.json")
    failures: list[str] = []
    operations = 0
    started = time.monotonic()
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith("/stream"):
            continue
        operations += 1
        for name in TOKENS:
            token = _tok(name)
            _fuzz(op, backend_url, token, failures)
    print(f"\n{operations} operations, {len(CALLS)} calls, {time.monotonic() - started:.1f} s")
    assert operations >= 10
    assert failures == [], "\n".join(failures[:20])
