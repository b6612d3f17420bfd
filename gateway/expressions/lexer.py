"""Tokens of the C# subset used in policy expressions.

Tokens carry absolute offsets into the source text so that every error can point at a character. An
interpolated string (``$"a{x}b"``) is one token whose holes are kept as source ranges; the parser tokenizes
each hole on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .errors import ExpressionError

__all__ = ("Hole", "Token", "tokenize")

MSG_BAD_CHAR: Final = "unexpected character {!r}"
MSG_UNTERMINATED_STRING: Final = "unterminated string literal"
MSG_UNTERMINATED_CHAR: Final = "unterminated or empty character literal"
MSG_UNTERMINATED_COMMENT: Final = "unterminated comment"
MSG_BAD_ESCAPE: Final = "unrecognized escape sequence"
MSG_BAD_NUMBER: Final = "invalid numeric literal"
MSG_NUMBER_RANGE: Final = "integral constant is too large"
MSG_DECIMAL: Final = "decimal (M) and unsigned (U) literals are not supported"
MSG_NEWLINE_IN_STRING: Final = "newline in string literal"
MSG_BAD_HOLE: Final = "invalid interpolation hole"

INT_MAX: Final = 2**31 - 1
LONG_MAX: Final = 2**63 - 1

# Longest first: the lexer takes the first operator the text starts with.
_OPERATORS: Final = (
    "??", "=>", "==", "!=", "<=", ">=", "&&", "||", "+=", "-=", "*=", "/=", "%=", "++", "--", "?.",
    "(", ")", "{", "}", "[", "]", ".", ",", ";", ":", "?", "!", "=", "<", ">", "+", "-", "*", "/", "%",
    "&", "|", "^", "~",
)  # fmt: skip
_SIMPLE_ESCAPES: Final = {
    "'": "'", '"': '"', "\\": "\\", "0": "\0", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
    "t": "\t", "v": "\v",
}  # fmt: skip
_HEX: Final = frozenset("0123456789abcdefABCDEF")
# C# numeric literals use ASCII digits only; str.isdigit() also accepts "²" and other scripts' digits, which int() and
# float() refuse or read differently
_DIGITS: Final = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Hole:
    """One ``{expression[,alignment][:format]}`` of an interpolated string, as source ranges."""

    start: int  # the expression's source range
    end: int
    alignment: tuple[int, int] | None  # source range of the alignment expression
    format: str | None


@dataclass(frozen=True, slots=True)
class Token:
    """``kind`` is one of ident, int, long, double, string, char, interp, op, eof."""

    kind: str
    value: object
    pos: int
    end: int

    def is_op(self, op: str) -> bool:
        return self.kind == "op" and self.value == op

    def is_ident(self, name: str) -> bool:
        return self.kind == "ident" and self.value == name


def tokenize(text: str, start: int = 0, end: int | None = None) -> list[Token]:
    """Split ``text[start:end]`` into tokens (comments and whitespace dropped), ending with an eof token."""
    return _Lexer(text, start, len(text) if end is None else end).run()


class _Lexer:
    __slots__ = ("end", "i", "text", "tokens")

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text = text
        self.i = start
        self.end = end
        self.tokens: list[Token] = []

    def run(self) -> list[Token]:
        text, end = self.text, self.end
        while True:
            self._skip_trivia()
            i = self.i
            if i >= end:
                self.tokens.append(Token("eof", None, end, end))
                return self.tokens
            ch = text[i]
            nxt = text[i + 1] if i + 1 < end else ""
            if ch.isalpha() or ch == "_":
                self._ident()
            elif ch in _DIGITS or (ch == "." and nxt in _DIGITS):
                self._number()
            elif ch == '"':
                self._add("string", self._regular_string(i + 1), i)
            elif ch == "'":
                self._char()
            elif ch == "@" and nxt == '"':
                self._add("string", self._verbatim_string(i + 2), i)
            elif ch == "$" or (ch == "@" and nxt == "$"):
                self._interpolated()
            else:
                self._operator()

    def _add(self, kind: str, value: object, pos: int) -> None:
        self.tokens.append(Token(kind, value, pos, self.i))

    def _skip_trivia(self) -> None:
        text, end = self.text, self.end
        i = self.i
        while i < end:
            ch = text[i]
            if ch.isspace():
                i += 1
            elif text.startswith("//", i):
                newline = text.find("\n", i, end)
                i = end if newline < 0 else newline + 1
            elif text.startswith("/*", i):
                close = text.find("*/", i + 2, end)
                if close < 0:
                    raise ExpressionError(MSG_UNTERMINATED_COMMENT, i)
                i = close + 2
            else:
                break
        self.i = i

    def _ident(self) -> None:
        text, end, start = self.text, self.end, self.i
        i = start + 1
        while i < end and (text[i].isalnum() or text[i] == "_"):
            i += 1
        self.i = i
        self._add("ident", text[start:i], start)

    def _number(self) -> None:
        text, end, start = self.text, self.end, self.i
        i = start
        if text.startswith(("0x", "0X"), i):
            i += 2
            while i < end and (text[i] in _HEX or text[i] == "_"):
                i += 1
            digits = text[start + 2 : i].replace("_", "")
            if not digits:
                raise ExpressionError(MSG_BAD_NUMBER, start)
            if len(digits.lstrip("0")) > 16:
                raise ExpressionError(MSG_NUMBER_RANGE, start)
            self.i = i
            self._integer(int(digits, 16), start)
            return
        is_real = False
        while i < end and (text[i] in _DIGITS or text[i] == "_"):
            i += 1
        if i + 1 < end and text[i] == "." and text[i + 1] in _DIGITS:
            is_real = True
            i += 1
            while i < end and (text[i] in _DIGITS or text[i] == "_"):
                i += 1
        if i < end and text[i] in "eE":
            j = i + 1
            if j < end and text[j] in "+-":
                j += 1
            if j < end and text[j] in _DIGITS:
                is_real = True
                i = j
                while i < end and text[i] in _DIGITS:
                    i += 1
        literal = text[start:i].replace("_", "")
        if not is_real and len(literal.lstrip("0")) > 19:
            raise ExpressionError(MSG_NUMBER_RANGE, start)
        suffix = text[i].lower() if i < end and text[i].isalpha() else ""
        if suffix in ("m", "u"):
            raise ExpressionError(MSG_DECIMAL, i)
        if suffix in ("d", "f"):
            self.i = i + 1
            self._add("double", float(literal), start)
            return
        if suffix == "l":
            if is_real:
                raise ExpressionError(MSG_BAD_NUMBER, start)
            self.i = i + 1
            value = int(literal)
            if value > LONG_MAX:
                raise ExpressionError(MSG_NUMBER_RANGE, start)
            self._add("long", value, start)
            return
        if suffix:
            raise ExpressionError(MSG_BAD_NUMBER, start)
        self.i = i
        if is_real:
            self._add("double", float(literal), start)
        else:
            self._integer(int(literal), start)

    def _integer(self, value: int, start: int) -> None:
        if value <= INT_MAX:
            self._add("int", value, start)
        elif value <= LONG_MAX:
            self._add("long", value, start)
        else:
            raise ExpressionError(MSG_NUMBER_RANGE, start)

    def _escape(self, i: int) -> tuple[str, int]:
        """Decode the escape sequence starting at the backslash ``text[i]``; return (chars, next index)."""
        text, end = self.text, self.end
        if i + 1 >= end:
            raise ExpressionError(MSG_BAD_ESCAPE, i)
        ch = text[i + 1]
        simple = _SIMPLE_ESCAPES.get(ch)
        if simple is not None:
            return simple, i + 2
        if ch in "uU":
            width = 4 if ch == "u" else 8
            digits = text[i + 2 : i + 2 + width]
            if len(digits) != width or not set(digits) <= _HEX or i + 2 + width > end:
                raise ExpressionError(MSG_BAD_ESCAPE, i)
            code = int(digits, 16)
            if code > 0x10FFFF:
                raise ExpressionError(MSG_BAD_ESCAPE, i)
            return chr(code), i + 2 + width
        if ch == "x":
            j = i + 2
            while j < end and j < i + 6 and text[j] in _HEX:
                j += 1
            if j == i + 2:
                raise ExpressionError(MSG_BAD_ESCAPE, i)
            return chr(int(text[i + 2 : j], 16)), j
        raise ExpressionError(MSG_BAD_ESCAPE, i)

    def _regular_string(self, i: int) -> str:
        """Scan a "..." body from ``i`` (after the quote); leaves self.i after the closing quote."""
        text, end, start = self.text, self.end, i - 1
        parts: list[str] = []
        while True:
            if i >= end:
                raise ExpressionError(MSG_UNTERMINATED_STRING, start)
            ch = text[i]
            if ch == '"':
                self.i = i + 1
                return "".join(parts)
            if ch == "\\":
                decoded, i = self._escape(i)
                parts.append(decoded)
            elif ch == "\n":
                raise ExpressionError(MSG_NEWLINE_IN_STRING, i)
            else:
                parts.append(ch)
                i += 1

    def _verbatim_string(self, i: int) -> str:
        text, end, start = self.text, self.end, i - 2
        parts: list[str] = []
        while True:
            close = text.find('"', i, end)
            if close < 0:
                raise ExpressionError(MSG_UNTERMINATED_STRING, start)
            parts.append(text[i:close])
            if close + 1 < end and text[close + 1] == '"':
                parts.append('"')
                i = close + 2
            else:
                self.i = close + 1
                return "".join(parts)

    def _char(self) -> None:
        text, end, start = self.text, self.end, self.i
        i = start + 1
        if i >= end or text[i] in "'\n":
            raise ExpressionError(MSG_UNTERMINATED_CHAR, start)
        if text[i] == "\\":
            value, i = self._escape(i)
        else:
            value, i = text[i], i + 1
        if i >= end or text[i] != "'" or len(value) != 1:
            raise ExpressionError(MSG_UNTERMINATED_CHAR, start)
        self.i = i + 1
        self._add("char", value, start)

    def _operator(self) -> None:
        text, i = self.text, self.i
        for op in _OPERATORS:
            if text.startswith(op, i) and i + len(op) <= self.end:
                # "a ?.5 : b" is a conditional with a numeric literal, not a null-conditional access
                if op == "?." and i + 2 < self.end and text[i + 2] in _DIGITS:
                    continue
                self.i = i + len(op)
                self._add("op", op, i)
                return
        raise ExpressionError(MSG_BAD_CHAR.format(text[i]), i)

    #
    # Interpolated strings
    #

    def _interpolated(self) -> None:
        text, end, start = self.text, self.end, self.i
        prefix = text[start : start + 3]
        if prefix in ('$@"', '@$"'):
            verbatim, i = True, start + 3
        elif text.startswith('$"', start):
            verbatim, i = False, start + 2
        else:
            raise ExpressionError(MSG_BAD_CHAR.format(text[start]), start)
        parts: list[str | Hole] = []
        literal: list[str] = []
        while True:
            if i >= end:
                raise ExpressionError(MSG_UNTERMINATED_STRING, start)
            ch = text[i]
            if ch == '"':
                if verbatim and i + 1 < end and text[i + 1] == '"':
                    literal.append('"')
                    i += 2
                    continue
                break
            if ch in "{}" and i + 1 < end and text[i + 1] == ch:
                literal.append(ch)
                i += 2
            elif ch == "}":
                raise ExpressionError(MSG_BAD_HOLE, i)
            elif ch == "{":
                if literal:
                    parts.append("".join(literal))
                    literal = []
                hole, i = self._hole(i + 1)
                parts.append(hole)
            elif ch == "\\" and not verbatim:
                decoded, i = self._escape(i)
                literal.append(decoded)
            elif ch == "\n" and not verbatim:
                raise ExpressionError(MSG_NEWLINE_IN_STRING, i)
            else:
                literal.append(ch)
                i += 1
        if literal:
            parts.append("".join(literal))
        self.i = i + 1
        self._add("interp", tuple(parts), start)

    def _hole(self, i: int) -> tuple[Hole, int]:
        """Scan one hole starting after its ``{``; return it and the index after its ``}``."""
        text, end, start = self.text, self.end, i
        depth = 0
        comma = colon = -1
        while True:
            if i >= end:
                raise ExpressionError(MSG_BAD_HOLE, start - 1)
            ch = text[i]
            if ch in "([{":
                depth += 1
            elif ch in ")]":
                depth -= 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and ch == ":" and colon < 0:
                colon = i
                close = text.find("}", i, end)
                if close < 0:
                    raise ExpressionError(MSG_BAD_HOLE, start - 1)
                i = close
                break
            elif depth == 0 and ch == "," and comma < 0:
                comma = i
            elif ch in "\"'@$":
                i = self._skip_literal(i)
                continue
            i += 1
        expr_end = comma if comma >= 0 else (colon if colon >= 0 else i)
        alignment = (comma + 1, colon if colon >= 0 else i) if comma >= 0 else None
        fmt = text[colon + 1 : i] if colon >= 0 else None
        if not text[start:expr_end].strip():
            raise ExpressionError(MSG_BAD_HOLE, start)
        return Hole(start, expr_end, alignment, fmt), i + 1

    def _skip_literal(self, i: int) -> int:
        """Skip a string/char literal inside a hole (by lexing it); return the index after it."""
        text = self.text
        saved = self.i, len(self.tokens)
        self.i = i
        if text[i] == "'":
            self._char()
        elif text[i] == '"':
            self._regular_string(i + 1)
        elif text.startswith('@"', i):
            self._verbatim_string(i + 2)
        elif text.startswith(('$"', '$@"', '@$"'), i):
            self._interpolated()
        else:
            self.i = i + 1
        after = self.i
        self.i = saved[0]
        del self.tokens[saved[1] :]
        return after
