"""Every mistake a user can make ends in a HalError subclass whose message says
what is wrong and what to do about it."""

from __future__ import annotations


class HalError(Exception):
    """Base class of every error HAL raises on purpose."""


class DeviceNotFound(HalError):
    """A device string names nothing usable (or is malformed)."""


class ModelError(HalError):
    """The model is invalid, corrupt or inconsistent."""


class UnsupportedOp(HalError):
    """An op cannot run on the asked-for device and strict fallback is on."""


class InputError(HalError):
    """A call got inputs of the wrong number, shape or dtype."""


class BackendError(HalError):
    """A backend (built-in or plugin) failed to import, probe, compile or run."""


class OptionError(HalError):
    """A compile option is unknown or has an invalid value."""
