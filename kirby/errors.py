"""The errors a user can cause. Each carries one line that names the input and the fix.

The CLI prints ``str(error)`` for any ``KirbyError`` and exits non-zero, without a stack trace.
"""


class KirbyError(Exception):
    """Base of every error Kirby reports to a user as one line."""


class ConfigError(KirbyError):
    """A setting (environment variable or .env entry) has a bad value."""


class DemoImportError(KirbyError):
    """A JSON script database could not be imported; nothing was changed.

    ``path`` is the JSON path of the offending value, e.g. ``JOBS.x.scheduled_param.minute``.
    """

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class InvalidValue(KirbyError):
    """A value a user typed breaks one of Kirby's rules (``kirby.validation``)."""


class CronError(KirbyError):
    """A cron expression or time zone is invalid."""


class UserError(KirbyError):
    """A user account operation was refused (existing name, empty password, ...)."""


class BusError(KirbyError):
    """The offer bus (Kafka or embedded) could not be reached or used."""


class LeaseError(KirbyError):
    """The lease store (Redis or embedded) could not be reached or used."""


class SupervisorNameTaken(LeaseError):
    """A live supervisor already uses this name; ``holder`` is its registration (SupervisorInfo)."""

    def __init__(self, message: str, holder=None):
        super().__init__(message)
        self.holder = holder


class PackageError(KirbyError):
    """A package name or version is invalid, unknown, or could not be installed.

    ``output`` holds the installer's output when there is one (it becomes part of the run's log).
    """

    def __init__(self, message: str, output: str = ""):
        self.output = output
        super().__init__(message)
