"""The core of an anju device: topics, payloads, Last Will, reconnects, an offline buffer.

Device code: imports only what MicroPython has (here: json or ujson). No dataclasses, no
typing, no f-string "=" specifiers. Time comes from the hardware layer, never from the host:

    hw.ticks_ms()   -> int        a monotonic millisecond counter (time.ticks_ms on a board)
    hw.epoch_ms()   -> int|None   Unix time in ms, None when the clock is not set (then the
                                  payload has no "ts" and the gateway stamps its receive time)
    hw.battery_pct()-> int|None   None for a mains-powered device

The MQTT client is injected and has the API of MicroPython's umqtt.simple.MQTTClient:
set_last_will(topic, msg, retain, qos), connect(), publish(topic, msg, retain, qos),
disconnect(), check_msg(); network failures raise OSError.
"""

try:
    import ujson as json
except ImportError:
    import json

TOPIC_PREFIX = "anju/dev/"
OFFLINE = b'{"online":false}'
BACKOFF_MIN_MS = 1000
BACKOFF_MAX_MS = 60000


def ticks_diff(a, b):
    """a - b for millisecond counters (MicroPython's ticks wrap; the hardware layer may
    provide ticks_diff, otherwise plain subtraction)."""
    return a - b


class Ring:
    """A bounded FIFO: when full, ``push`` drops the oldest item and counts it."""

    def __init__(self, capacity):
        self.items = [None] * capacity
        self.capacity = capacity
        self.head = 0
        self.count = 0
        self.dropped = 0

    def __len__(self):
        return self.count

    def push(self, item):
        if self.count == self.capacity:
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            self.dropped += 1
        self.items[(self.head + self.count) % self.capacity] = item
        self.count += 1

    def peek(self):
        return self.items[self.head] if self.count else None

    def pop(self):
        if not self.count:
            return None
        item = self.items[self.head]
        self.items[self.head] = None
        self.head = (self.head + 1) % self.capacity
        self.count -= 1
        return item


class Debounce:
    """A boolean input that changes only after ``samples`` equal readings in a row."""

    def __init__(self, samples, initial=False):
        self.samples = samples
        self.value = initial
        self._candidate = initial
        self._run = 0

    def update(self, raw):
        """Feed one reading; return True when the debounced value changed."""
        raw = bool(raw)
        if raw == self.value:
            self._run = 0
            self._candidate = raw
            return False
        if raw != self._candidate:
            self._candidate = raw
            self._run = 0
        self._run += 1
        if self._run >= self.samples:
            self.value = raw
            self._run = 0
            return True
        return False


class Node:
    """What every anju device does: status with a Last Will, telemetry, events, buffering.

    ``poll()`` does one round (read, publish what is due, keep the connection); a device calls
    it in its main loop. Events and the status travel with QoS 1, telemetry with QoS 0. While
    the broker is unreachable, events wait in ``events`` (16) and telemetry in ``telemetry``
    (32); when a ring is full its oldest item is dropped and counted (``dropped()``). After a
    reconnect the status is published again, then events, then telemetry, oldest first.
    """

    report_ms = 10000
    fw = "1.0.0"

    def __init__(self, device_id, client, hw, report_ms=None):
        self.device_id = device_id
        self.client = client
        self.hw = hw
        if report_ms is not None:
            self.report_ms = report_ms
        self.connected = False
        self.events = Ring(16)
        self.telemetry = Ring(32)
        self.connects = 0
        self._retry_at = None
        self._backoff_ms = BACKOFF_MIN_MS
        self._next_report = None
        self._report_now = True

    # Topics and payloads.

    def topic(self, channel):
        return TOPIC_PREFIX + self.device_id + "/" + channel

    def status_payload(self):
        status = {"online": True, "fw": self.fw}
        batt = self.hw.battery_pct()
        if batt is not None:
            status["battery_pct"] = batt
        return json.dumps(status)

    def _stamp(self, body):
        ts = self.hw.epoch_ms()
        if ts is not None:
            body["ts"] = int(ts)
        return body

    def dropped(self):
        return self.events.dropped + self.telemetry.dropped

    # Publishing.

    def send_event(self, event_type, data=None):
        """Queue an event (sent at once when connected)."""
        body = self._stamp({"type": event_type, "data": data or {}})
        self.events.push(json.dumps(body))
        self._flush()

    def send_telemetry(self, metrics):
        body = self._stamp({"metrics": metrics})
        self.telemetry.push(json.dumps(body))
        self._flush()

    def report_soon(self):
        """Send telemetry in this poll (report on change)."""
        self._report_now = True

    def _flush(self):
        if not self.connected:
            return
        try:
            while len(self.events):
                self.client.publish(self.topic("event"), self.events.peek(), False, 1)
                self.events.pop()
            while len(self.telemetry):
                self.client.publish(self.topic("telemetry"), self.telemetry.peek(), False, 0)
                self.telemetry.pop()
        except OSError:
            self._lost()

    # The connection.

    def _connect(self, now):
        self.client.set_last_will(self.topic("status"), OFFLINE, True, 1)
        try:
            self.client.connect()
            self.client.publish(self.topic("status"), self.status_payload(), True, 1)
        except OSError:
            self._lost()
            jitter = now % (self._backoff_ms // 2 + 1)
            self._retry_at = now + self._backoff_ms // 2 + jitter
            self._backoff_ms = min(BACKOFF_MAX_MS, self._backoff_ms * 2)
            return
        self.connected = True
        self.connects += 1
        self._backoff_ms = BACKOFF_MIN_MS
        self._retry_at = None
        self._flush()

    def _lost(self):
        if self.connected:
            try:  # noqa: SIM105 (MicroPython has no contextlib)
                self.client.disconnect()
            except OSError:
                pass
        self.connected = False

    def stop(self):
        """A clean stop: say so in the retained status, then disconnect."""
        if self.connected:
            try:
                self.client.publish(self.topic("status"), OFFLINE, True, 1)
                self.client.disconnect()
            except OSError:
                pass
        self.connected = False

    # The loop.

    def sample(self, now):
        """Read the sensors and send events; return the telemetry metrics. Per node kind."""
        raise NotImplementedError

    def poll(self):
        """One round: connect if due, sample, publish what is due."""
        now = self.hw.ticks_ms()
        if not self.connected and (self._retry_at is None or ticks_diff(now, self._retry_at) >= 0):
            self._connect(now)
        if self.connected:
            try:
                self.client.check_msg()
            except OSError:
                self._lost()
        metrics = self.sample(now)
        due = self._next_report is None or ticks_diff(now, self._next_report) >= 0
        if due or self._report_now:
            self._report_now = False
            self._next_report = now + self.report_ms
            self.send_telemetry(metrics)
