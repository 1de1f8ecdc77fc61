"""``Result``: what every facade method returns instead of raising.

Host code checks ``r.ok`` and reads ``r.value``, or ``r.error.code`` and
``r.error.message``. The codes are the stable ``code`` attributes of the error tree.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from chronolog.errors import ChronologError

T = TypeVar("T")


# gc=False: a host that keeps thousands of results (a gather of facade calls) should not
# make every full collection of the cyclic GC longer; a result never holds itself.
class ErrorInfo(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A typed error as data: a stable code, a message for people, and details."""

    code: str
    message: str
    details: dict[str, Any] = {}

    @classmethod
    def from_exception(cls, exc: ChronologError) -> ErrorInfo:
        """The error info of a chronolog exception."""
        return cls(code=exc.code, message=exc.message, details=dict(exc.details))


class Result(msgspec.Struct, Generic[T], frozen=True, gc=False, kw_only=True):
    """Either a value (``ok``) or an error; never both."""

    value: T | None = None
    error: ErrorInfo | None = None

    @property
    def ok(self) -> bool:
        """True when the call succeeded."""
        return self.error is None

    @classmethod
    def success(cls, value: T) -> Result[T]:
        """A successful result carrying ``value``."""
        return cls(value=value)

    @classmethod
    def failure(cls, error: ChronologError | ErrorInfo) -> Result[T]:
        """A failed result from an exception or an error info."""
        info = error if isinstance(error, ErrorInfo) else ErrorInfo.from_exception(error)
        return cls(error=info)

    def unwrap(self) -> T:
        """The value, or raise :class:`ResultError` carrying the error."""
        if self.error is not None:
            raise ResultError(self.error)
        return self.value  # type: ignore[return-value]


class ResultError(ChronologError):
    """Raised by :meth:`Result.unwrap` on a failed result."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message, details=info.details)
        self.code = info.code
        self.info = info
