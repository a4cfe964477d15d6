"""One small error hierarchy. Each class says what follows when it is raised."""


class QTError(Exception):
    """Base of every error the project raises on purpose."""


class UserError(QTError):
    """Bad input from a person (CLI argument, file, request): print one line, exit 2, change nothing."""


class ConfigError(UserError):
    """``params.yaml`` or an override is wrong; the message names the key."""


class DataError(UserError):
    """Input data is missing, empty for the requested range, or fails validation."""


class RetryableError(QTError):
    """A transient failure (timeout, 5xx, 429): retry reads with backoff; never re-send an order."""


class NeedsHumanError(QTError):
    """A state the program must not resolve by itself (e.g. unreconcilable positions): stop and alert."""


class OrderRejected(QTError):
    """The exchange or the risk engine refused an order; carries the reason and the numbers."""
