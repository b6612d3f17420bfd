"""Moved to ``gateway.redis`` (the RESP client serves usage too); kept so older imports still work."""

from gateway.redis import RespClient, RespError, encode_command, parse_reply

__all__ = ("RespClient", "RespError", "encode_command", "parse_reply")
