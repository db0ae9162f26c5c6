"""What a store can refuse, each with what the caller needs to act on it."""

from __future__ import annotations


class StoreError(Exception):
    """Base of every store failure."""


class NotFound(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind}/{name} not found")
        self.kind, self.name = kind, name


class AlreadyExists(StoreError):
    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind}/{name} already exists")
        self.kind, self.name = kind, name


class Conflict(StoreError):
    """The resource changed since the caller read it (optimistic concurrency)."""

    def __init__(self, kind: str, name: str, expected: int, actual: int | None) -> None:
        now = "was deleted" if actual is None else f"is now at resourceVersion {actual}"
        super().__init__(
            f"{kind}/{name} changed since it was read: expected resourceVersion {expected}, "
            f"it {now}; read it again and retry"
        )
        self.kind, self.name, self.expected, self.actual = kind, name, expected, actual


class TooLarge(StoreError):
    """An atomic apply beyond what the backend can do in one transaction."""


class Compacted(StoreError):
    """A watch asked for history the store no longer keeps; list again and watch from there."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept: {oldest}); list and watch again")
        self.requested, self.oldest = requested, oldest


class Unavailable(StoreError):
    """The backend cannot be reached or refuses work right now; nothing was written."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Indeterminate(Unavailable):
    """The backend failed after a write was sent: it may or may not have been applied."""
