"""Scenario files: timed fault injections and the alerts they are expected to raise.

```yaml
name: demo
duration_s: 90
actions:
  - {at: 10, device: jx-nh-0001-elev-01, action: trap, params: {between_floors: true}}
  - {at: 35, device: jx-nh-0001-smoke-3-1201, action: smoke}
  - {at: 60, gateway: gw-jx-nh-0001-a, action: uplink_cut}
expect:
  - {type: elevator.trapped, device: jx-nh-0001-elev-01}
```

``at`` is in seconds of device time after the simulation starts (so a scenario runs the same
under time compression). An action names a ``device`` (one of its model's actions) or a
``gateway`` (``uplink_cut``, ``uplink_restore``: the gateway's link to the backend; only the
in-process harness, ``device_simulators.harness``, can play those). ``expect`` lists every
alert the scenario raises, exactly; ``device`` is the alert's device (a gateway id for
``gateway.offline``) and ``severity`` is checked when given. ``registry`` is a registry file
relative to the scenario (default: the sample Jiaxing registry). Unknown keys are rejected;
errors name the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from anju.contract import DEVICE_ID_RE, EVENT_TYPE_RE
from anju.errors import ConfigError
from anju.registry import Registry, load_registry, sample_registry_path
from anju.yamlfile import _node_at, line_of, load_model, read_yaml
from device_simulators.base import GENERIC_ACTIONS
from device_simulators.fleet import MODEL_CLASSES

DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_RE.pattern)]
ActionName = Annotated[str, StringConstraints(pattern=EVENT_TYPE_RE.pattern)]
AlertType = Annotated[str, StringConstraints(pattern=r"^[a-z]+(\.[a-z0-9_]+)+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


GATEWAY_ACTIONS: frozenset[str] = frozenset({"uplink_cut", "uplink_restore"})
"""What a scenario can do to a gateway: cut its uplink to the backend (the broker publishes
its Last Will, its outbox keeps the readings) and restore it (the outbox replays)."""


class ScenarioAction(_Strict):
    """One fault injection, on a device or on a gateway."""

    at: float = Field(ge=0, description="seconds of device time after the simulation starts")
    device: DeviceId | None = None
    gateway: DeviceId | None = None
    action: ActionName
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_target(self) -> ScenarioAction:
        if (self.device is None) == (self.gateway is None):
            raise ValueError("name exactly one of device or gateway")
        if self.gateway is not None and self.action not in GATEWAY_ACTIONS:
            raise ValueError(
                f"a gateway has no action {self.action!r}; "
                f"expected one of {sorted(GATEWAY_ACTIONS)}"
            )
        return self

    @property
    def target(self) -> str:
        return self.device or self.gateway or ""


class ExpectedAlert(_Strict):
    """An alert the scenario must raise."""

    type: AlertType
    device: DeviceId
    severity: Literal["critical", "major", "minor", "info"] | None = None


class Scenario(_Strict):
    """A named list of fault injections, and the alerts they should raise."""

    name: str
    description: str = ""
    registry: str | None = None
    seed: int = 1
    duration_s: float | None = Field(default=None, gt=0)
    actions: list[ScenarioAction] = Field(default_factory=list)
    expect: list[ExpectedAlert] = Field(default_factory=list)

    @model_validator(mode="after")
    def _actions_fit(self) -> Scenario:
        last = max((a.at for a in self.actions), default=0.0)
        if self.duration_s is not None and last > self.duration_s:
            raise ValueError(f"duration_s {self.duration_s} ends before the last action at {last}")
        return self

    def timeline(self) -> list[ScenarioAction]:
        """The actions in time order (stable for actions at the same time)."""
        return sorted(self.actions, key=lambda a: a.at)

    def problems(self, registry: Registry) -> list[tuple[tuple[str | int, ...], str]]:
        """Actions naming a device the registry lacks, or an action its kind does not know."""
        kinds = {d.id: d.kind for c in registry.communities for d in c.devices}
        gateways = {g.id for c in registry.communities for g in c.gateways}
        out: list[tuple[tuple[str | int, ...], str]] = []
        for i, act in enumerate(self.actions):
            if act.gateway is not None:
                if act.gateway not in gateways:
                    out.append((("actions", i, "gateway"), f"unknown gateway {act.gateway!r}"))
                continue
            assert act.device is not None
            kind = kinds.get(act.device)
            if kind is None:
                out.append((("actions", i, "device"), f"unknown device {act.device!r}"))
                continue
            cls = MODEL_CLASSES.get(kind)
            if cls is None:
                out.append(
                    (("actions", i, "device"), f"{act.device} is a {kind}, which is not simulated")
                )
                continue
            allowed = cls.actions | GENERIC_ACTIONS
            if act.action not in allowed:
                out.append(
                    (
                        ("actions", i, "action"),
                        f"a {kind} has no action {act.action!r}; expected one of {sorted(allowed)}",
                    )
                )
        for i, exp in enumerate(self.expect):
            if exp.device not in kinds and exp.device not in gateways:
                out.append((("expect", i, "device"), f"unknown device {exp.device!r}"))
        return out


def load_scenario(path: Path | str, *, registry: Registry | None = None) -> Scenario:
    """Read a scenario file; with ``registry``, also check its devices and actions.

    Raises ConfigError naming the file and the line of each problem.
    """
    p = Path(path)
    scenario = load_model(p, Scenario)
    if registry is not None:
        problems = scenario.problems(registry)
        if problems:
            _, node = read_yaml(p)
            raise ConfigError(
                "\n".join(
                    f"{p}:{line_of(_node_at(node, loc)) or '?'}: "
                    f"{'.'.join(str(x) for x in loc)}: {msg}"
                    for loc, msg in problems
                )
            )
    return scenario


def scenario_registry(scenario: Scenario, path: Path | str) -> Registry:
    """The registry a scenario file runs on: its ``registry`` key, else the sample one."""
    if scenario.registry is None:
        return load_registry(sample_registry_path())
    return load_registry(Path(path).parent / scenario.registry)


def scenarios_dir() -> Path:
    """The folder of the scenarios shipped with anju."""
    return sample_registry_path().parent / "scenarios"


def demo_scenario_path() -> Path:
    """The demo scenario: a trapped elevator and a fire in building 3 of jx-nh-0001."""
    return scenarios_dir() / "demo.yaml"
