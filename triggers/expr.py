"""The condition language of triggers, compiled once to a Python callable through a whitelist.

The text is parsed with `ast.parse(mode="eval")` (parsing runs nothing) and every node is checked
against a small whitelist, then turned into nested closures. Nothing is ever passed to eval/exec,
no attribute of a Python object is reachable (names resolve in plain dicts), and only the functions
in `FUNCTIONS` can be called.

    member.tier in ["gold", "black"] and days_since(member.last_visit_ts) >= 30
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from triggers.catalog import ANY, BOOL, LIST, MAP, NUMBER, TEXT, Spec, nearest

# Cost limits, checked before anything runs (in the spirit of CEL's cost estimation): every
# construct costs at most a constant or the size of its inputs, and inputs are bounded by the
# record limits (64 KB events, ~1 KB member records), so a condition is bounded too.
MAX_LENGTH = 1000  # characters of condition text
MAX_DEPTH = 16  # nesting of sub-expressions
MAX_NODES = 150  # parsed nodes: the evaluation cost of the condition
MAX_TEXT = 200  # characters of a text constant
MAX_ITEMS = 100  # items of a list constant
MAX_NUMBER = 10**15  # magnitude of a number constant (beyond it, floats lose whole numbers)
ROOTS = frozenset({"event", "member", "store", "now"})

Scope = Mapping[str, Any]
Compiled = Callable[[Scope], Any]


class ExpressionError(ValueError):
    """A condition that is not valid; `column` is 1-based, as editors count."""

    def __init__(self, message: str, column: int | None = None) -> None:
        self.column = column
        super().__init__(f"{message} (column {column})" if column else message)


def _ms(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _days_since(scope: Scope, ts: Any) -> float | None:
    ms = _ms(ts)
    now = scope["now"]
    return None if ms is None else (now["ts"] - ms) / 86_400_000


def _has_tag(scope: Scope, tag: Any) -> bool:
    return tag in (scope["member"].get("tags") or ())


def _contains(_: Scope, haystack: Any, needle: Any) -> bool:
    try:
        return needle in haystack if haystack is not None else False
    except TypeError:
        return False


def _birthday_month(scope: Scope) -> bool:
    birthday = scope["member"].get("birthday") or ""
    return isinstance(birthday, str) and birthday[5:7] == f"{scope['now']['month']:02d}"


def _hour(scope: Scope) -> int:
    return int(scope["now"]["hour"])


def _weekday(scope: Scope) -> int:
    return int(scope["now"]["weekday"])


def _len(_: Scope, value: Any) -> int:
    return len(value) if isinstance(value, str | list | dict | tuple) else 0


def _lower(_: Scope, value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _min(_: Scope, *values: Any) -> Any:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _max(_: Scope, *values: Any) -> Any:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _abs(_: Scope, value: Any) -> Any:
    return abs(value) if _ms(value) is not None else None


# name -> (function taking the scope first, min args, max args)
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "days_since": (_days_since, 1, 1),
    "has_tag": (_has_tag, 1, 1),
    "contains": (_contains, 2, 2),
    "birthday_month": (_birthday_month, 0, 0),
    "hour": (_hour, 0, 0),
    "weekday": (_weekday, 0, 0),
    "len": (_len, 1, 1),
    "lower": (_lower, 1, 1),
    "min": (_min, 1, 8),
    "max": (_max, 1, 8),
    "abs": (_abs, 1, 1),
}

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: _contains({}, b, a),
    ast.NotIn: lambda a, b: not _contains({}, b, a),
}


def _number(value: Any) -> Any:
    if isinstance(value, int | float):
        return value
    raise TypeError("not a number")


def _mul(a: Any, b: Any) -> Any:
    """Multiplication of numbers only: `'ab' * n` repeats text, a memory bomb at run time."""
    return _number(a) * _number(b)


_ARITH: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_LITERAL_NAMES = {"true": True, "false": False, "null": None, "none": None}


def compile_condition(text: str, fields: Mapping[str, Spec] | None = None) -> Compiled:
    """Compile `text` to `fn(scope) -> bool`; raises ExpressionError naming the column.

    Cost limits always apply. `fields` (`triggers.catalog.roots(...)`) also checks every field
    name and the kinds of what is compared, so `member.tags == 'vip'` is refused here rather
    than never being true at run time."""
    if not isinstance(text, str):
        raise ExpressionError("a condition must be text")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"a condition is at most {MAX_LENGTH} characters")
    stripped = " ".join(text.split())  # YAML block scalars bring newlines; conditions are one line
    if not stripped:
        return lambda scope: True
    try:
        tree = ast.parse(stripped, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(
            f"syntax error: {exc.msg}", max(1, min(exc.offset or len(stripped), len(stripped)))
        ) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("cannot parse this condition") from None
    try:
        nodes = sum(1 for _ in ast.walk(tree.body))
    except RecursionError:
        raise ExpressionError("condition is nested too deeply") from None
    if nodes > MAX_NODES:
        raise ExpressionError(f"condition is too long: {nodes} parts, at most {MAX_NODES}")
    Checker(fields).kind(tree.body, 0)
    body = _compile(tree.body, 0)

    def condition(scope: Scope) -> bool:
        try:
            return bool(body(scope))
        except (TypeError, ValueError, ArithmeticError, KeyError, AttributeError):
            return False  # e.g. comparing text with a number: the condition simply does not hold

    return condition


NULL = "null"
_SIZED = (TEXT, LIST, MAP, ANY)
# name -> (kinds of the arguments, kind of the result); `None` arguments: any number of numbers
_SIGNATURES: dict[str, tuple[tuple[tuple[str, ...], ...] | None, str]] = {
    "days_since": (((NUMBER, ANY, NULL),), NUMBER),
    "has_tag": (((TEXT, ANY),), BOOL),
    "contains": ((_SIZED, (TEXT, NUMBER, BOOL, ANY, NULL)), BOOL),
    "birthday_month": ((), BOOL),
    "hour": ((), NUMBER),
    "weekday": ((), NUMBER),
    "len": ((_SIZED,), NUMBER),
    "lower": (((TEXT, ANY),), TEXT),
    "min": (None, NUMBER),
    "max": (None, NUMBER),
    "abs": (((NUMBER, ANY),), NUMBER),
}
_ARTICLE = {NUMBER: "a number", TEXT: "text", BOOL: "true/false", LIST: "a list", MAP: "a map"}


def _kind_of(spec: Spec) -> str:
    return MAP if isinstance(spec, Mapping) else spec


class Checker:
    """Static checks before compiling: cost limits always; with `fields`, also that every
    field exists and that what is compared or computed has kinds that can work."""

    def __init__(self, fields: Mapping[str, Spec] | None) -> None:
        self.fields = fields

    def kind(self, node: ast.AST, depth: int) -> str:
        if depth > MAX_DEPTH:
            raise _fail(node, f"condition is nested too deeply (at most {MAX_DEPTH} levels)")
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self._constant(node)
        if isinstance(node, ast.Name):
            if node.id in ROOTS:
                return MAP
            literal = _LITERAL_NAMES.get(node.id.lower(), ...)
            if literal is ...:
                return ANY  # _compile names the error
            return NULL if literal is None else BOOL
        if isinstance(node, ast.Attribute):
            return self._path(node)
        if isinstance(node, ast.Subscript):
            target = self.kind(node.value, d)
            if target in (NUMBER, BOOL, TEXT):
                raise _fail(node, f"{_src(node.value)} is {_ARTICLE[target]}: it has no items")
            return ANY
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            if len(node.elts) > MAX_ITEMS:
                raise _fail(node, f"a list has at most {MAX_ITEMS} items")
            for e in node.elts:
                self.kind(e, d)
            return LIST
        if isinstance(node, ast.BoolOp):
            for v in node.values:
                self.kind(v, d)
            return BOOL
        if isinstance(node, ast.UnaryOp):
            operand = self.kind(node.operand, d)
            if isinstance(node.op, ast.Not):
                return BOOL
            self._numeric(node.operand, operand, "a sign")
            return NUMBER
        if isinstance(node, ast.BinOp):
            return self._arith(node, d)
        if isinstance(node, ast.Compare):
            self._compare(node, d)
            return BOOL
        if isinstance(node, ast.Call):
            return self._call(node, d)
        return ANY  # _compile names what is not part of the language

    def _constant(self, node: ast.Constant) -> str:
        value = node.value
        if isinstance(value, bool):
            return BOOL
        if isinstance(value, int | float):
            if abs(value) > MAX_NUMBER:
                raise _fail(node, f"number {_src(node)[:20]} is too large (at most 10^15)")
            return NUMBER
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise _fail(node, f"a text constant has at most {MAX_TEXT} characters")
            return TEXT
        return NULL if value is None else ANY

    def _path(self, node: ast.Attribute) -> str:
        keys: list[str] = []
        cursor: ast.AST = node
        while isinstance(cursor, ast.Attribute):
            keys.append(cursor.attr)
            cursor = cursor.value
        if self.fields is None or not isinstance(cursor, ast.Name) or cursor.id not in ROOTS:
            return ANY
        spec: Spec = self.fields[cursor.id]
        walked = cursor.id
        for key in reversed(keys):
            if isinstance(spec, Mapping):
                if key not in spec:
                    raise _fail(node, f"{walked} has no field {key!r}{nearest(key, spec)}")
                spec = spec[key]
            elif spec in (MAP, ANY):
                return ANY
            else:
                raise _fail(node, f"{walked} is {_ARTICLE[spec]}: it has no field {key!r}")
            walked += f".{key}"
        return _kind_of(spec)

    def _numeric(self, node: ast.AST, kind: str, what: str) -> None:
        if kind not in (NUMBER, ANY, NULL):
            raise _fail(node, f"{_src(node)} is {_ARTICLE.get(kind, kind)}: {what} needs a number")

    def _arith(self, node: ast.BinOp, depth: int) -> str:
        if isinstance(node.op, ast.Pow):
            raise _fail(node, "`**` is not allowed: its cost grows with its operands")
        if type(node.op) not in _ARITH:
            raise _fail(node, f"operator {type(node.op).__name__} is not allowed")
        left, right = self.kind(node.left, depth), self.kind(node.right, depth)
        if isinstance(node.op, ast.Mult):
            for side, kind in ((node.left, left), (node.right, right)):
                if kind in (TEXT, LIST):
                    raise _fail(
                        node, f"`*` repeats {_src(side)}: repeating text or lists is not allowed"
                    )
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and (
            isinstance(node.right, ast.Constant) and node.right.value == 0
        ):
            raise _fail(node, "division by zero")
        if isinstance(node.op, ast.Add) and left == right and left in (TEXT, LIST):
            return left
        if isinstance(node.op, ast.Add) and ANY in (left, right):
            return ANY
        self._numeric(node.left, left, "arithmetic")
        self._numeric(node.right, right, "arithmetic")
        return NUMBER

    def _compare(self, node: ast.Compare, depth: int) -> None:
        sides = [node.left, *node.comparators]
        kinds = [self.kind(side, depth) for side in sides]
        for i, op in enumerate(node.ops):
            a, b, ka, kb = sides[i], sides[i + 1], kinds[i], kinds[i + 1]
            if ANY in (ka, kb) or NULL in (ka, kb):
                continue
            if isinstance(op, ast.Eq | ast.NotEq):
                for x, kx, y, ky in ((a, ka, b, kb), (b, kb, a, ka)):
                    if kx == LIST and ky in (TEXT, NUMBER, BOOL):
                        raise _fail(node, f"{_src(x)} is a list: use {_src(y)} in {_src(x)}")
                if {ka, kb} == {NUMBER, TEXT}:
                    raise _fail(
                        node,
                        f"{_src(a)} is {_ARTICLE[ka]} and {_src(b)} is {_ARTICLE[kb]}: "
                        "they are never equal",
                    )
            elif isinstance(op, ast.In | ast.NotIn):
                if kb not in (LIST, TEXT, MAP):
                    raise _fail(
                        node, f"{_src(b)} is {_ARTICLE[kb]}: `in` needs a list, text or a map"
                    )
                if kb == TEXT and ka != TEXT:
                    raise _fail(node, f"{_src(a)} is {_ARTICLE[ka]}: `in` text needs text")
            else:
                for x, kx in ((a, ka), (b, kb)):
                    if kx in (LIST, MAP, BOOL):
                        raise _fail(node, f"{_src(x)} is {_ARTICLE[kx]}: it has no order")
                if ka != kb:
                    raise _fail(
                        node,
                        f"{_src(a)} is {_ARTICLE[ka]} and {_src(b)} is {_ARTICLE[kb]}: "
                        "compare like with like",
                    )

    def _call(self, node: ast.Call, depth: int) -> str:
        name = node.func.id if isinstance(node.func, ast.Name) else ""
        args = [self.kind(a, depth + 1) for a in node.args]
        signature = _SIGNATURES.get(name)
        if signature is None:
            return ANY  # _compile names the error
        params, result = signature
        for i, (arg, kind) in enumerate(zip(node.args, args, strict=False)):
            allowed = (NUMBER, ANY, NULL) if params is None else params[min(i, len(params) - 1)]
            if params == () or kind in allowed:
                continue
            raise _fail(
                node, f"{name}() cannot take {_src(arg)}, which is {_ARTICLE.get(kind, kind)}"
            )
        return result


def _src(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(node: ast.AST, message: str) -> ExpressionError:
    return ExpressionError(message, getattr(node, "col_offset", -1) + 1)


def _compile(node: ast.AST, depth: int) -> Compiled:
    if depth > MAX_DEPTH:
        raise _fail(node, "condition is nested too deeply")
    d = depth + 1
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, str | int | float | bool | type(None)):
            raise _fail(node, f"constant of type {type(node.value).__name__} is not allowed")
        value = node.value
        return lambda scope: value
    if isinstance(node, ast.Name):
        return _compile_name(node)
    if isinstance(node, ast.Attribute):
        return _compile_path(node)
    if isinstance(node, ast.Subscript):
        return _compile_subscript(node, d)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        items = [_compile(e, d) for e in node.elts]
        return lambda scope: [item(scope) for item in items]
    if isinstance(node, ast.BoolOp):
        parts = tuple(_compile(v, d) for v in node.values)
        if isinstance(node.op, ast.And):

            def conjunction(scope: Scope) -> Any:
                for part in parts:  # a plain loop: all(generator) costs twice as much per call
                    if not part(scope):
                        return False
                return True

            return conjunction

        def disjunction(scope: Scope) -> Any:
            for part in parts:
                if part(scope):
                    return True
            return False

        return disjunction
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, d)
        if isinstance(node.op, ast.Not):
            return lambda scope: not operand(scope)
        if isinstance(node.op, ast.USub):
            return lambda scope: -operand(scope)
        if isinstance(node.op, ast.UAdd):
            return operand
        raise _fail(node, "operator not allowed")
    if isinstance(node, ast.BinOp):
        fn = _ARITH.get(type(node.op))
        if fn is None:
            raise _fail(node, f"operator {type(node.op).__name__} is not allowed")
        left, right = _compile(node.left, d), _compile(node.right, d)
        return lambda scope: fn(left(scope), right(scope))
    if isinstance(node, ast.Compare):
        return _compile_compare(node, d)
    if isinstance(node, ast.Call):
        return _compile_call(node, d)
    raise _fail(node, f"{type(node).__name__} is not part of the condition language")


def _compile_name(node: ast.Name) -> Compiled:
    name = node.id
    if name in ROOTS:
        return lambda scope: scope[name]
    if name.lower() in _LITERAL_NAMES:
        value = _LITERAL_NAMES[name.lower()]
        return lambda scope: value
    raise _fail(node, f"unknown name {name!r}: use event, member, store or now")


def _compile_path(node: ast.Attribute) -> Compiled:
    """`member.visits.count` -> look up keys in dicts; missing keys give None, never an error."""
    keys: list[str] = []
    cursor: ast.AST = node
    while isinstance(cursor, ast.Attribute):
        if cursor.attr.startswith("_"):
            raise _fail(cursor, f"field {cursor.attr!r} is not allowed")
        keys.append(cursor.attr)
        cursor = cursor.value
    if not isinstance(cursor, ast.Name) or cursor.id not in ROOTS:
        raise _fail(cursor, "a field path must start with event, member, store or now")
    root = cursor.id
    path = tuple(reversed(keys))
    if len(path) == 1:  # `member.tier`, the common case, without the loop
        (key,) = path

        def field(scope: Scope) -> Any:
            value = scope[root]
            return value.get(key) if isinstance(value, Mapping) else None

        return field

    def lookup(scope: Scope) -> Any:
        value: Any = scope[root]
        for key in path:
            if not isinstance(value, Mapping):
                return None
            value = value.get(key)
        return value

    return lookup


def _compile_subscript(node: ast.Subscript, depth: int) -> Compiled:
    target = _compile(node.value, depth)
    if not isinstance(node.slice, ast.Constant) or not isinstance(node.slice.value, str | int):
        raise _fail(node, "an index must be a constant text or number")
    key = node.slice.value

    def index(scope: Scope) -> Any:
        value = target(scope)
        if isinstance(value, Mapping):
            return value.get(key)
        if (
            isinstance(value, list | tuple)
            and isinstance(key, int)
            and -len(value) <= key < len(value)
        ):
            return value[key]
        return None

    return index


def _compile_compare(node: ast.Compare, depth: int) -> Compiled:
    operands = [_compile(node.left, depth)] + [_compile(c, depth) for c in node.comparators]
    ops = [_COMPARE[type(op)] for op in node.ops]
    if len(ops) == 1 and isinstance(node.comparators[0], ast.Constant):
        # `member.visits > 3`: most conditions compare a field with a constant; no loop, and
        # the constant is not fetched through a call
        op, left_fn, const = ops[0], operands[0], node.comparators[0].value
        ordering = op not in (operator.eq, operator.ne)
        if const is None and ordering:
            return lambda scope: False

        def compare_const(scope: Scope) -> bool:
            left = left_fn(scope)
            if left is None and ordering:
                return False
            return bool(op(left, const))

        return compare_const

    def compare(scope: Scope) -> bool:
        left = operands[0](scope)
        for op, right_fn in zip(ops, operands[1:], strict=True):
            right = right_fn(scope)
            if (left is None or right is None) and op not in (operator.eq, operator.ne):
                return False  # unknown data never satisfies an ordering or membership test
            if not op(left, right):
                return False
            left = right
        return True

    return compare


def _compile_call(node: ast.Call, depth: int) -> Compiled:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else "this"
        raise _fail(
            node, f"function {name!r} is not available; use one of {', '.join(sorted(FUNCTIONS))}"
        )
    if node.keywords:
        raise _fail(node, "functions take positional arguments only")
    fn, least, most = FUNCTIONS[node.func.id]
    if not least <= len(node.args) <= most:
        raise _fail(node, f"{node.func.id}() takes {least}..{most} arguments")
    args = [_compile(a, depth + 1) for a in node.args]
    return lambda scope: fn(scope, *(a(scope) for a in args))


def now_scope(ts_ms: int, tz: Any) -> dict[str, Any]:
    """`now` as conditions see it: store-local calendar fields of the evaluation time."""
    local = datetime.fromtimestamp(ts_ms / 1000, tz)
    return {
        "ts": ts_ms,
        "hour": local.hour,
        "minute": local.minute,
        "weekday": local.isoweekday(),
        "month": local.month,
        "day": local.day,
        "date": local.date().isoformat(),
    }


def _member_conjuncts(text: str) -> list[tuple[str, ast.cmpop, ast.expr]]:
    """(field, operator, right side) of each conjunct `member.<field> <op> <right>` that the
    whole condition requires (a top-level `and`, or the condition itself)."""
    try:
        body = ast.parse(" ".join(text.split()), mode="eval").body if text.strip() else None
    except (SyntaxError, ValueError, RecursionError):
        return []
    conjuncts = (
        body.values if isinstance(body, ast.BoolOp) and isinstance(body.op, ast.And) else [body]
    )
    found = []
    for node in conjuncts:
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
            continue
        left = node.left
        if (
            isinstance(left, ast.Attribute)
            and isinstance(left.value, ast.Name)
            and left.value.id == "member"
            and not left.attr.startswith("_")
        ):
            found.append((left.attr, node.ops[0], node.comparators[0]))
    return found


def member_prefilter(text: str) -> tuple[str, frozenset[Any]] | None:
    """A conjunct `member.<field> == const` (or `in [consts]`) that the whole condition needs.

    The engine checks it with one dict lookup before evaluating anything else, so a trigger for
    gold members costs next to nothing for everyone else. None when there is no such conjunct.
    """
    for field_name, op, right in _member_conjuncts(text):
        if isinstance(op, ast.Eq) and isinstance(right, ast.Constant):
            values = [right.value]
        elif (
            isinstance(op, ast.In)
            and isinstance(right, ast.List | ast.Tuple | ast.Set)
            and all(isinstance(e, ast.Constant) for e in right.elts)
        ):
            values = [e.value for e in right.elts]  # type: ignore[attr-defined]
        else:
            continue
        if all(isinstance(v, str | int | bool) for v in values):
            return field_name, frozenset(values)
    return None


Threshold = tuple[str, Callable[[Any, Any], bool], int | float]
_ORDERINGS = {ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Lt: operator.lt, ast.LtE: operator.le}


def member_thresholds(text: str) -> tuple[Threshold, ...]:
    """Conjuncts `member.<field> > number` (or >=, <, <=) that the whole condition needs.

    With 1,000 triggers a gold member's check-in met ~55 candidates, most of them asking for
    more visits than the member has: each was decided, counted and explained as `not_matched`
    (9 decisions per event). The engine checks these first, like the prefilter, and skips a
    trigger only when the conjunct is certainly false: the field is missing (None never
    satisfies an ordering) or a number below the bound, as the compiled condition would find.
    """
    found = []
    for field_name, op, right in _member_conjuncts(text):
        ordering = _ORDERINGS.get(type(op))
        if (
            ordering
            and isinstance(right, ast.Constant)
            and isinstance(right.value, int | float)
            and not isinstance(right.value, bool)
        ):
            found.append((field_name, ordering, right.value))
    return tuple(found)


def meets_thresholds(thresholds: tuple[Threshold, ...], member: Mapping[str, Any]) -> bool:
    """False only when one of the conjuncts is certainly false for this member."""
    for field_name, ordering, bound in thresholds:
        value = member.get(field_name)
        if value is None:
            return False
        if isinstance(value, int | float) and not ordering(value, bound):
            return False
    return True
