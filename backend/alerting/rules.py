"""The rules by device kind: which rule functions run for a device of each kind, in order.

The rule families live in ``rules_elevator``, ``rules_fire``, ``rules_security`` and
``rules_health``. Each rule is a small pure function ``(device, state, input) -> decisions``
that never does I/O and never reads a clock (time is the device time of the input). Order
matters where one rule looks at another's alert: ``elevator_trapped`` runs before
``elevator_alarm_button``, which only raises when no trapped alert is open.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from backend.alerting import rules_elevator as el
from backend.alerting import rules_fire as fi
from backend.alerting import rules_health as he
from backend.alerting import rules_security as se
from backend.alerting.late import Pairs
from backend.alerting.model import DeviceEvent, Status, Telemetry, Tick
from backend.alerting.rules_common import Rule

_HEALTH: Final = (he.device_battery_low, he.device_clock_skew)

RULES_BY_KIND: Final[Mapping[str, tuple[Rule, ...]]] = {
    "elevator": (
        el.elevator_trapped,
        el.elevator_alarm_button,
        el.elevator_overtravel_top,
        el.elevator_overtravel_bottom,
        el.elevator_door_open_moving,
        el.elevator_overspeed,
        el.elevator_stopped_outside_door_zone,
        el.elevator_power_loss,
        el.elevator_fault,
        el.elevator_door_held_open,
        el.elevator_door_cycling,
        *_HEALTH,
    ),
    "smoke_detector": (fi.fire_alarm, fi.fire_heat_rise, se.security_tamper, *_HEALTH),
    "heat_detector": (fi.fire_alarm, fi.fire_heat_rise, *_HEALTH),
    "manual_call_point": (fi.fire_alarm, *_HEALTH),
    "fire_panel": (
        fi.fire_alarm,
        fi.fire_panel_fault,
        fi.fire_panel_disabled,
        fi.fire_supervisory,
        fi.fire_linkage_no_feedback,
        he.device_clock_skew,
    ),
    "water_pressure": (fi.fire_water_pressure_low, *_HEALTH),
    "electrical_fire": (fi.fire_electrical, *_HEALTH),
    "fire_door": (fi.fire_door_held_open, se.security_tamper, *_HEALTH),
    "camera": (
        se.camera_elevator_ebike,
        fi.fire_lane_blocked,
        fi.fire_ebike_charging,
        se.security_object_thrown,
        se.security_perimeter_intrusion,
        se.security_tamper,
    ),
    "access_controller": (
        se.access_door_forced,
        se.access_duress,
        se.access_door_held_open,
        se.access_tailgating,
        se.security_tamper,
        *_HEALTH,
    ),
    "emergency_button": (se.security_emergency_button, se.security_tamper, *_HEALTH),
    "perimeter": (se.security_perimeter_intrusion, se.security_tamper, *_HEALTH),
}

# Events that begin and end something, by device kind (a fire panel's ``fire`` and
# ``reset``): how the engine judges a late event (``backend.alerting.late``).
EVENT_PAIRS: Final[Mapping[str, Pairs]] = {
    "fire_panel": fi.PANEL_PAIRS,
    "camera": fi.CAMERA_PAIRS,
}

ALL_INPUTS: Final[frozenset[type]] = frozenset({Telemetry, DeviceEvent, Status, Tick})
_EVENTS: Final[frozenset[type]] = frozenset({DeviceEvent})
_TELEMETRY: Final[frozenset[type]] = frozenset({Telemetry})

# The inputs a rule reacts to, where it is not every input: for any other input the rule
# returns no decision and does not touch the state, so the engine does not call it. Rules with
# timers or clear conditions on the current values (most of them) see every input, ticks
# included.
INPUTS: Final[Mapping[Rule, frozenset[type]]] = {
    el.elevator_alarm_button: _EVENTS,
    el.elevator_fault: _EVENTS,
    el.elevator_power_loss: _TELEMETRY,
    fi.fire_alarm: frozenset({DeviceEvent, Telemetry}),
    fi.fire_heat_rise: _TELEMETRY,
    fi.fire_panel_fault: _EVENTS,
    fi.fire_panel_disabled: _EVENTS,
    fi.fire_supervisory: _EVENTS,
    se.security_emergency_button: _EVENTS,
    se.security_object_thrown: _EVENTS,
    se.security_tamper: _EVENTS,
    se.access_duress: _EVENTS,
    he.device_battery_low: frozenset({Telemetry, Status}),
    he.device_clock_skew: _TELEMETRY,
}

__all__ = ["ALL_INPUTS", "EVENT_PAIRS", "INPUTS", "RULES_BY_KIND", "Rule"]
