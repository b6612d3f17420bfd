"""Recursive-descent parser for ``@( expression )`` and ``@{ statements }`` (C# operator precedence)."""

from __future__ import annotations

from typing import Final

from . import nodes as n
from .errors import ExpressionError
from .lexer import Hole, Token, tokenize

__all__ = ("MAX_DEPTH", "Parsed", "parse")

MAX_DEPTH: Final = 64  # nesting of parentheses, unary operators, calls and statements

MSG_NOT_EXPRESSION: Final = "a policy expression must have the form @( expression ) or @{ statements }"
MSG_EXPECTED: Final = "expected {} but found {}"
MSG_TOO_DEEP: Final = "expression is nested too deeply"
MSG_UNSUPPORTED_KEYWORD: Final = "'{}' is not supported in policy expressions"
MSG_UNSUPPORTED_OPERATOR: Final = "operator '{}' is not supported in policy expressions"
MSG_RETURN_VALUE: Final = "a return statement must return a value"
MSG_ONE_DECLARATOR: Final = "declare one variable per statement"
MSG_NOT_STATEMENT: Final = "only assignments and method calls can be used as statements"
MSG_EMPTY: Final = "empty expression"

# Binary operators by precedence (higher binds tighter); all left-associative.
_BINARY: Final = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7,
    "+": 8, "-": 8, "*": 9, "/": 9, "%": 9,
}  # fmt: skip
_UNSUPPORTED_KEYWORDS: Final = frozenset({
    "new", "typeof", "default", "nameof", "this", "base", "checked", "unchecked", "sizeof", "stackalloc", "await",
    "throw", "delegate", "for", "foreach", "while", "do", "switch", "try", "catch", "finally", "using", "goto",
    "break", "continue", "lock", "yield", "unsafe", "fixed", "const", "is", "as", "class", "struct", "async",
    "static", "out", "ref", "in", "params", "operator", "event", "volatile", "extern", "implicit", "explicit",
})  # fmt: skip
PREDEFINED_TYPES: Final = frozenset(
    {"string", "int", "long", "bool", "double", "float", "decimal", "object", "char", "byte", "short", "uint",
     "ulong", "ushort", "sbyte", "dynamic", "var"}
)  # fmt: skip
_LITERAL_KINDS: Final = frozenset({"int", "long", "double", "string", "char", "interp"})
_ASSIGN_OPS: Final = frozenset({"=", "+=", "-="})


class Parsed:
    """A parsed expression: ``form`` is "expr" (``body`` a Node) or "block" (``body`` a Block)."""

    __slots__ = ("body", "form")

    def __init__(self, form: str, body: n.Node | n.Block) -> None:
        self.form = form
        self.body = body


def parse(text: str) -> Parsed:
    start = len(text) - len(text.lstrip())
    end = len(text.rstrip())
    opener = text[start : start + 2]
    closer = text[end - 1 : end] if end - start >= 3 else ""
    if opener == "@(" and closer == ")":
        parser = _Parser(text, tokenize(text, start + 2, end - 1))
        if parser.peek.kind == "eof":
            raise ExpressionError(MSG_EMPTY, start)
        expr = parser.expression()
        parser.expect_eof()
        return Parsed("expr", expr)
    if opener == "@{" and closer == "}":
        parser = _Parser(text, tokenize(text, start + 2, end - 1))
        body = parser.statements(start + 1)
        return Parsed("block", body)
    raise ExpressionError(MSG_NOT_EXPRESSION, start)


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "end of expression"
    if tok.kind in ("op", "ident"):
        return f"'{tok.value}'"
    return f"{tok.kind} literal"


