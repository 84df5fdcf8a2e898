"""Errors by kind: the state machines' Retry/Catch tell them apart by class name."""


class RegionhaError(Exception):
    """Base of every error regionha raises on purpose."""


class ConfigurationError(RegionhaError):
    """Retrying cannot help: bad input, a missing resource the user must create, a refused action."""


class TransientError(RegionhaError):
    """Worth retrying: a resource still settling, throttling, a wait that has not finished yet."""


class NotReadyError(TransientError):
    """A bounded wait's check found the resource not ready yet (the state machine polls again)."""


class WaitTimeoutError(RegionhaError):
    """A bounded wait ran out of polls: the resource never became ready (not retried)."""
