"""A small, safe evaluator for the ``${...}`` expressions and ``$name`` references of specs.

Specs never execute code: an expression is parsed with :mod:`ast` and only a fixed set
of node types is interpreted here, over numbers, booleans, strings and the spec's
params. There is no attribute access, no subscripting, no comprehension, and the only
callables are the pure functions in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any, Callable, Mapping

MAX_EXPRESSION_LENGTH = 500
#: The largest magnitude of any number in a spec, written or computed: far above any
#: width, depth or count a network has, far below what makes arithmetic on it slow.
#: Raise it here if a spec ever needs more.
MAX_NUMBER = 10**18
# Bounds keep a hostile spec from making the evaluator itself the denial of service.
# Each error names its bound, e.g. "(archforge.spec.expressions.MAX_ITEMS)": raise it here.
_HERE = "archforge.spec.expressions."
MAX_POWER_EXPONENT = 64
MAX_STRING = 10_000
MAX_ITEMS = 10_000  # elements of a list built by expressions, counted through nesting
MAX_NESTING = 32


def _round(number: Any, ndigits: Any = None) -> Any:
    # round(5, -10**9) computes 10**(10**9): refuse digits no float could need.
    if isinstance(ndigits, int) and abs(ndigits) > 400:
        raise ExpressionError(f"round() to {ndigits} digits is out of range")
    return round(number, ndigits)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "int": int,
    "float": float,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "sqrt": math.sqrt,
    "log2": math.log2,
}

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}

_REFERENCE = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_EXPRESSION = re.compile(r"^\$\{(.*)\}$", re.DOTALL)


class ExpressionError(ValueError):
    """An expression that cannot be evaluated; the message says why.

    ``hint`` (e.g. `` (did you mean 'width'?)``) is kept apart so that whoever adds where
    the expression is can put it last, as every diagnostic does; ``str()`` has both.
    """

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message + hint)
        self.message = message
        self.hint = hint


def is_templated(value: Any) -> bool:
    """Whether ``value`` is a ``$name`` reference or a ``${...}`` expression."""
    return isinstance(value, str) and (bool(_REFERENCE.match(value)) or bool(_EXPRESSION.match(value)))


def resolve_value(value: Any, scope: Mapping[str, Any]) -> Any:
    """Resolve ``$name`` and ``${expr}`` strings inside ``value`` (recursively through lists and dicts)."""
    if isinstance(value, str):
        if match := _REFERENCE.match(value):
            name = match.group(1)
            if name not in scope:
                raise _unknown(name, scope)
            return scope[name]
        if match := _EXPRESSION.match(value):
            return evaluate(match.group(1), scope)
        return value
    if isinstance(value, list):
        return [resolve_value(item, scope) for item in value]
    if isinstance(value, dict):
        return {key: resolve_value(item, scope) for key, item in value.items()}
    return value


def evaluate(source: str, scope: Mapping[str, Any]) -> Any:
    """Evaluate one expression such as ``depth - local`` or ``dim * 4 // heads``."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_LENGTH} characters ({_HERE}MAX_EXPRESSION_LENGTH)")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression '${{{source}}}': {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError(f"invalid expression '${{{source}}}'") from None
    try:
        return _Evaluator(scope).visit(tree.body)
    except ExpressionError:
        raise
    except RecursionError:
        raise ExpressionError("expression nested too deeply") from None
    except (ArithmeticError, ValueError, TypeError, MemoryError) as exc:
        raise ExpressionError(f"cannot evaluate '${{{source}}}': {exc}") from None


def _unknown(name: str, scope: Mapping[str, Any]) -> ExpressionError:
    from archforge.errors import did_you_mean

    return ExpressionError(f"unknown param '{name}'", did_you_mean(name, scope))


