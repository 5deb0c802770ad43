"""Errors shared by every anju component."""


class AnjuError(Exception):
    """Base class of anju's own errors."""


class ConfigError(AnjuError):
    """A configuration file or option is wrong; the message names the file and the key."""


class RegistryError(ConfigError):
    """A registry file is wrong; the message names the file, the line and what was expected."""


class ServerError(AnjuError):
    """A private server (Mosquitto, PostgreSQL) could not be found or started."""
