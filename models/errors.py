"""Domain errors: raised by pure code, translated to 4xx or dead letters at the edges."""


class DomainError(Exception):
    """Base class for every error the domain raises on purpose."""


class InvalidMoney(DomainError):
    """An amount or currency that cannot be money (float, negative, unknown ISO code)."""


class InvalidEvent(DomainError):
    """A decoded record that does not make a valid domain event."""
