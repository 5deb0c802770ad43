"""A smoke detector node (kind ``smoke_detector``), for MicroPython and CPython.

Hardware layer (besides ticks_ms, epoch_ms, battery_pct, see anju_node):

    hw.read_smoke() -> (obscuration_db_m: float, temperature_c: float)
    hw.tamper()     -> bool      the base switch is open (detector pulled off)

Local logic: the detector is in alarm when the obscuration is above ``alarm_db_m`` for
``debounce`` samples in a row (a single spike of dust does not alarm); the alarm ends the same
way. The rising edge sends the ``alarm`` event at once and telemetry follows with ``smoke``.
"""

from anju_node import Debounce, Node


class SmokeNode(Node):
    alarm_db_m = 0.15

    def __init__(self, device_id, client, hw, report_ms=None, debounce=3):
        Node.__init__(self, device_id, client, hw, report_ms)
        self.smoke = Debounce(debounce)
        self.tamper = Debounce(debounce)

    def sample(self, now):
        obscuration, temperature = self.hw.read_smoke()
        if self.smoke.update(obscuration >= self.alarm_db_m):
            if self.smoke.value:
                self.send_event("alarm", {"obscuration_db_m": round(obscuration, 3)})
            self.report_soon()
        if self.tamper.update(self.hw.tamper()) and self.tamper.value:
            self.send_event("tamper", {})
        metrics = {
            "smoke": self.smoke.value,
            "obscuration_db_m": round(obscuration, 3),
            "temperature_c": round(temperature, 1),
        }
        batt = self.hw.battery_pct()
        if batt is not None:
            metrics["battery_pct"] = batt
        return metrics
