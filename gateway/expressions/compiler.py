"""Type-check a parsed expression against the allow-list and turn it into a tree of Python closures.

Each node compiles to ``(static type, fn)`` where ``fn(env)`` computes the node's value; nothing is parsed or
looked up per request. Names resolve to locals, ``context``, or the allow-listed types and namespaces; members
resolve only through :mod:`.typesys` tables, so anything else is an ExpressionError with the offset of the name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from . import context as _context  # noqa: F401  (fills the context tables)
from . import dates as _dates  # noqa: F401  (fills the DateTime/TimeSpan/Guid tables)
from . import library as _library  # noqa: F401  (fills the library tables)
from . import nodes as n
from .context import ANY_TYPE, CONTEXT_TYPE
from .conversions import cast_converter
from .dotnet import align, format_value
from .errors import ExpressionError, null_reference
from .names import resolve_type, static_type
from .operators import MSG_NOT_NULLABLE, MSG_UNARY, binary, conditional, unary
from .parser import Parsed
from .runtime import Env, Fn, charge, check_length, const, with_converter
from .typesys import (
    BOOL,
    INT,
    NULL,
    OBJECT,
    REQUIRED,
    STRING,
    VALUE_TYPES,
    VOID,
    Overload,
    Param,
    can_be_null,
    display,
    find_indexers,
    find_methods,
    find_prop,
    find_unavailable,
    implicit,
    implicit_converter,
    nullable_of,
    strip_nullable,
)

__all__ = ("MAX_AST_DEPTH", "MAX_NODES", "Program", "compile_parsed")

MAX_AST_DEPTH: Final = 128
MAX_NODES: Final = 10_000  # an upper bound of node evaluations: the subset has no loops

MSG_UNKNOWN_NAME: Final = "the name '{}' does not exist in the current context"
MSG_UNKNOWN_MEMBER: Final = "'{}' does not contain a definition for '{}' (or it is not allowed in policy expressions)"
MSG_UNKNOWN_NAMESPACE: Final = "'{}' is not an allowed type or namespace"
MSG_NOT_A_VALUE: Final = "'{}' is a type or namespace, not a value"
MSG_VOID_VALUE: Final = "this method returns nothing (void) and cannot be used as a value"
MSG_NO_OVERLOAD: Final = "no overload of '{}' accepts the arguments ({})"
MSG_METHOD_GROUP: Final = "'{}' is a method: call it with ()"
MSG_NOT_METHOD: Final = "'{}' is not a method"
MSG_NO_INDEXER: Final = "cannot apply indexing with [] to an expression of type '{}'"
MSG_CAST: Final = "cannot convert type '{}' to '{}'"
MSG_CONVERT: Final = "cannot implicitly convert type '{}' to '{}'"
MSG_CONDITION: Final = "cannot implicitly convert type '{}' to 'bool'"
MSG_TOO_DEEP: Final = "expression is nested too deeply"
MSG_TOO_BIG: Final = "expression is too large"
MSG_DUPLICATE_LOCAL: Final = "a local variable named '{}' is already defined in this scope or an enclosing one"
MSG_UNASSIGNED: Final = "use of unassigned local variable '{}'"
MSG_VAR_NEEDS_INIT: Final = "implicitly typed variables must be initialized"
MSG_VAR_NULL: Final = "cannot assign <null> to an implicitly typed variable"
MSG_ASSIGN_TARGET: Final = "only local variables can be assigned"
MSG_EMBEDDED_DECL: Final = "a declaration is not allowed here; use a block { ... }"
MSG_NOT_ALL_PATHS: Final = "not all code paths return a value"
MSG_LAMBDA_CONTEXT: Final = "a lambda expression is only allowed as the argument of a LINQ method"
MSG_TYPE_ARG: Final = "'{}' does not accept the type argument '{}' (allowed: {})"
MSG_ALIGNMENT: Final = "the alignment of an interpolation must be a constant integer"

_NEXT: Final = object()  # what a statement returns when control continues with the next one


class Program:
    """A compiled expression body: ``fn(env)`` computes the value; ``n_locals`` slots are needed per run."""

    __slots__ = ("flags", "fn", "n_locals", "result_type")

    def __init__(self, fn: Fn, result_type: str, n_locals: int, flags: frozenset[str]) -> None:
        self.fn = fn
        self.result_type = result_type
        self.n_locals = n_locals
        self.flags = flags


def compile_parsed(text: str, parsed: Parsed) -> Program:
    return _Compiler(text).program(parsed)


class _Local:
    __slots__ = ("slot", "type")

    def __init__(self, slot: int, type_: str) -> None:
        self.slot = slot
        self.type = type_


class _Return:
    """A ``return`` statement's value; converted to the block's result type once all returns are known."""

    __slots__ = ("fn", "type")

    def __init__(self, type_: str, fn: Fn) -> None:
        self.type = type_
        self.fn = fn


class _Compiler:
    """One compilation: the scopes of locals (and which are definitely assigned), the ``?.`` receivers being
    bound, the types of the ``return`` statements, and the depth/size counters of the sandbox."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.flags: set[str] = set()
        self.n_locals = 0
        self.scopes: list[dict[str, _Local]] = [{}]
        self.assigned: set[int] = set()
        self.receivers: list[tuple[int, str]] = []
        self.returns: list[_Return] = []
        self.depth = 0
        self.nodes = 0

    def program(self, parsed: Parsed) -> Program:
        if parsed.form == "expr":
            assert not isinstance(parsed.body, n.Block)
            result_type, fn = self.value(parsed.body)
            return Program(fn, result_type, self.n_locals, frozenset(self.flags))
        body = parsed.body
        assert isinstance(body, n.Block)
        fn, completes = self.block(body, new_scope=False)
        if completes:
            raise ExpressionError(MSG_NOT_ALL_PATHS, len(self.text.rstrip()) - 1)
        result_type = self._unify_returns()
        for ret in self.returns:
            ret.fn = with_converter(ret.fn, implicit_converter(ret.type, result_type))
        return Program(fn, result_type, self.n_locals, frozenset(self.flags))

    def _unify_returns(self) -> str:
        types = [ret.type for ret in self.returns]
        for candidate in types:
            if candidate != NULL and all(implicit(t, candidate) for t in types):
                return candidate
        return OBJECT

    #
    # Statements
    #

    def block(self, block: n.Block, *, new_scope: bool = True) -> tuple[Fn, bool]:
        if new_scope:
            self.scopes.append({})
        fns: list[Fn] = []
        completes = True
        for stmt in block.body:
            fn, stmt_completes = self.statement(stmt)
            fns.append(fn)
            completes = completes and stmt_completes
        if new_scope:
            self.scopes.pop()
        steps = tuple(fns)

        def run(env: Env) -> Any:
            for step in steps:
                result = step(env)
                if result is not _NEXT:
                    return result
            return _NEXT

        return run, completes

    def statement(self, stmt: n.Stmt) -> tuple[Fn, bool]:
        self._enter(stmt.pos)
        try:
            if isinstance(stmt, n.Block):
                return self.block(stmt)
            if isinstance(stmt, n.LocalDecl):
                return self._declaration(stmt), True
            if isinstance(stmt, n.Assign):
                return self._assignment(stmt), True
            if isinstance(stmt, n.If):
                return self._if(stmt)
            if isinstance(stmt, n.Return):
                ret = _Return(*self.value(stmt.value))
                self.returns.append(ret)
                return lambda env: ret.fn(env), False
            assert isinstance(stmt, n.ExprStmt)
            _, expr = self.expression(stmt.expr)

            def run_expr(env: Env) -> Any:
                expr(env)
                return _NEXT

            return run_expr, True
        finally:
            self.depth -= 1

    def _declaration(self, decl: n.LocalDecl) -> Fn:
        if decl.type.name == "var":
            if decl.init is None:
                raise ExpressionError(MSG_VAR_NEEDS_INIT, decl.pos)
            declared = None
        else:
            declared = resolve_type(decl.type)
        init = self.value(decl.init) if decl.init is not None else None
        if declared is None:
            assert init is not None
            if init[0] == NULL:
                raise ExpressionError(MSG_VAR_NULL, decl.pos)
            declared = init[0]
        local = self._declare(decl.name, declared, decl.pos)
        if init is None:
            return lambda env: _NEXT
        slot = local.slot
        value = self._convert(init, declared, decl.init.pos if decl.init is not None else decl.pos)
        self.assigned.add(slot)

        def run(env: Env) -> Any:
            env.locals[slot] = value(env)
            return _NEXT

        return run

    def _assignment(self, stmt: n.Assign) -> Fn:
        if not isinstance(stmt.target, n.Name) or self._find_local(stmt.target.name) is None:
            raise ExpressionError(MSG_ASSIGN_TARGET, stmt.target.pos)
        local = self._find_local(stmt.target.name)
        assert local is not None
        if stmt.op == "=":
            value = self._convert(self.value(stmt.value), local.type, stmt.value.pos)
        else:
            combined = self._binary(n.Binary(stmt.op[0], stmt.target, stmt.value, stmt.pos))
            value = self._convert(combined, local.type, stmt.pos)
        slot = local.slot
        self.assigned.add(slot)

        def run(env: Env) -> Any:
            env.locals[slot] = value(env)
            return _NEXT

        return run

    def _embedded(self, stmt: n.Stmt) -> tuple[Fn, bool]:
        if isinstance(stmt, n.LocalDecl):
            raise ExpressionError(MSG_EMBEDDED_DECL, stmt.pos)
        return self.statement(stmt)

    def _if(self, stmt: n.If) -> tuple[Fn, bool]:
        condition = self._condition(stmt.condition)
        before = set(self.assigned)
        then, then_completes = self._embedded(stmt.then)
        then_assigned = self.assigned
        self.assigned = set(before)
        if stmt.otherwise is None:
            self.assigned = before

            def run_if(env: Env) -> Any:
                return then(env) if condition(env) else _NEXT

            return run_if, True
        otherwise, else_completes = self._embedded(stmt.otherwise)
        else_assigned = self.assigned
        if then_completes and else_completes:
            self.assigned = then_assigned & else_assigned
        elif then_completes:
            self.assigned = then_assigned
        elif else_completes:
            self.assigned = else_assigned
        else:
            self.assigned = then_assigned | else_assigned

        def run_if_else(env: Env) -> Any:
            return then(env) if condition(env) else otherwise(env)

        return run_if_else, then_completes or else_completes

    def _declare(self, name: str, type_: str, pos: int) -> _Local:
        if name == "context" or self._find_local(name) is not None:
            raise ExpressionError(MSG_DUPLICATE_LOCAL.format(name), pos)
        local = _Local(self.n_locals, type_)
        self.n_locals += 1
        self.scopes[-1][name] = local
        return local

    def _find_local(self, name: str) -> _Local | None:
        for scope in reversed(self.scopes):
            local = scope.get(name)
            if local is not None:
                return local
        return None

    #
    # Expressions
    #

    def _enter(self, pos: int) -> None:
        self.depth += 1
        self.nodes += 1
        if self.depth > MAX_AST_DEPTH:
            raise ExpressionError(MSG_TOO_DEEP, pos)
        if self.nodes > MAX_NODES:
            raise ExpressionError(MSG_TOO_BIG, pos)

    def expression(self, node: n.Node) -> tuple[str, Fn]:
        """Compile ``node``; the result may be a static type or namespace (only valid as a member target)."""
        self._enter(node.pos)
        try:
            return _DISPATCH[type(node)](self, node)
        finally:
            self.depth -= 1

    def value(self, node: n.Node) -> tuple[str, Fn]:
        """Compile ``node``, which must produce a value."""
        if isinstance(node, n.Lambda):
            raise ExpressionError(MSG_LAMBDA_CONTEXT, node.pos)
        result_type, fn = self.expression(node)
        if result_type.startswith(("static:", "namespace:")):
            raise ExpressionError(MSG_NOT_A_VALUE.format(display(result_type)), node.pos)
        if result_type == VOID:
            raise ExpressionError(MSG_VOID_VALUE, node.pos)
        return result_type, fn

    def _convert(self, compiled: tuple[str, Fn], target: str, pos: int) -> Fn:
        source, fn = compiled
        if not implicit(source, target):
            raise ExpressionError(MSG_CONVERT.format(display(source), display(target)), pos)
        return with_converter(fn, implicit_converter(source, target))

    def _condition(self, node: n.Node) -> Fn:
        result_type, fn = self.value(node)
        if result_type != BOOL:
            raise ExpressionError(MSG_CONDITION.format(display(result_type)), node.pos)
        return fn

    def _literal(self, node: n.Literal) -> tuple[str, Fn]:
        return node.type, const(node.value)

    def _interpolated(self, node: n.Interpolated) -> tuple[str, Fn]:
        pieces: list[tuple[str | None, Fn | None, int, str | None]] = []
        for part in node.parts:
            if isinstance(part, str):
                pieces.append((part, None, 0, None))
                continue
            expr, alignment, fmt = part
            _, fn = self.value(expr)
            width = self._constant_int(alignment) if alignment is not None else 0
            pieces.append((None, fn, width, fmt))
        frozen = tuple(pieces)

        def interpolate(env: Env) -> str:
            out: list[str] = []
            for text, fn, width, fmt in frozen:
                if fn is None:
                    out.append(text)  # type: ignore[arg-type]  # fn is None marks a literal part, whose text is a str
                else:
                    piece = format_value(fn(env), fmt)
                    out.append(align(piece, width) if width else piece)
            return check_length("".join(out))

        return STRING, interpolate

    def _constant_int(self, node: n.Node) -> int:
        if isinstance(node, n.Literal) and isinstance(node.value, int) and node.type == INT:
            return node.value
        if isinstance(node, n.Unary) and node.op == "-" and isinstance(node.operand, n.Literal):
            return -self._constant_int(node.operand)
        raise ExpressionError(MSG_ALIGNMENT, node.pos)

    def _name(self, node: n.Name) -> tuple[str, Fn]:
        name = node.name
        local = self._find_local(name)
        if local is not None:
            if local.slot not in self.assigned:
                raise ExpressionError(MSG_UNASSIGNED.format(name), node.pos)
            slot = local.slot
            return local.type, lambda env: env.locals[slot]
        if name == "context":
            return CONTEXT_TYPE, _context_root
        static = static_type(name)
        if static is not None:
            return static, _context_root
        raise ExpressionError(MSG_UNKNOWN_NAME.format(name), node.pos)

    def _receiver(self, node: n.Receiver) -> tuple[str, Fn]:
        slot, receiver_type = self.receivers[-1]
        return receiver_type, lambda env: env.locals[slot]

    def _cond_access(self, node: n.CondAccess) -> tuple[str, Fn]:
        target_type, target = self.value(node.target)
        if not can_be_null(target_type):
            raise ExpressionError(MSG_NOT_NULLABLE.format("?.", display(target_type)), node.pos)
        slot = self.n_locals
        self.n_locals += 1
        self.receivers.append((slot, strip_nullable(target_type)))
        try:
            chain_type, chain = self.expression(node.chain)
        finally:
            self.receivers.pop()
        result_type = nullable_of(chain_type)

        def cond_access(env: Env) -> Any:
            value = target(env)
            if value is None:
                return None
            env.locals[slot] = value
            return chain(env)

        return result_type, cond_access

    #
    # Members, indexers, calls
    #

    def _target(self, node: n.Node) -> tuple[str, Fn]:
        target_type, fn = self.expression(node)
        if target_type == VOID:
            raise ExpressionError(MSG_VOID_VALUE, node.pos)
        if target_type == NULL:
            raise ExpressionError(MSG_UNARY.format(".", "<null>"), node.pos)
        return target_type, fn

    def _member(self, node: n.Member) -> tuple[str, Fn]:
        target_type, target = self._target(node.target)
        name = node.name
        if target_type.startswith("namespace:"):
            full = f"{target_type.partition(':')[2]}.{name}"
            static = static_type(full)
            if static is not None:
                return static, _context_root
            raise ExpressionError(MSG_UNKNOWN_NAMESPACE.format(full), node.pos)
        prop = find_prop(target_type, name)
        if prop is None:
            self._missing_member(target_type, name, node.pos, method=False)
        assert prop is not None
        if prop.flag:
            self.flags.add(prop.flag)
        return prop.type, self._access(target_type, target, name, prop.get)

    def _missing_member(self, target_type: str, name: str, pos: int, *, method: bool) -> None:
        reason = find_unavailable(target_type, name)
        if reason is not None:
            raise ExpressionError(reason, pos)
        if not method and find_methods(target_type, name):
            raise ExpressionError(MSG_METHOD_GROUP.format(name), pos)
        if method and find_prop(target_type, name) is not None:
            raise ExpressionError(MSG_NOT_METHOD.format(name), pos)
        raise ExpressionError(MSG_UNKNOWN_MEMBER.format(display(target_type), name), pos)

    @staticmethod
    def _access(target_type: str, target: Fn, name: str, get: Callable[[Any], Any]) -> Fn:
        if target is _context_root:
            return lambda env: get(env.ctx)
        if target_type.endswith("?"):  # Nullable<T> members handle null themselves

            def nullable_member(env: Env) -> Any:
                return get(target(env))

            return nullable_member
        if target_type in VALUE_TYPES:
            return lambda env: get(target(env))

        def member(env: Env) -> Any:
            value = target(env)
            if value is None:
                raise null_reference(name)
            return get(value)

        return member

    def _index(self, node: n.Index) -> tuple[str, Fn]:
        target_type, target = self._target(node.target)
        indexers = find_indexers(target_type) if not target_type.startswith(("static:", "namespace:")) else []
        if not indexers:
            raise ExpressionError(MSG_NO_INDEXER.format(display(target_type)), node.pos)
        result_type, impl, args, _ = self._resolve(indexers, (), node.args, node.pos, "this[]")
        return result_type, self._invoke(target_type, target, "[]", impl, args)

    def _call(self, node: n.Call) -> tuple[str, Fn]:
        if node.target is None:
            raise ExpressionError(MSG_UNKNOWN_NAME.format(node.name), node.pos)
        target_type, target = self._target(node.target)
        if target_type.startswith("namespace:"):
            raise ExpressionError(MSG_UNKNOWN_NAMESPACE.format(f"{display(target_type)}.{node.name}"), node.pos)
        overloads = find_methods(target_type, node.name)
        if not overloads:
            self._missing_member(target_type, node.name, node.pos, method=True)
        result_type, impl, args, flag = self._resolve(overloads, node.type_args, node.args, node.pos, node.name)
        if flag:
            self.flags.add(flag)
        return result_type, self._invoke(target_type, target, node.name, impl, args)

    def _invoke(self, target_type: str, target: Fn, name: str, impl: Callable[..., Any], args: list[Fn]) -> Fn:
        check_null = target is not _context_root and target_type not in VALUE_TYPES and not target_type.endswith("?")
        if not args:
            if target is _context_root:
                return lambda env: impl(env.ctx)

            def call0(env: Env) -> Any:
                value = target(env)
                if value is None and check_null:
                    raise null_reference(name)
                return impl(value)

            return call0
        if len(args) == 1:
            (arg,) = args

            def call1(env: Env) -> Any:
                value = target(env)
                if value is None and check_null:
                    raise null_reference(name)
                return impl(value, arg(env))

            return call1
        frozen = tuple(args)

        def call(env: Env) -> Any:
            value = target(env)
            if value is None and check_null:
                raise null_reference(name)
            return impl(value, *[a(env) for a in frozen])

        return call

    def _resolve(
        self,
        overloads: Sequence[Overload],
        type_args: tuple[n.TypeRef, ...],
        args: tuple[n.Arg, ...],
        pos: int,
        what: str,
    ) -> tuple[str, Callable[..., Any], list[Fn], str | None]:
        """Pick the first overload the arguments fit (tables list the most specific first)."""
        explicit = [resolve_type(t) for t in type_args]
        compiled = [None if isinstance(a.value, n.Lambda) else self.value(a.value) for a in args]
        type_arg_error: str | None = None
        for overload in overloads:
            allowed = overload.type_args
            if len(explicit) == 1 and allowed is not None and allowed != ANY_TYPE and explicit[0] not in allowed:
                type_arg_error = MSG_TYPE_ARG.format(what, display(explicit[0]), ", ".join(allowed))
                continue
            matched = self._match(overload, explicit, args, compiled)
            if matched is not None:
                return matched
        if type_arg_error is not None:
            raise ExpressionError(type_arg_error, pos)
        shown = ", ".join("lambda" if c is None else display(c[0]) for c in compiled)
        raise ExpressionError(MSG_NO_OVERLOAD.format(what, shown), pos)

    def _match(
        self,
        overload: Overload,
        explicit: list[str],
        args: tuple[n.Arg, ...],
        compiled: list[tuple[str, Fn] | None],
    ) -> tuple[str, Callable[..., Any], list[Fn], str | None] | None:
        generic = overload.type_args is not None
        if (explicit and not generic) or len(explicit) > 1:
            return None
        params = overload.params
        rest_param = params[-1] if params and params[-1].params else None
        fixed = params[:-1] if rest_param is not None else params
        slots: list[int | None] = [None] * len(fixed)
        rest: list[int] = []
        position = 0
        for i, arg in enumerate(args):
            if arg.name is None:
                if position < len(fixed):
                    slots[position] = i
                    position += 1
                elif rest_param is not None:
                    rest.append(i)
                else:
                    return None
                continue
            index = next((k for k, p in enumerate(fixed) if p.name == arg.name), None)
            if index is None or slots[index] is not None:
                return None
            slots[index] = i
        for k, param in enumerate(fixed):
            if slots[k] is None and param.default is REQUIRED:
                return None
        bound_t = explicit[0] if explicit else None
        if generic and bound_t is None:
            bound_t = self._infer(fixed, slots, compiled)
            if bound_t is None:
                return None
            allowed = overload.type_args
            if allowed != ANY_TYPE and bound_t not in allowed:  # type: ignore[operator]  # type_args is a tuple of types once ANY_TYPE is ruled out
                return None
        bindings = {"T": bound_t} if bound_t is not None else {}
        arg_fns: list[Fn] = []
        lambda_result: str | None = None
        for k, param in enumerate(fixed):
            param_type = _bind(param.type, bindings)
            index = slots[k]
            if index is None:
                arg_fns.append(const(param.default))
                continue
            fitted = self._fit(args[index], compiled[index], param_type)
            if fitted is None:
                return None
            fn, produced = fitted
            if produced is not None:
                lambda_result = produced
            arg_fns.append(fn)
        if rest_param is not None:
            rest_fn = self._fit_rest(rest_param, rest, args, compiled, bindings)
            if rest_fn is None:
                return None
            arg_fns.append(rest_fn)
        result = _bind(overload.result, bindings)
        if lambda_result is not None and result == "R[]":
            result = lambda_result + "[]"
        impl = overload.impl(bound_t) if generic else overload.impl
        return result, impl, arg_fns, overload.flag

    @staticmethod
    def _infer(fixed: Sequence[Param], slots: list[int | None], compiled: list[tuple[str, Fn] | None]) -> str | None:
        for k, param in enumerate(fixed):
            index = slots[k]
            if param.type == "T" and index is not None:
                entry = compiled[index]
                if entry is not None and entry[0] != NULL:
                    return entry[0]
        return None

    def _fit(self, arg: n.Arg, compiled: tuple[str, Fn] | None, param_type: str) -> tuple[Fn, str | None] | None:
        """Fit one argument to a parameter: (fn, the result type of a lambda) or None when it does not fit."""
        if "=>" in param_type:
            if not isinstance(arg.value, n.Lambda):
                return None
            element, _, wanted = param_type.partition("=>")
            body_type, fn = self._lambda(arg.value, element)
            if wanted == "R":
                if body_type in (NULL, VOID):
                    return None
                return fn, body_type
            if not implicit(body_type, wanted):
                raise ExpressionError(MSG_CONVERT.format(display(body_type), display(wanted)), arg.value.body.pos)
            return fn, None
        if compiled is None:
            return None
        source, fn = compiled
        if not implicit(source, param_type):
            return None
        return with_converter(fn, implicit_converter(source, param_type)), None

    def _fit_rest(
        self,
        param: Param,
        rest: list[int],
        args: tuple[n.Arg, ...],
        compiled: list[tuple[str, Fn] | None],
        bindings: dict[str, str],
    ) -> Fn | None:
        element = _bind(param.type, bindings)
        entries = [compiled[i] for i in rest]
        if any(e is None for e in entries):
            return None
        if len(entries) == 1 and entries[0] is not None and implicit(entries[0][0], element + "[]"):
            return entries[0][1]  # an array passed in the normal (unexpanded) form
        fns: list[Fn] = []
        for entry in entries:
            assert entry is not None
            if not implicit(entry[0], element):
                return None
            fns.append(with_converter(entry[1], implicit_converter(entry[0], element)))
        frozen = tuple(fns)
        return lambda env: tuple(f(env) for f in frozen)

    def _lambda(self, node: n.Lambda, param_type: str) -> tuple[str, Fn]:
        self.scopes.append({})
        try:
            local = self._declare(node.param, param_type, node.pos)
            self.assigned.add(local.slot)
            before = self.nodes
            body_type, body = self.value(node.body)
            cost = max(self.nodes - before, 1)
        finally:
            self.scopes.pop()
        slot = local.slot

        def make(env: Env) -> Callable[[Any], Any]:
            def invoke(value: Any) -> Any:
                charge(env, cost)
                env.locals[slot] = value
                return body(env)

            return invoke

        return body_type, make

    #
    # Operators
    #

    def _cast(self, node: n.Cast) -> tuple[str, Fn]:
        target = resolve_type(node.type)
        source, fn = self.value(node.operand)
        converter = cast_converter(source, target)
        if converter is False:
            raise ExpressionError(MSG_CAST.format(display(source), display(target)), node.pos)
        return target, with_converter(fn, converter if callable(converter) else None)

    def _unary(self, node: n.Unary) -> tuple[str, Fn]:
        operand = node.operand
        if node.op == "-" and isinstance(operand, n.Literal) and operand.type == "long" and operand.value == 2**31:
            return INT, const(-(2**31))  # C#: -2147483648 is an int literal
        return unary(node.op, node.pos, self.value(operand))

    def _binary(self, node: n.Binary) -> tuple[str, Fn]:
        if node.op == "&&" or node.op == "||":
            left, right = self._condition(node.left), self._condition(node.right)
            if node.op == "&&":
                return BOOL, lambda env: left(env) and right(env)
            return BOOL, lambda env: left(env) or right(env)
        return binary(node.op, node.pos, self.value(node.left), self.value(node.right))

    def _conditional(self, node: n.Conditional) -> tuple[str, Fn]:
        condition = self._condition(node.condition)
        return conditional(node.pos, condition, self.value(node.then), self.value(node.otherwise))

    def _lambda_outside(self, node: n.Lambda) -> tuple[str, Fn]:
        raise ExpressionError(MSG_LAMBDA_CONTEXT, node.pos)


def _context_root(env: Env) -> Any:
    return env.ctx


def _bind(t: str, bindings: dict[str, str]) -> str:
    if not bindings:
        return t
    if t == "T":
        return bindings["T"]
    if t == "T[]":
        return bindings["T"] + "[]"
    return t


_DISPATCH: Final[dict[type, Callable[[_Compiler, Any], tuple[str, Fn]]]] = {
    n.Literal: _Compiler._literal,
    n.Interpolated: _Compiler._interpolated,
    n.Name: _Compiler._name,
    n.Receiver: _Compiler._receiver,
    n.CondAccess: _Compiler._cond_access,
    n.Member: _Compiler._member,
    n.Index: _Compiler._index,
    n.Call: _Compiler._call,
    n.Cast: _Compiler._cast,
    n.Unary: _Compiler._unary,
    n.Binary: _Compiler._binary,
    n.Conditional: _Compiler._conditional,
    n.Lambda: _Compiler._lambda_outside,
}