class _Parser:
    __slots__ = ("depth", "i", "text", "tokens")

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.i = 0
        self.depth = 0

    @property
    def peek(self) -> Token:
        return self.tokens[self.i]

    def ahead(self, k: int = 1) -> Token:
        return self.tokens[min(self.i + k, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def accept(self, op: str) -> bool:
        if self.peek.is_op(op):
            self.i += 1
            return True
        return False

    def expect(self, op: str) -> Token:
        tok = self.peek
        if not tok.is_op(op):
            raise ExpressionError(MSG_EXPECTED.format(f"'{op}'", _describe(tok)), tok.pos)
        self.i += 1
        return tok

    def expect_ident(self) -> Token:
        tok = self.peek
        if tok.kind != "ident":
            raise ExpressionError(MSG_EXPECTED.format("a name", _describe(tok)), tok.pos)
        if tok.value in _UNSUPPORTED_KEYWORDS:
            raise ExpressionError(MSG_UNSUPPORTED_KEYWORD.format(tok.value), tok.pos)
        self.i += 1
        return tok

    def expect_eof(self) -> None:
        tok = self.peek
        if tok.kind != "eof":
            raise ExpressionError(MSG_EXPECTED.format("end of expression", _describe(tok)), tok.pos)

    def enter(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(MSG_TOO_DEEP, pos)

    #
    # Statements
    #

    def statements(self, pos: int) -> n.Block:
        body: list[n.Stmt] = []
        while self.peek.kind != "eof":
            body.append(self.statement())
        return n.Block(tuple(body), pos)

    def statement(self) -> n.Stmt:
        tok = self.peek
        self.enter(tok.pos)
        try:
            return self._statement(tok)
        finally:
            self.depth -= 1

    def _statement(self, tok: Token) -> n.Stmt:
        if tok.is_op("{"):
            self.next()
            body: list[n.Stmt] = []
            while not self.peek.is_op("}"):
                if self.peek.kind == "eof":
                    raise ExpressionError(MSG_EXPECTED.format("'}'", "end of expression"), self.peek.pos)
                body.append(self.statement())
            self.next()
            return n.Block(tuple(body), tok.pos)
        if tok.is_op(";"):
            self.next()
            return n.Block((), tok.pos)
        if tok.kind == "ident":
            if tok.value == "if":
                return self._if()
            if tok.value == "return":
                self.next()
                if self.peek.is_op(";"):
                    raise ExpressionError(MSG_RETURN_VALUE, tok.pos)
                value = self.expression()
                self.expect(";")
                return n.Return(value, tok.pos)
            if tok.value in _UNSUPPORTED_KEYWORDS and tok.value not in ("new", "typeof", "default", "nameof"):
                raise ExpressionError(MSG_UNSUPPORTED_KEYWORD.format(tok.value), tok.pos)
            decl = self._declaration()
            if decl is not None:
                return decl
        expr = self.expression()
        op = self.peek
        if op.kind == "op" and op.value in _ASSIGN_OPS:
            self.next()
            value = self.expression()
            self.expect(";")
            return n.Assign(expr, str(op.value), value, op.pos)
        if not isinstance(expr, n.Call | n.CondAccess):
            raise ExpressionError(MSG_NOT_STATEMENT, tok.pos)
        self.expect(";")
        return n.ExprStmt(expr, tok.pos)

    def _if(self) -> n.If:
        tok = self.next()
        self.expect("(")
        condition = self.expression()
        self.expect(")")
        then = self.statement()
        otherwise = None
        if self.peek.is_ident("else"):
            self.next()
            otherwise = self.statement()
        return n.If(condition, then, otherwise, tok.pos)

    def _declaration(self) -> n.LocalDecl | None:
        """``Type name = value;`` / ``Type name;`` if that is what follows, else None (nothing consumed)."""
        saved = self.i
        type_ref = self._try_type()
        if type_ref is None or self.peek.kind != "ident" or not (self.ahead().is_op("=") or self.ahead().is_op(";")):
            self.i = saved
            return None
        name = self.expect_ident()
        init = None
        if self.accept("="):
            init = self.expression()
        if self.peek.is_op(","):
            raise ExpressionError(MSG_ONE_DECLARATOR, self.peek.pos)
        self.expect(";")
        return n.LocalDecl(type_ref, str(name.value), init, name.pos)

    #
    # Types
    #

    def _try_type(self) -> n.TypeRef | None:
        """Parse ``Name(.Name)*[?][[]]`` if present; on failure restore the position and return None."""
        saved = self.i
        tok = self.peek
        if tok.kind != "ident" or tok.value in _UNSUPPORTED_KEYWORDS:
            return None
        parts = [str(self.next().value)]
        while self.peek.is_op(".") and self.ahead().kind == "ident":
            self.next()
            parts.append(str(self.next().value))
        name = ".".join(parts)
        if self.peek.is_op("?"):
            self.next()
            name += "?"
        if self.peek.is_op("[") and self.ahead().is_op("]"):
            self.next()
            self.next()
            name += "[]"
        if self.peek.is_op("<"):  # generic types (List<string>) are not in the subset
            self.i = saved
            return None
        return n.TypeRef(name, tok.pos)

    def _type_args(self) -> tuple[n.TypeRef, ...] | None:
        """After a method name: ``<T, ...>`` followed by ``(``, else None (nothing consumed)."""
        saved = self.i
        if not self.accept("<"):
            return None
        args: list[n.TypeRef] = []
        while True:
            type_ref = self._try_type()
            if type_ref is None:
                self.i = saved
                return None
            args.append(type_ref)
            if self.accept(","):
                continue
            if self.accept(">") and self.peek.is_op("("):
                return tuple(args)
            self.i = saved
            return None

    #
    # Expressions
    #

    def expression(self) -> n.Node:
        tok = self.peek
        self.enter(tok.pos)
        try:
            if tok.kind == "ident" and self.ahead().is_op("=>"):
                return self._lambda()
            return self._conditional()
        finally:
            self.depth -= 1

    def _lambda(self) -> n.Lambda:
        name = self.expect_ident()
        self.expect("=>")
        body = self.expression()
        return n.Lambda(str(name.value), body, name.pos)

    def _conditional(self) -> n.Node:
        condition = self._coalesce()
        tok = self.peek
        if not tok.is_op("?"):
            return condition
        self.next()
        then = self.expression()
        self.expect(":")
        otherwise = self.expression()
        return n.Conditional(condition, then, otherwise, tok.pos)

    def _coalesce(self) -> n.Node:
        left = self._binary(1)
        tok = self.peek
        if tok.is_op("??"):
            self.next()
            self.enter(tok.pos)
            try:
                right = self._coalesce()
            finally:
                self.depth -= 1
            return n.Binary("??", left, right, tok.pos)
        return left

    def _binary(self, min_prec: int) -> n.Node:
        left = self._unary()
        while True:
            tok = self.peek
            if tok.kind == "ident" and tok.value in ("is", "as"):
                raise ExpressionError(MSG_UNSUPPORTED_KEYWORD.format(tok.value), tok.pos)
            prec = _BINARY.get(str(tok.value)) if tok.kind == "op" else None
            if prec is None or prec < min_prec:
                return left
            self.next()
            right = self._binary(prec + 1)
            left = n.Binary(str(tok.value), left, right, tok.pos)

    def _unary(self) -> n.Node:
        tok = self.peek
        self.enter(tok.pos)
        try:
            if tok.kind == "op":
                if tok.value in ("!", "-", "+"):
                    self.next()
                    return n.Unary(str(tok.value), self._unary(), tok.pos)
                if tok.value in ("++", "--", "~", "&", "*", "^"):
                    raise ExpressionError(MSG_UNSUPPORTED_OPERATOR.format(tok.value), tok.pos)
                if tok.value == "(":
                    cast = self._try_cast()
                    if cast is not None:
                        return cast
            return self._postfix(self._primary())
        finally:
            self.depth -= 1

    def _try_cast(self) -> n.Cast | None:
        saved = self.i
        open_tok = self.next()
        type_ref = self._try_type()
        if type_ref is None or not self.peek.is_op(")"):
            self.i = saved
            return None
        after = self.ahead()
        base = type_ref.name.rstrip("?[]")
        if base not in PREDEFINED_TYPES:
            follows_operand = (
                after.kind in _LITERAL_KINDS
                or (after.kind == "ident" and after.value not in ("is", "as"))
                or after.is_op("(")
                or after.is_op("!")
                or after.is_op("~")
            )
            if not follows_operand:
                self.i = saved
                return None
        self.next()
        return n.Cast(type_ref, self._unary(), open_tok.pos)

    def _primary(self) -> n.Node:
        tok = self.next()
        kind = tok.kind
        if kind in ("int", "long", "double", "string", "char"):
            return n.Literal(tok.value, kind, tok.pos)
        if kind == "interp":
            return self._interpolated(tok)
        if kind == "op":
            if tok.value == "(":
                expr = self.expression()
                self.expect(")")
                return expr
            raise ExpressionError(MSG_EXPECTED.format("an expression", _describe(tok)), tok.pos)
        if kind == "ident":
            name = str(tok.value)
            if name == "true" or name == "false":
                return n.Literal(name == "true", "bool", tok.pos)
            if name == "null":
                return n.Literal(None, "null", tok.pos)
            if name in _UNSUPPORTED_KEYWORDS:
                raise ExpressionError(MSG_UNSUPPORTED_KEYWORD.format(name), tok.pos)
            type_args = self._type_args() if self.peek.is_op("<") else None
            if self.peek.is_op("("):
                return n.Call(None, name, type_args or (), self._arguments(), tok.pos)
            return n.Name(name, tok.pos)
        raise ExpressionError(MSG_EXPECTED.format("an expression", _describe(tok)), tok.pos)

    def _postfix(self, expr: n.Node) -> n.Node:
        while True:
            tok = self.peek
            if tok.is_op("."):
                self.next()
                expr = self._member(expr)
            elif tok.is_op("["):
                expr = self._index(expr)
            elif tok.is_op("?.") or (tok.is_op("?") and self.ahead().is_op("[")):
                self.next()
                receiver = n.Receiver(tok.pos)
                chain = self._member(receiver) if tok.value == "?." else self._index(receiver)
                return n.CondAccess(expr, self._postfix(chain), tok.pos)
            elif tok.is_op("("):
                raise ExpressionError("only methods can be called", tok.pos)
            elif tok.is_op("++") or tok.is_op("--"):
                raise ExpressionError(MSG_UNSUPPORTED_OPERATOR.format(tok.value), tok.pos)
            else:
                return expr

    def _member(self, target: n.Node) -> n.Node:
        name = self.expect_ident()
        type_args = self._type_args() if self.peek.is_op("<") else None
        if self.peek.is_op("("):
            return n.Call(target, str(name.value), type_args or (), self._arguments(), name.pos)
        return n.Member(target, str(name.value), name.pos)

    def _index(self, target: n.Node) -> n.Index:
        tok = self.expect("[")
        args = self._argument_list("]")
        if not args:
            raise ExpressionError(MSG_EXPECTED.format("an index", "']'"), tok.pos)
        return n.Index(target, args, tok.pos)

    def _arguments(self) -> tuple[n.Arg, ...]:
        self.expect("(")
        return self._argument_list(")")

    def _argument_list(self, close: str) -> tuple[n.Arg, ...]:
        args: list[n.Arg] = []
        if self.accept(close):
            return ()
        while True:
            tok = self.peek
            name = None
            if tok.kind == "ident" and self.ahead().is_op(":"):
                name = str(tok.value)
                self.next()
                self.next()
            args.append(n.Arg(name, self.expression(), tok.pos))
            if self.accept(close):
                return tuple(args)
            self.expect(",")

    def _interpolated(self, tok: Token) -> n.Interpolated:
        parts: list[str | tuple[n.Node, n.Node | None, str | None]] = []
        for part in tok.value:  # type: ignore[attr-defined]  # an interpolated string's token carries its parts, not text
            if isinstance(part, str):
                parts.append(part)
                continue
            assert isinstance(part, Hole)
            expr = self._sub_expression(part.start, part.end)
            alignment = self._sub_expression(*part.alignment) if part.alignment is not None else None
            parts.append((expr, alignment, part.format))
        return n.Interpolated(tuple(parts), tok.pos)

    def _sub_expression(self, start: int, end: int) -> n.Node:
        sub = _Parser(self.text, tokenize(self.text, start, end))
        sub.depth = self.depth
        if sub.peek.kind == "eof":
            raise ExpressionError(MSG_EMPTY, start)
        expr = sub.expression()
        sub.expect_eof()
        return expr
