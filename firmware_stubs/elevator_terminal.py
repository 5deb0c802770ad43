"""An elevator IoT terminal (kind ``elevator``, GB/T 24476 signals), for MicroPython and CPython.

Hardware layer (besides ticks_ms, epoch_ms, battery_pct, see anju_node):

    hw.read_car() -> dict with the raw signals of the car:
        floor (int), door_closed (bool), door_zone (bool), moving (bool),
        direction ("up"/"down"/"none"), speed_mps (float), passenger (bool),
        up_limit (bool), down_limit (bool), power_ok (bool), service_mode (str),
        alarm_button (bool), run_count (int), run_hours (float)
    hw.fault_code() -> str or None   a GB/T 24476 fault code ("01".."11") the controller raised

Local logic: door, passenger and door-zone contacts are debounced (``debounce`` equal samples);
the alarm button is debounced and sends ``alarm_button`` on its press; a new fault code sends
``fault`` once. Telemetry goes every second while the car moves and every ``report_ms`` when
it stands, and at once when the door, the passenger sensor, movement or power change.
"""

from anju_node import Debounce, Node


class ElevatorTerminal(Node):
    report_ms = 10000
    moving_report_ms = 1000

    def __init__(self, device_id, client, hw, report_ms=None, debounce=2):
        Node.__init__(self, device_id, client, hw, report_ms)
        self.door_closed = Debounce(debounce, True)
        self.passenger = Debounce(debounce)
        self.door_zone = Debounce(debounce, True)
        self.button = Debounce(debounce)
        self.last_fault = None
        self.was_moving = False
        self.power_ok = True
        self.idle_report_ms = self.report_ms

    def sample(self, now):
        car = self.hw.read_car()
        changed = self.door_closed.update(car["door_closed"])
        changed = self.passenger.update(car["passenger"]) or changed
        self.door_zone.update(car["door_zone"])
        moving = bool(car["moving"])
        if moving != self.was_moving or bool(car["power_ok"]) != self.power_ok:
            changed = True
        self.was_moving = moving
        self.power_ok = bool(car["power_ok"])
        self.report_ms = self.moving_report_ms if moving else self.idle_report_ms
        if self.button.update(car["alarm_button"]) and self.button.value:
            self.send_event("alarm_button", {"floor": car["floor"]})
        code = self.hw.fault_code()
        if code is not None and code != self.last_fault:
            self.send_event("fault", {"code": code})
        self.last_fault = code
        if changed:
            self.report_soon()
        return {
            "moving": moving,
            "direction": car["direction"] if moving else "none",
            "floor": int(car["floor"]),
            "in_door_zone": self.door_zone.value,
            "door": "closed" if self.door_closed.value else "open",
            "passenger": self.passenger.value,
            "service_mode": car["service_mode"],
            "speed_mps": round(car["speed_mps"], 3) if moving else 0.0,
            "up_limit": bool(car["up_limit"]),
            "down_limit": bool(car["down_limit"]),
            "power": "normal" if self.power_ok else "outage",
            "run_count": int(car["run_count"]),
            "run_hours": round(car["run_hours"], 2),
        }