def _check_number(value: Any) -> Any:
    """Refuse results that are not plain finite data of a bounded size."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not abs(value) <= MAX_NUMBER:
        if isinstance(value, float) and not math.isfinite(value):
            raise ExpressionError("expression is not a finite number")
        raise ExpressionError(f"number too large: spec numbers are at most {MAX_NUMBER:.0e} in magnitude ({_HERE}MAX_NUMBER)")
    if isinstance(value, complex):  # e.g. (-8) ** 0.5
        raise ExpressionError("expression is not a real number")
    if isinstance(value, str) and len(value) > MAX_STRING:
        raise ExpressionError(f"string longer than {MAX_STRING} characters ({_HERE}MAX_STRING)")
    if isinstance(value, (list, tuple, dict)):
        _check_size(value, [MAX_ITEMS], 0)
    return value


def _check_size(value: Any, budget: list[int], depth: int) -> None:
    # Params can nest lists built from lists ([p, p]), doubling at every level; count them
    # through the nesting so that nothing later (a comparison, a repr) walks 2**60 items.
    if depth > MAX_NESTING:
        raise ExpressionError(f"value nested more than {MAX_NESTING} levels deep ({_HERE}MAX_NESTING)")
    for item in value.values() if isinstance(value, dict) else value:
        budget[0] -= 1
        if budget[0] < 0:
            raise ExpressionError(f"value with more than {MAX_ITEMS} items ({_HERE}MAX_ITEMS)")
        if isinstance(item, (list, tuple, dict)):
            _check_size(item, budget, depth + 1)


_CONVERSIONS = ("int", "float")


def _need_number(value: Any, what: str, lists: bool = False) -> None:
    """Booleans are not numbers here (``true + 1`` is not 2), and neither are strings."""
    if lists and isinstance(value, (list, tuple)):
        for item in value:
            _need_number(item, what)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        got = f"the boolean {str(value).lower()}" if isinstance(value, bool) else repr(value)
        raise ExpressionError(f"{what} needs numbers, got {got}")


_CONSTRUCTS = {
    "Attribute": "attribute access", "Subscript": "indexing", "Slice": "slicing", "Lambda": "lambda",
    "ListComp": "a comprehension", "SetComp": "a comprehension", "DictComp": "a comprehension",
    "GeneratorExp": "a comprehension", "JoinedStr": "an f-string", "FormattedValue": "an f-string",
    "NamedExpr": "assignment (:=)", "Starred": "unpacking (*)", "Dict": "a mapping", "Set": "a set",
    "Await": "await", "Yield": "yield", "YieldFrom": "yield",
}


def _construct(node: ast.AST) -> str:
    name = type(node).__name__
    if name == "Attribute":
        return f"attribute access ('.{node.attr}')"  # type: ignore[attr-defined]
    return _CONSTRUCTS.get(name, f"'{name}'")


class _Evaluator:
    def __init__(self, scope: Mapping[str, Any]):
        self.scope = scope

    def visit(self, node: ast.AST) -> Any:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise ExpressionError(f"{_construct(node)} is not allowed in expressions")
        return method(node)

    def visit_Constant(self, node: ast.Constant) -> Any:
        if not isinstance(node.value, (int, float, str, bool)) and node.value is not None:
            raise ExpressionError(f"constant {node.value!r} is not allowed")
        return _check_number(node.value)

    def visit_Name(self, node: ast.Name) -> Any:
        if node.id in self.scope:
            return self.scope[node.id]
        if node.id in ("true", "True"):
            return True
        if node.id in ("false", "False"):
            return False
        raise _unknown(node.id, self.scope)

    def visit_BinOp(self, node: ast.BinOp) -> Any:
        op = _BINARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator '{type(node.op).__name__}' is not allowed")
        left, right = self.visit(node.left), self.visit(node.right)
        if not isinstance(node.op, ast.Add) or not (isinstance(left, str) and isinstance(right, str)):
            for operand in (left, right):
                _need_number(operand, "arithmetic")
        if isinstance(node.op, ast.Pow) and abs(left) > 1 and abs(right) * math.log2(abs(left)) > MAX_POWER_EXPONENT:
            raise ExpressionError(f"{left} ** {right} is too large (more than 2 ** {MAX_POWER_EXPONENT}, {_HERE}MAX_POWER_EXPONENT)")
        return _check_number(op(left, right))

    def visit_UnaryOp(self, node: ast.UnaryOp) -> Any:
        op = _UNARY.get(type(node.op))
        if op is None:
            raise ExpressionError(f"operator '{type(node.op).__name__}' is not allowed")
        operand = self.visit(node.operand)
        if not isinstance(node.op, ast.Not):
            _need_number(operand, "arithmetic")
        return _check_number(op(operand))

    def visit_BoolOp(self, node: ast.BoolOp) -> Any:
        values = [self.visit(v) for v in node.values]
        if isinstance(node.op, ast.And):
            return all(values)
        return any(values)

    def visit_Compare(self, node: ast.Compare) -> bool:
        left = self.visit(node.left)
        for op_node, right_node in zip(node.ops, node.comparators):
            op = _COMPARE.get(type(op_node))
            if op is None:
                raise ExpressionError(f"comparison '{type(op_node).__name__}' is not allowed")
            right = self.visit(right_node)
            if not op(left, right):
                return False
            left = right
        return True

    def visit_IfExp(self, node: ast.IfExp) -> Any:
        return self.visit(node.body) if self.visit(node.test) else self.visit(node.orelse)

    def visit_List(self, node: ast.List) -> list[Any]:
        return _check_number([self.visit(item) for item in node.elts])

    visit_Tuple = visit_List

    def visit_Call(self, node: ast.Call) -> Any:
        if not isinstance(node.func, ast.Name):  # e.g. x.method(): an attribute, whatever it would call
            raise ExpressionError(f"{_construct(node.func)} is not allowed in expressions")
        if node.func.id not in FUNCTIONS:
            name = node.func.id
            raise ExpressionError(f"function '{name}' is not available; allowed: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise ExpressionError("keyword arguments are not allowed in expressions")
        args = [self.visit(arg) for arg in node.args]
        if node.func.id not in _CONVERSIONS:  # int(true) says what it means; min(true, 3) does not
            for arg in args:
                _need_number(arg, f"{node.func.id}()", lists=node.func.id in ("min", "max"))
        return _check_number(FUNCTIONS[node.func.id](*args))
