"""The syntax tree of a policy expression. Every node keeps the source offset it starts at."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = (
    "Arg",
    "Assign",
    "Binary",
    "Block",
    "Call",
    "Cast",
    "CondAccess",
    "Conditional",
    "ExprStmt",
    "If",
    "Index",
    "Interpolated",
    "Lambda",
    "Literal",
    "LocalDecl",
    "Member",
    "Name",
    "Node",
    "Receiver",
    "Return",
    "Stmt",
    "TypeRef",
    "Unary",
)


@dataclass(frozen=True, slots=True)
class TypeRef:
    """A type as written: ``string``, ``JObject``, ``int?``, ``string[]``, ``Newtonsoft.Json.Linq.JObject``."""

    name: str
    pos: int


#
# Expressions
#


@dataclass(frozen=True, slots=True)
class Literal:
    value: object
    type: str
    pos: int


@dataclass(frozen=True, slots=True)
class Interpolated:
    """``$"..."``: literal text parts and (expression, alignment, format) holes."""

    parts: tuple[str | tuple[Node, Node | None, str | None], ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Name:
    """A simple name: a local, ``context``, a type (``string``, ``Math``) or the start of a namespace."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Receiver:
    """The value being accessed inside the chain of a ``?.`` / ``?[`` (bound by CondAccess)."""

    pos: int


@dataclass(frozen=True, slots=True)
class Member:
    target: Node
    name: str
    pos: int  # of the member name


@dataclass(frozen=True, slots=True)
class Arg:
    name: str | None
    value: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    """``target.name<type_args>(args)`` or ``name(args)`` (``target`` None)."""

    target: Node | None
    name: str
    type_args: tuple[TypeRef, ...]
    args: tuple[Arg, ...]
    pos: int  # of the method name


@dataclass(frozen=True, slots=True)
class Index:
    target: Node
    args: tuple[Arg, ...]
    pos: int  # of the "["


@dataclass(frozen=True, slots=True)
class CondAccess:
    """``target?.chain``: null when ``target`` is null, else ``chain`` evaluated with Receiver = target."""

    target: Node
    chain: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node
    pos: int  # of the operator


@dataclass(frozen=True, slots=True)
class Conditional:
    condition: Node
    then: Node
    otherwise: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Cast:
    type: TypeRef
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Lambda:
    """``x => expr`` (only as an argument of the LINQ methods of the allow-list)."""

    param: str
    body: Node
    pos: int


Node = (
    Literal
    | Interpolated
    | Name
    | Receiver
    | Member
    | Call
    | Index
    | CondAccess
    | Unary
    | Binary
    | Conditional
    | Cast
    | Lambda
)


#
# Statements (the @{ ... } form)
#


@dataclass(frozen=True, slots=True)
class LocalDecl:
    type: TypeRef  # name "var" for an implicitly typed local
    name: str
    init: Node | None
    pos: int  # of the name


@dataclass(frozen=True, slots=True)
class Assign:
    """``target op value`` with op ``=``, ``+=``, ``-=``; target must be a local (checked by the compiler)."""

    target: Node
    op: str
    value: Node
    pos: int


@dataclass(frozen=True, slots=True)
class ExprStmt:
    expr: Node
    pos: int


@dataclass(frozen=True, slots=True)
class If:
    condition: Node
    then: Stmt
    otherwise: Stmt | None
    pos: int


@dataclass(frozen=True, slots=True)
class Return:
    value: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Block:
    body: tuple[Stmt, ...]
    pos: int


Stmt = LocalDecl | Assign | ExprStmt | If | Return | Block
