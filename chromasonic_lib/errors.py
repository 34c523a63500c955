"""The exceptions the workbench raises; each message names what was wrong and what is allowed."""


class ChromasonicError(Exception):
    """Base class: every error the library raises on purpose."""


class ConfigError(ChromasonicError, ValueError):
    """A parameter has a value that is not allowed (raised before any data is loaded)."""


class DataError(ChromasonicError):
    """A data source gave nothing usable (empty folder, every file unreadable, ...)."""


class TrainingDiverged(ChromasonicError):
    """The loss became NaN or infinite; the trial is recorded as FAIL with this reason."""
