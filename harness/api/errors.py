"""Exceptions the harness raises on bad input; each message names the input and says how to fix it."""


class HarnessError(Exception):
    """Base class: an error the user can act on. The CLI prints it without a traceback."""


class ConfigError(HarnessError):
    """A grid file is invalid. The message names the file, the key and the allowed values."""

    def __init__(self, file: str, key: str, message: str, allowed: str | None = None):
        self.file, self.key = file, key
        text = f"{file}: key '{key}': {message}"
        if allowed:
            text += f"{'' if text.endswith('?') else '.'} Allowed: {allowed}"
        super().__init__(text)


class PluginError(HarnessError):
    """A plugin is missing, duplicated or misbehaves."""


class AttackOutputError(HarnessError):
    """An attack returned an output outside the threat model, or a malformed one."""


class DataError(HarnessError):
    """A dataset or checkpoint file is missing, corrupt or of the wrong shape."""


class PluginCrash(HarnessError):
    """A plugin raised an exception of its own. The CLI prints which plugin, then the plugin's traceback."""

    def __init__(self, message: str, cause: BaseException):
        super().__init__(message)
        self.cause = cause


class StoreError(HarnessError):
    """A results database cannot be opened or written: missing, not ours, of another version, read-only, full."""
