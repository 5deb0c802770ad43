"""Remote configuration on a real Mosquitto with `anju provision`'s files (issue 13): only the
operator identity may publish a gateway's configuration; the backend's workers (both lanes)
are refused by the broker's ACL, and keep everything else under ``anju/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from anju.provision import ProvisionResult, provision
from anju.servers import stop_process
from tests.test_provision_broker import Broker, start, tls, wait_for

pytestmark = pytest.mark.integration
GW = "gw-jx-nh-0001-a"


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> ProvisionResult:
    from tests.conftest import DATA

    return provision(DATA / "city.yaml", tmp_path_factory.mktemp("city"))


@pytest.fixture
def backend_broker(city: ProvisionResult, tmp_path: Path) -> Iterator[Broker]:
    b = start(city.backend, tmp_path / "backend-broker")
    yield b
    stop_process(b.proc)


def test_only_the_operator_may_push_a_gateways_configuration(
    city: ProvisionResult, backend_broker: Broker
) -> None:
    gw = tls(backend_broker, city.identity("backend", GW), city)
    operator = tls(backend_broker, city.identity("backend", "anju-operator"), city)
    worker = tls(backend_broker, city.identity("backend", "anju-backend"), city)
    alarms = tls(backend_broker, city.identity("backend", "anju-backend-events"), city)
    try:
        gw.sub(f"anju/gw/{GW}/config")
        gw.sub(f"anju/gw/{GW}/ack")
        worker.pub(f"anju/gw/{GW}/config", b'{"version": 1, "config": {"devices": []}}')
        alarms.pub(f"anju/gw/{GW}/config", b'{"version": 2, "config": {"devices": []}}')
        worker.pub(f"anju/gw/{GW}/ack", b'{"seqs": [1]}')  # the workers keep the rest
        operator.pub(f"anju/gw/{GW}/config", b'{"version": 3, "config": {"heartbeat_s": 10}}')
        wait_for(lambda: len(gw.got) >= 2)
        assert sorted(gw.got) == [
            (f"anju/gw/{GW}/ack", b'{"seqs": [1]}'),
            (f"anju/gw/{GW}/config", b'{"version": 3, "config": {"heartbeat_s": 10}}'),
        ]
        # The operator reads the gateways' results and states; a worker cannot even read the
        # configurations (a deny is both ways).
        worker.sub("anju/gw/+/config")
        wait_for(lambda: bool(worker.got), within=1.0)
        assert worker.got == []
    finally:
        for c in (gw, operator, worker, alarms):
            c.close()
