"""The LAN's paho client, with two economies for many small messages (issue 12, item 4).

paho reads a packet's fixed header and body with a system call each, and writes every PUBACK
with two (a wake-up byte, then the packet). With devices that send one reading per message
those system calls were most of the gateway's CPU. This client:

- reads the socket ``READ_CHUNK`` bytes at a time into a buffer that paho's packet reader
  consumes, and drains the buffer before paho waits in ``select`` again;
- acknowledges a commit group's messages with one write (``ack_many``): the PUBACKs are
  concatenated into one queued packet.

Every write happens on the network thread (the one that calls ``loop``): paho would otherwise
write a packet queued from another thread (the committer's PUBACKs) at once, on that thread, and
two threads writing the same non-blocking socket can interleave a partly written packet with
another. A no-op ``on_socket_register_write`` makes paho queue the packet and wake the network
thread instead.

The read and ack economies rest on two of paho's internal methods (``_sock_recv`` and
``_packet_queue``, unchanged from paho 1.6 to 2.1); when they are missing, the client behaves
as paho's own (``FAST`` is False) and ``ack_many`` acknowledges one message at a time.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

READ_CHUNK: Final = 64 * 1024
_PUBACK: Final = 0x40
FAST: Final = hasattr(mqtt.Client, "_sock_recv") and hasattr(mqtt.Client, "_packet_queue")


def _written_by_the_loop(_client: mqtt.Client, _userdata: Any, _sock: Any) -> None:
    """Nothing: the network thread's ``loop`` sees the queued packet and writes it."""


class LanClient(mqtt.Client):
    """``paho.mqtt.client.Client`` with buffered reads and grouped PUBACKs (MQTT 3.1.1)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self.on_socket_register_write = _written_by_the_loop

    if FAST:

        def _sock_recv(self, bufsize: int) -> bytes:
            if not self._rbuf:
                data = super()._sock_recv(READ_CHUNK)  # raises BlockingIOError when empty
                if len(data) <= bufsize:
                    return data
                self._rbuf = data
            out = self._rbuf[:bufsize]
            self._rbuf = self._rbuf[bufsize:]
            return out

        def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
            rc = super().loop_read(max_packets)
            # What is buffered is not seen by select(): handle it now.
            while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._rbuf:
                rc = super().loop_read(1)
            return rc

    def reconnect(self) -> MQTTErrorCode:
        self._rbuf = b""  # bytes of a lost connection are not the next one's
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
