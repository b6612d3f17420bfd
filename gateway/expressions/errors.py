"""Errors of the policy-expression language: compile time (with an offset) and run time."""

from __future__ import annotations

from typing import Final

__all__ = (
    "MSG_BODY_NOT_JSON",
    "MSG_NULL_REFERENCE",
    "REASON_EVALUATION_FAILURE",
    "REASON_INVALID_BODY",
    "ExpressionError",
    "ExpressionRuntimeError",
    "RequestBodyError",
    "null_reference",
)

REASON_EVALUATION_FAILURE: Final = "ExpressionValueEvaluationFailure"
REASON_INVALID_BODY: Final = "InvalidRequestBody"
MSG_BODY_NOT_JSON: Final = "Request body is not valid JSON: {}"
MSG_NULL_REFERENCE: Final = "Object reference not set to an instance of an object"


class ExpressionError(ValueError):
    """An expression that cannot be compiled. ``offset`` is the 0-based character offset in the source text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset

    def position(self, text: str) -> tuple[int, int]:
        """The 1-based (line, column) of ``offset`` within ``text`` (the text given to the compiler)."""
        before = text[: self.offset]
        line = before.count("\n") + 1
        return line, self.offset - (before.rfind("\n") + 1) + 1

    def __str__(self) -> str:
        return f"{self.message} (at offset {self.offset})"

    def __repr__(self) -> str:
        return f"ExpressionError({self.message!r}, offset={self.offset})"


class ExpressionRuntimeError(Exception):
    """An expression failed while being evaluated (null dereference, bad cast, invalid JSON body, ...).

    The pipeline reports it as APIM's ``ExpressionValueEvaluationFailure`` (see ``as_gateway_error``).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_gateway_error(self, source: str, status: int = 500) -> Exception:
        """The GatewayError the pipeline raises for this failure (``source``: the policy name)."""
        from gateway.errors import MSG_INTERNAL_ERROR, GatewayError

        message = f"Expression evaluation failed. {self.message}"
        client_message = MSG_INTERNAL_ERROR if status >= 500 else None
        return GatewayError(
            status, message, source=source, reason=REASON_EVALUATION_FAILURE, client_message=client_message
        )


class RequestBodyError(ExpressionRuntimeError):
    """An expression read the request body as JSON (``As<JObject>``, ``As<JToken>``, ``As<JArray>``) and the body is
    not JSON, or not of that type: the client's mistake, so 400 naming it (issue #7), not the generic 500."""

    def as_gateway_error(self, source: str, status: int = 400) -> Exception:
        from gateway.errors import GatewayError

        return GatewayError(400, MSG_BODY_NOT_JSON.format(self.message), source=source, reason=REASON_INVALID_BODY)


def null_reference(member: str) -> ExpressionRuntimeError:
    return ExpressionRuntimeError(f"{MSG_NULL_REFERENCE} (reading '{member}' of null).")
