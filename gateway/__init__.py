"""The community gateway: devices on the LAN in, a durable outbox, the backend's broker out.

Runs on a Raspberry Pi with only anju's core dependencies (paho-mqtt, pydantic, PyYAML,
prometheus-client). See docs/gateway.md.
"""

from gateway.config import GatewayConfig, load_gateway_config
from gateway.outbox import Outbox
from gateway.remote import serve
from gateway.service import Gateway
from gateway.status import gather_status
from gateway.validate import Accepted, Rejected, decode_device_message

__all__ = [
    "Accepted",
    "Gateway",
    "GatewayConfig",
    "Outbox",
    "Rejected",
    "decode_device_message",
    "gather_status",
    "load_gateway_config",
    "serve",
]
