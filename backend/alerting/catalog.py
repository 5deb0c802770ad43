"""The alert catalog of ALERTS.md as data: types, default severities, who may resolve, and the
defaults of every device parameter the rules read.

Per-device values come from the registry (``params``); per-deployment values from the alerting
configuration file (``backend.config.AlertingConfig.params``, by device kind). A rule reads a
parameter with ``rules_common.param``: registry, then deployment, then the default here.
"""

from __future__ import annotations

from typing import Final

from anju.contract import Severity

C, MA, MI, INFO = Severity.CRITICAL, Severity.MAJOR, Severity.MINOR, Severity.INFO

SEVERITY: Final[dict[str, Severity]] = {
    # elevator
    "elevator.trapped": C,
    "elevator.alarm_button": C,
    "elevator.overtravel_top": C,
    "elevator.overtravel_bottom": C,
    "elevator.door_open_moving": C,
    "elevator.overspeed": MA,  # critical above 1.4 x rated
    "elevator.stopped_outside_door_zone": MA,
    "elevator.power_loss": MA,
    "elevator.fault": MA,
    "elevator.door_held_open": MI,
    "elevator.door_cycling": MI,
    "elevator.ebike": MA,
    # fire
    "fire.alarm": C,
    "fire.electrical": MA,
    "fire.water_pressure_low": MA,
    "fire.heat_rise": MA,
    "fire.panel_fault": MA,
    "fire.panel_disabled": MI,
    "fire.supervisory": MA,
    "fire.linkage_no_feedback": MA,
    "fire.transmission_offline": MA,
    "fire.door_held_open": MI,
    "fire.lane_blocked": MA,
    "fire.ebike_charging": MA,
    # security and access
    "security.emergency_button": C,
    "security.perimeter_intrusion": MA,
    "security.object_thrown": MA,
    "security.tamper": MA,
    "access.door_forced": MA,
    "access.duress": C,
    "access.door_held_open": MI,
    "access.tailgating": MI,
    # device health
    "gateway.offline": MA,
    "device.offline": MA,  # minor for kinds other than elevators and fire kinds
    "device.battery_low": MI,
    "device.clock_skew": INFO,
}

# Alerts that only a person resolves: the rules never clear them (GB 50394 latching alarms).
LATCHING: Final = frozenset(
    {
        "security.emergency_button",
        "security.object_thrown",
        "security.tamper",
        "access.duress",
        "elevator.alarm_button",
        "elevator.fault",
    }
)

# Parameter defaults by device kind (ALERTS.md; "std" values from national standards).
PARAM_DEFAULTS: Final[dict[str, dict[str, float]]] = {
    "elevator": {
        "trap_s": 30,
        "rated_speed_mps": 1.0,
        "overspeed_major_x": 1.15,
        "overspeed_critical_x": 1.4,
        "overtravel_s": 20,
        "stopped_outside_s": 60,
        "door_held_open_s": 120,
        "door_cycles": 5,
        "door_cycle_window_s": 60,
        "overspeed_clear_s": 60,
    },
    "heat_detector": {"rise_c_per_min": 10, "rise_window_s": 60, "rise_clear_s": 60},
    "smoke_detector": {"rise_c_per_min": 10, "rise_window_s": 60, "rise_clear_s": 60},
    "water_pressure": {"min_mpa": 0.10, "low_s": 60, "recover_mpa": 0.02, "recover_s": 60},
    "electrical_fire": {
        "residual_limit_ma": 300,
        "temp_limit_c": 80,
        "over_s": 10,
        "clear_ratio": 0.9,
        "clear_s": 60,
    },
    "fire_door": {"held_open_limit_s": 300},
    "fire_panel": {"linkage_feedback_s": 10, "heartbeat_s": 60},
    "camera": {
        "lane_blocked_s": 300,
        "ebike_charging_quiet_s": 1800,
        "quiet_s": 600,
        "ebike_window_s": 5,
        "ebike_clear_s": 60,
    },
    "access_controller": {"held_open_limit_s": 180, "forced_grant_window_s": 10, "quiet_s": 600},
    "perimeter": {"quiet_s": 600},
    "*": {
        "report_interval_s": 60,
        "offline_intervals": 3,
        "battery_low_pct": 20,
        "battery_ok_pct": 30,
        "clock_skew_s": 300,
        "clock_ok_s": 60,
    },
}

# Shared behaviour (ALERTS.md "Behaviour every rule shares"); overridable in AlertingConfig.
FLAP_CYCLES: Final = 5  # more than this many raise/clear cycles ...
FLAP_WINDOW_MS: Final = 600_000  # ... within 10 minutes: held open
STORM_COUNT: Final = 20  # more than this many alerts of one type in one community ...
STORM_WINDOW_MS: Final = 60_000  # ... within 60 s: one summary alert
GATEWAY_SILENT_MS: Final = 90_000
ACK_DEADLINE_MS: Final = 300_000  # critical, by property
FIRE_ACK_DEADLINE_MS: Final = 180_000
