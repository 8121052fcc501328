"""Typed errors inside the pipeline; the reporter turns each into one clear line at the edge."""


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
