"""A small OData ``$filter`` evaluator plus ``$select`` / ``$expand`` helpers.

Supports: ``eq ne gt ge lt le``, ``and or not``, parentheses, string / number /
bool / null / datetime / guid literals, property paths with ``/``,
``startswith()``, ``endswith()``, ``contains()`` and lambda ``any()`` / ``all()``
(``singleValueExtendedProperties/Any(ep: ep/id eq '...' and ep/value eq '...')``).
String comparison is case-insensitive, like Exchange.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .httptypes import GraphError, parse_iso

_TOKEN_RE = re.compile(
    r"\s*(?:"
    r"(?P<str>'(?:[^']|'')*')"
    r"|(?P<dt>\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2})?)"
    r"|(?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<punc>[(),:])"
    r"|(?P<name>[A-Za-z_@][A-Za-z0-9_./@-]*)"
    r")"
)

_COMPARE = {"eq", "ne", "gt", "ge", "lt", "le"}

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(GraphError):
    def __init__(self, message: str) -> None:
        super().__init__(400, "BadRequest", f"Invalid filter clause: {message}")


def _tokenize(text: str) -> list[tuple[str, Any]]:
    pos = 0
    out: list[tuple[str, Any]] = []
    text = text.strip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"syntax error at position {pos}")
        pos = m.end()
        kind = m.lastgroup
        val = m.group(kind)  # type: ignore[arg-type]
        if kind == "str":
            out.append(("lit", val[1:-1].replace("''", "'")))
        elif kind == "dt":
            out.append(("lit", parse_iso(val)))
        elif kind == "guid":
            out.append(("lit", val))
        elif kind == "num":
            out.append(("lit", float(val) if "." in val else int(val)))
        elif kind == "punc":
            out.append(("p", val))
        else:
            low = val.lower()
            if low in ("true", "false"):
                out.append(("lit", low == "true"))
            elif low == "null":
                out.append(("lit", None))
            else:
                out.append(("name", val))
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def get_ci(obj: Any, key: str) -> Any:
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    low = key.lower()
    for k, v in obj.items():
        if k.lower() == low:
            return v
    return None


def _norm(v: Any) -> Any:
    if isinstance(v, str):
        if len(v) >= 19 and v[4:5] == "-" and v[10:11] == "T":
            try:
                return parse_iso(v)
            except ValueError:
                return v.lower()
        return v.lower()
    return v


def _compare(op: str, a: Any, b: Any) -> bool:
    a, b = _norm(a), _norm(b)
    if op == "eq":
        return a == b
    if op == "ne":
        return a != b
    if a is None or b is None:
        return False
    try:
        if op == "gt":
            return a > b
        if op == "ge":
            return a >= b
        if op == "lt":
            return a < b
        return a <= b
    except TypeError:
        return False


class _Parser:
    def __init__(self, tokens: list[tuple[str, Any]]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise FilterError("unexpected end of expression")
        self.i += 1
        return tok

    def expect_p(self, p: str) -> None:
        tok = self.take()
        if tok != ("p", p):
            raise FilterError(f"expected {p!r}")

    def is_kw(self, kw: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "name" and str(tok[1]).lower() == kw

    def parse(self) -> Callable[[dict[str, Any]], Any]:
        expr = self.parse_or()
        if self.peek() is not None:
            raise FilterError("trailing tokens")
        return expr

    def parse_or(self) -> Callable[[dict[str, Any]], Any]:
        left = self.parse_and()
        while self.is_kw("or"):
            self.take()
            right = self.parse_and()
            left = (lambda a, b: lambda env: bool(a(env)) or bool(b(env)))(left, right)
        return left

    def parse_and(self) -> Callable[[dict[str, Any]], Any]:
        left = self.parse_unary()
        while self.is_kw("and"):
            self.take()
            right = self.parse_unary()
            left = (lambda a, b: lambda env: bool(a(env)) and bool(b(env)))(left, right)
        return left

    def parse_unary(self) -> Callable[[dict[str, Any]], Any]:
        if self.is_kw("not"):
            self.take()
            inner = self.parse_unary()
            return lambda env: not inner(env)
        left = self.parse_operand()
        tok = self.peek()
        if tok and tok[0] == "name" and str(tok[1]).lower() in _COMPARE:
            op = str(self.take()[1]).lower()
            right = self.parse_operand()
            return lambda env: _compare(op, left(env), right(env))
        return left

    def parse_operand(self) -> Callable[[dict[str, Any]], Any]:
        tok = self.take()
        if tok == ("p", "("):
            inner = self.parse_or()
            self.expect_p(")")
            return inner
        if tok[0] == "lit":
            val = tok[1]
            return lambda env: val
        if tok[0] != "name":
            raise FilterError(f"unexpected {tok[1]!r}")
        name = str(tok[1])
        nxt = self.peek()
        low = name.lower()
        if nxt == ("p", "(") and low in ("startswith", "endswith", "contains"):
            self.take()
            a = self.parse_operand()
            self.expect_p(",")
            b = self.parse_operand()
            self.expect_p(")")

            def fn(env: dict[str, Any], a=a, b=b, low=low) -> bool:
                x, y = a(env), b(env)
                if not isinstance(x, str) or not isinstance(y, str):
                    return False
                x, y = x.lower(), y.lower()
                if low == "startswith":
                    return x.startswith(y)
                if low == "endswith":
                    return x.endswith(y)
                return y in x

            return fn
        path = name.split("/")
        if nxt == ("p", "(") and path[-1].lower() in ("any", "all"):
            self.take()
            quant = path[-1].lower()
            coll_path = path[:-1]
            var_tok = self.take()
            if var_tok[0] != "name":
                raise FilterError("lambda variable expected")
            var = str(var_tok[1])
            self.expect_p(":")
            body = self.parse_or()
            self.expect_p(")")

            def lam(
                env: dict[str, Any], coll_path=coll_path, var=var, body=body, quant=quant
            ) -> bool:
                coll = _resolve(env, coll_path)
                if not isinstance(coll, list):
                    return False
                results = (
                    bool(body({**env, "$vars": {**env.get("$vars", {}), var: el}})) for el in coll
                )
                return any(results) if quant == "any" else all(results)

            return lam
        return lambda env: _resolve(env, path)


def _resolve(env: dict[str, Any], path: list[str]) -> Any:
    variables = env.get("$vars", {})
    if path and path[0] in variables:
        cur: Any = variables[path[0]]
        rest = path[1:]
    else:
        cur = env["$item"]
        rest = path
    for part in rest:
        cur = get_ci(cur, part)
        if cur is None:
            return None
    return cur


def compile_filter(text: str) -> Predicate:
    """Compile a ``$filter`` expression into a predicate over a JSON object."""
    expr = _Parser(_tokenize(text)).parse()
    return lambda item: bool(expr({"$item": item}))


# --------------------------------------------------------------------------- $select


def parse_select(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [p.strip() for p in value.split(",") if p.strip()]


def apply_select(
    obj: dict[str, Any],
    select: list[str] | None,
    always: tuple[str, ...] = ("id", "@odata.etag", "@odata.type"),
) -> dict[str, Any]:
    """Project ``obj`` on ``select`` (case-insensitive) and drop private ``_`` keys."""
    public = {k: v for k, v in obj.items() if not k.startswith("_")}
    if not select:
        return public
    wanted = {s.lower() for s in select}
    return {k: v for k, v in public.items() if k.lower() in wanted or k in always}


def parse_top(value: str | None, maximum: int = 999) -> int | None:
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError as exc:
        raise GraphError(400, "BadRequest", f"Invalid $top value '{value}'.") from exc
    if n < 0:
        raise GraphError(400, "BadRequest", "$top must be a non-negative integer.")
    return min(n, maximum)


_MAXPAGE_RE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)


def prefer_maxpagesize(prefer: str | None) -> int | None:
    if not prefer:
        return None
    m = _MAXPAGE_RE.search(prefer)
    return int(m.group(1)) if m else None


_IMMUTABLE_RE = re.compile(r"IdType\s*=\s*\"?ImmutableId\"?", re.IGNORECASE)


def prefers_immutable_id(prefer: str | None) -> bool:
    """`Prefer: IdType="ImmutableId"` (possibly among other preferences)."""
    return bool(prefer and _IMMUTABLE_RE.search(prefer))
