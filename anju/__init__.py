"""anju (安居): IoT gateway and telemetry backend for residential communities.

This package holds what every component shares: the wire contract with devices and subscribers
(`anju.contract`), the gateway-to-backend uplink format (`anju.uplink`), the registry of a city
(`anju.registry`), private servers for the demo and the tests (`anju.servers`) and the command
line (`anju.cli`). It imports nothing heavier than pydantic and PyYAML, so that a gateway on a
Raspberry Pi can use it.
"""

from anju.errors import AnjuError, ConfigError, RegistryError

__all__ = ["AnjuError", "ConfigError", "RegistryError"]
__version__ = "0.1.0"
