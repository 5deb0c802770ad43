"""The backend's test-only exit hook (``ANJU_BACKEND_EXIT_AFTER_COMMIT_FILE``, the fault
``backend_kill_after_commit`` of ``anju chaos``): the real backend process, armed, exits after
committing a telemetry batch and before acknowledging it; started again, it drops the batch
the gateway sends again as a duplicate, or, with the dedupe skipped on purpose
(``ANJU_BREAK=skip_dedupe``), stores it twice. No kill has to land at the right moment."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiomqtt
import httpx
import psycopg
import pytest

from anju.servers import PrivateMosquitto, free_port
from anju.uplink import ack_topic, decode_ack, up_topic
from backend.ingest.telemetry import TelemetryLane
from backend.ingest.writer import EXIT_AFTER_COMMIT_CODE, EXIT_AFTER_COMMIT_ENV, Common
from backend.metrics import BackendMetrics
from tests.support import eventually
from tests.test_ingest_support import SimOutbox

pytestmark = pytest.mark.integration

GW = "gw-jx-nh-0001-a"
ROOT = Path(__file__).resolve().parents[1]
N = 60  # records of the one batch
SENTINEL = b"test: every earlier acknowledgement is delivered before this"


def start_backend(
    db_url: str, broker: PrivateMosquitto, city: Path, log: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "anju", "backend", "run", "--db", db_url, "--mqtt",
             broker.url, "--registry", str(city), "--api-port", str(port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, **env},
        )  # fmt: skip
    return proc, port


def tail(log: Path) -> str:
    return log.read_text(encoding="utf-8")[-3000:]


async def ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

        async def up() -> bool:
            try:
                return (await http.get("/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        for _ in range(600):
            assert proc.poll() is None, tail(log)
            if await up():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the backend was not ready in 60 s: {log}")


def stored(db_url: str) -> tuple[set[int], int]:
    """The gateway's sequence numbers seen, and the readings stored."""
    with psycopg.connect(db_url) as c:
        seqs = {
            int(r[0])
            for r in c.execute("SELECT seq FROM ingest_records WHERE gateway_id = %s", (GW,))
        }
        row = c.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None
    return seqs, int(row[0])


async def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("broken", [False, True], ids=["dedupe", "skip_dedupe"])
async def test_exit_after_commit_then_the_resend(
    db_url: str, broker: PrivateMosquitto, city_file: Path, tmp_path: Path, broken: bool
) -> None:
    box = SimOutbox(GW, N, devices=3, metrics=2, event_every=0)
    [batch] = box.batches(per_batch=N)
    armed = tmp_path / "exit-after-commit"
    env = {EXIT_AFTER_COMMIT_ENV: str(armed)} | ({"ANJU_BREAK": "skip_dedupe"} if broken else {})
    log = tmp_path / "backend.log"
    acked: set[int] = set()
    proc, port = start_backend(db_url, broker, city_file, log, env)
    try:
        await ready(proc, port, log)
        armed.touch()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="sim-gw") as client:
            await client.subscribe(ack_topic(GW), qos=1)
            await client.publish(up_topic(GW), batch, qos=1)

            # Armed: the worker exits after the commit, before the acknowledgement.
            code = await asyncio.to_thread(proc.wait, 60)
            assert code == EXIT_AFTER_COMMIT_CODE, tail(log)
            assert not armed.exists()  # one exit per file
            assert "exiting (code 4) after committing 60 records" in tail(log)
            assert stored(db_url) == (set(range(1, N + 1)), N * 2)  # the batch is committed
            await client.publish(ack_topic(GW), SENTINEL, qos=1)
            async for msg in client.messages:  # ... and nothing was acknowledged
                assert msg.payload == SENTINEL, f"acknowledged before the exit: {msg.payload!r}"
                break

            # Started again (the file gone: not armed), it gets the batch again.
            proc, port = start_backend(db_url, broker, city_file, log, env)
            await ready(proc, port, log)

            async def read_acks() -> None:
                async for msg in client.messages:
                    assert isinstance(msg.payload, bytes)
                    acked.update(decode_ack(msg.payload))

            reader = asyncio.create_task(read_acks(), name="acks")
            try:
                await client.publish(up_topic(GW), batch, qos=1)
                await eventually(lambda: acked >= set(range(1, N + 1)), 60, "the resend's acks")
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        assert proc.poll() is None  # once armed, once out
    finally:
        await stop(proc)
    seqs, readings = stored(db_url)
    assert seqs == set(range(1, N + 1))
    # The resend: dropped as a duplicate, or (dedupe skipped on purpose) stored twice.
    assert readings == (N * 2 * 2 if broken else N * 2)


def test_unset_nothing_is_looked_at(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset (production), the lane has no file to look at; set, it has."""

    def lane() -> TelemetryLane:
        common = Common("postgresql://unused", BackendMetrics())
        return TelemetryLane(common, queue_max=1, batch_max=1, wait_s=0, put_wait_s=0)

    monkeypatch.delenv(EXIT_AFTER_COMMIT_ENV, raising=False)
    assert lane().exit_after_commit is None
    monkeypatch.setenv(EXIT_AFTER_COMMIT_ENV, "/nonexistent/exit-file")
    assert lane().exit_after_commit == Path("/nonexistent/exit-file")


def test_chaos_help_names_every_fault_kind() -> None:
    from anju.chaos.run import KINDS

    out = subprocess.run(
        [sys.executable, "-m", "anju", "chaos", "--help"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    text = " ".join(out.split())
    assert all(k in text for k in KINDS), text
