"""Every error type of the project, one root: the reporter turns each into one clear line at the
edge (doit, backup_volumes.sh). A traceback means a bug, never a user's mistake."""


class DurangoError(Exception):
    """An error a user can act on: its message is the whole story, no traceback needed."""


class ConfigError(DurangoError):
    """A setting is missing, unknown or malformed."""


class SourceError(DurangoError):
    """The source repository or ref cannot be used."""


class EngineError(DurangoError):
    """The Docker engine cannot be reached or refused a request."""


class BuildError(DurangoError):
    """A Dockerfile step failed; the message names the step and the tail of its log."""


class RegistryError(DurangoError):
    """A registry refused or could not be reached; `missing` when it simply lacks the image."""

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class VerifyError(DurangoError):
    """A check of the binary failed; the message carries the binary's own output."""


class FormatError(DurangoError):
    """A file does not have the format its reader expects (ELF, payload, manifest, facts...)."""


class BackupError(DurangoError):
    """A backup or restore cannot proceed; the message says what to do."""


class DatabaseError(DurangoError):
    """The database cannot be reached, or its client cannot serve it."""


class TenantError(DurangoError):
    """A tenant cannot be added, listed or removed as asked."""


class LockError(DurangoError):
    """Another operation holds the lock this one needs, and waiting was not allowed."""


class DeployError(DurangoError):
    """A release could not be deployed or rolled back; the message names the step and its log."""
