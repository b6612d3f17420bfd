"""The error raised for an invalid policy document."""

from __future__ import annotations

__all__ = ("PolicyError",)


class PolicyError(ValueError):
    """A policy document is malformed or invalid; carries the 1-based position when known."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        if self.line is None:
            return self.message
        if self.column is None:
            return f"line {self.line}: {self.message}"
        return f"line {self.line}, column {self.column}: {self.message}"

    def __repr__(self) -> str:
        return f"PolicyError({self.message!r}, line={self.line!r}, column={self.column!r})"
