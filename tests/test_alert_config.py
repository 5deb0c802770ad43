"""Per-deployment alerting settings: the example file is valid, parameters resolve registry >
deployment kind > deployment "*" > catalog, and a misspelt kind is refused with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from anju.errors import ConfigError
from backend.alerting.engine import Engine
from backend.alerting.testing import Feeder, sample_city
from backend.config import load_alerting

EXAMPLE = Path(__file__).parent.parent / "deploy" / "alerting.example.yaml"
STUCK = {"moving": False, "door": "closed", "passenger": True, "in_door_zone": True}


def test_the_example_file_loads_and_its_params_apply() -> None:
    cfg = load_alerting(EXAMPLE)
    assert {t.audience for t in cfg.tokens} == {"fire", "property", "maintenance", "admin"}
    e = Engine(sample_city(), params=cfg.params)
    elevator = e.devices["c0-elevator-0"].params
    assert elevator["trap_s"] == 25  # the deployment's elevator default
    assert elevator["rated_speed_mps"] == 2.0  # the registry's own value wins
    assert elevator["report_interval_s"] == 300  # the deployment's "*"
    assert elevator["door_held_open_s"] == 120  # the catalog's
    assert e.devices["c0-water_pressure-0"].params["min_mpa"] == 0.15


def test_a_deployment_default_changes_when_a_rule_fires() -> None:
    f = Feeder(params={"elevator": {"trap_s": 25}})
    f.tel("c0-elevator-0", 0, **STUCK)
    assert f.tel("c0-elevator-0", 24.9, **STUCK) == []
    assert [c.action for c in f.tel("c0-elevator-0", 25, **STUCK)] == ["raised"]


def test_an_unknown_kind_is_refused_with_the_line(tmp_path: Path) -> None:
    p = tmp_path / "alerting.yaml"
    p.write_text("ack_deadline_s: 300\nparams:\n  elevatr: {trap_s: 20}\n")
    with pytest.raises(ConfigError, match=r"alerting.yaml:3: params: .*unknown device kind"):
        load_alerting(p)
