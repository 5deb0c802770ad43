"""A fire-water pressure node (kind ``water_pressure``), for MicroPython and CPython.

Hardware layer (besides ticks_ms, epoch_ms, battery_pct, see anju_node):

    hw.read_pressure_mpa() -> float   one reading of the transducer (4-20 mA via an ADC)

Local logic: the median of the last ``window`` readings is reported, so that a water hammer
spike or one bad ADC sample is not reported as the main's pressure. A drop below ``low_mpa``
(debounced) is reported at once instead of waiting for the next period.
"""

from anju_node import Debounce, Node


class PressureNode(Node):
    low_mpa = 0.10

    def __init__(self, device_id, client, hw, report_ms=None, window=5, debounce=3):
        Node.__init__(self, device_id, client, hw, report_ms)
        self.window = window
        self.readings = []
        self.low = Debounce(debounce)

    def sample(self, now):
        self.readings.append(self.hw.read_pressure_mpa())
        if len(self.readings) > self.window:
            self.readings.pop(0)
        ordered = sorted(self.readings)
        median = ordered[len(ordered) // 2]
        if self.low.update(median < self.low_mpa):
            self.report_soon()
        return {"pressure_mpa": round(median, 3)}
