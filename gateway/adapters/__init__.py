"""Southbound adapters: GB/T 26875.3 fire-panel transmission devices (UITDs) over TCP and
Modbus TCP elevator controllers, producing the same records as the LAN intake.

- ``gbt26875``: the pure frame and data unit codec; ``gbt_tables``: the standard's code tables.
- ``gbt_map``: data units -> records (pure); ``gbt_server``: the TCP server.
- ``modbus_map``: register maps (YAML) and their decoding (pure); ``modbus``: the poller
  (needs the ``modbus`` extra, pymodbus).
- ``sink``: group commit into the outbox, then the confirm; ``runner``: what the gateway starts.

See docs/adapters.md.
"""

from gateway.adapters.config import Gbt26875Config, ModbusConfig
from gateway.adapters.gbt26875 import DataUnit, Frame, Rejected, decode_unit, deframe, encode_frame

__all__ = [
    "DataUnit",
    "Frame",
    "Gbt26875Config",
    "ModbusConfig",
    "Rejected",
    "decode_unit",
    "deframe",
    "encode_frame",
]
