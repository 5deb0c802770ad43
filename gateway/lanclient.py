"""The LAN's paho client, with two economies for many small messages (issue 12, item 4).

paho reads a packet's fixed header and body with a system call each, and writes every PUBACK
with two (a wake-up byte, then the packet). With devices that send one reading per message
those system calls were most of the gateway's CPU. This client:

- reads the socket ``READ_CHUNK`` bytes at a time into a buffer that paho's packet reader
  consumes, and drains the buffer before paho waits in ``select`` again (a turn reads at most
  ``TURN_CHUNKS`` chunks; the next ``loop`` starts with what it left);
- takes a PUBLISH of QoS 0 or 1 (MQTT 3.1.1) that lies whole in the buffer straight from it
  (``_fast_publish``) and hands its parts to ``on_raw_message`` (topic bytes, payload, QoS,
  packet id, DUP flag), without paho's byte-by-byte header reads, packet dictionary, message
  object and debug formatting; without ``on_raw_message``, the same ``MQTTMessage`` paho would
  build goes to paho's callbacks. Every other packet (and a PUBLISH that is not whole yet, or
  malformed) goes through paho's reader, and its messages to ``on_message``;
- acknowledges a commit group's messages with one write (``ack_many``): the PUBACKs are
  concatenated into one queued packet.

Every write happens on the network thread (the one that calls ``loop``): paho would otherwise
write a packet queued from another thread (the committer's PUBACKs) at once, on that thread, and
two threads writing the same non-blocking socket can interleave a partly written packet with
another. A no-op ``on_socket_register_write`` makes paho queue the packet and wake the network
thread instead.

The read and ack economies rest on paho's internal methods and state (``_sock_recv``,
``_packet_read``, ``_handle_on_message``, ``_packet_queue``, ``_in_packet``, unchanged from paho
1.6 to 2.2); when they are missing, the client behaves as paho's own (``FAST`` is False) and
``ack_many`` acknowledges one message at a time.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

READ_CHUNK: Final = 64 * 1024
TURN_CHUNKS: Final = 4  # chunks one ``loop_read`` drains at most (then writes, keepalive, stop)
_PUBACK: Final = 0x40
_PUBLISH: Final = 0x30
_now: Final = getattr(mqtt, "time_func", time.monotonic)  # paho's clock for keepalive
RawMessage = Callable[[bytes, bytes, int, int, bool], None]  # (topic, payload, qos, mid, dup)
FAST: Final = all(
    hasattr(mqtt.Client, name)
    for name in ("_sock_recv", "_packet_read", "_handle_on_message", "_packet_queue")
)


def _written_by_the_loop(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """Nothing: the network thread's ``loop`` sees the queued packet and writes it."""


class LanClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered reads and grouped PUBACKs (MQTT 3.1.1)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""  # bytes read and not yet consumed: self._rbuf[self._rpos:]
        self._rpos = 0
        self.chunks = 0  # chunks read from the socket so far (FAST only): a new one, a new time
        self.on_socket_register_write = _written_by_the_loop
        self.on_raw_message: RawMessage | None = None

    if FAST:

        def _sock_recv(self, bufsize: int) -> bytes:
            pos = self._rpos
            if pos >= len(self._rbuf):
                data = super()._sock_recv(READ_CHUNK)  # raises BlockingIOError when empty
                self.chunks += 1
                if len(data) <= bufsize:
                    return data
                self._rbuf, pos = data, 0
            out = self._rbuf[pos : pos + bufsize]  # (an offset: the rest is not copied)
            self._rpos = pos + len(out)
            return out

        def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
            start = self.chunks
            rc = super().loop_read(max_packets)
            # What is buffered is not seen by select(): handle it now, but within a bound: a
            # packet split across reads reads on, and while the socket never runs dry (devices
            # faster than the gateway) this turn would never end, leaving the committer's
            # PUBACKs unwritten, the keepalive unsent and a stop unseen. ``loop`` takes the rest.
            while (
                rc == MQTTErrorCode.MQTT_ERR_SUCCESS
                and self._rpos < len(self._rbuf)
                and self.chunks - start < TURN_CHUNKS
            ):
                rc = super().loop_read(1)
            return rc

        def loop(self, timeout: float = 1.0) -> MQTTErrorCode:
            if self._rpos < len(self._rbuf) and self._sock is not None:
                # Bytes the last turn left buffered (select() does not see them): first, and
                # then no waiting in select().
                rc = self.loop_read()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return rc
                timeout = 0.0
            return super().loop(timeout)

        def _packet_read(self) -> MQTTErrorCode:
            if self._in_packet["command"] == 0 and self._protocol != mqtt.MQTTv5:
                # (not in the middle of a packet)
                if self._rpos >= len(self._rbuf):
                    # The next chunk first, so that its first PUBLISH takes the fast path too
                    # (paho's reader asking for one byte read it: one message in seven, at
                    # 2,000 single-reading messages a second, went through paho's dispatch).
                    try:
                        data = super()._sock_recv(READ_CHUNK)
                    except BlockingIOError:
                        return MQTTErrorCode.MQTT_ERR_AGAIN
                    except OSError:
                        data = b""  # paho's reader meets the error (or the end) and answers it
                    if data:
                        self.chunks += 1
                        self._rbuf, self._rpos = data, 0
                if self._rpos < len(self._rbuf) and self._rbuf[self._rpos] & 0xF0 == _PUBLISH:
                    rc = self._fast_publish()
                    if rc is not None:
                        return rc
            return super()._packet_read()

        def _fast_publish(self) -> MQTTErrorCode | None:
            """The PUBLISH at the buffer's position, handled as paho's ``_handle_publish``
            would; None (nothing consumed) when it is not whole, not QoS 0/1, or malformed:
            paho's reader then takes it (and answers a malformed one as it does)."""
            buf, pos = self._rbuf, self._rpos
            end = len(buf)
            header = buf[pos]
            qos = (header >> 1) & 3
            if qos > 1:
                return None
            i = pos + 1
            length = 0
            shift = 0
            while True:  # the remaining length: at most 4 bytes
                if i >= end or shift > 21:
                    return None
                byte = buf[i]
                i += 1
                length |= (byte & 127) << shift
                shift += 7
                if not byte & 128:
                    break
            stop = i + length
            if stop > end or length < 2:
                return None
            topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1])
            body = topic_end + 2 if qos else topic_end
            if body > stop or topic_end == i + 2:  # (an empty topic is malformed in 3.1.1)
                return None
            mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
            self._rpos = stop
            now = _now()
            with self._msgtime_mutex:
                self._last_bytes_received = now
            raw = self.on_raw_message
            if raw is not None:
                raw(buf[i + 2 : topic_end], buf[body:stop], qos, mid, bool(header & 0x08))
            else:
                msg = mqtt.MQTTMessage(mid=mid, topic=buf[i + 2 : topic_end])
                msg.dup = bool(header & 0x08)
                msg.qos = qos
                msg.retain = bool(header & 0x01)
                msg.payload = buf[body:stop]
                msg.timestamp = now
                self._handle_on_message(msg)
            if qos == 1 and not self._manual_ack:
                return self._send_puback(mid)
            return MQTTErrorCode.MQTT_ERR_SUCCESS

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf = b""  # bytes of a lost connection are not the next one's
        self._rpos = 0
        return super().reconnect()

    def ack_many(self, mids: Iterable[int]) -> None:
        """Acknowledge QoS 1 messages (PUBACK), in this order, with one write."""
        if not FAST:
            for mid in mids:
                self.ack(mid, 1)
            return
        packet = b"".join(struct.pack("!BBH", _PUBACK, 2, mid) for mid in mids)
        if packet:
            self._packet_queue(_PUBACK, packet, 0, 1)
