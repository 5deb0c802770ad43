"""The gateway's errors."""

from anju.errors import AnjuError


class GatewayError(AnjuError):
    """The gateway cannot run as configured."""
