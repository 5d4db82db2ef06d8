"""The core pack: constants, arithmetic, comparison, strings, JSON/dicts, lists, switches.

Every node here is a small pure function; its first docstring line is what
``nodegraph nodes`` shows. Nodes whose cost is bounded by the data they are given
declare ``cost="cheap"``, so that a graph's first run already fuses them into shared
tasks (``execution.fusion``). ``power``, ``range`` and ``format`` do not: their params
alone can make them arbitrarily slow (a huge exponent, stop or field width), and ``log``
writes to the run's log.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from integration.graph import ExecutionContext, Port, node
from integration.graph.transforms import parse_json_path

PACK = "core"

# constants ---------------------------------------------------------------------------


@node(name="int", cost="cheap")
def int_(value: int) -> int:
    """An integer constant."""
    return value


@node(name="float", cost="cheap")
def float_(value: float) -> float:
    """A floating-point constant."""
    return float(value)


@node(cost="cheap")
def string(value: str) -> str:
    """A string constant."""
    return value


@node(name="bool", cost="cheap")
def bool_(value: bool) -> bool:
    """A boolean constant."""
    return value


@node(cost="cheap")
def value(value: Any) -> Any:
    """Any JSON-compatible constant: a number, string, list or mapping."""
    return value


# arithmetic --------------------------------------------------------------------------


@node(cost="cheap")
def add(a: float, b: float) -> float:
    """a + b."""
    return a + b


@node(cost="cheap")
def subtract(a: float, b: float) -> float:
    """a - b."""
    return a - b


@node(cost="cheap")
def multiply(a: float, b: float) -> float:
    """a * b."""
    return a * b


@node(cost="cheap")
def divide(a: float, b: float) -> float:
    """a / b (fails on division by zero)."""
    return a / b


@node(cost="cheap")
def floor_divide(a: float, b: float) -> float:
    """a // b."""
    return a // b


@node(cost="cheap")
def modulo(a: float, b: float) -> float:
    """a % b."""
    return a % b


@node
def power(base: float, exponent: float) -> float:
    """base ** exponent."""
    return base**exponent


@node(cost="cheap")
def negate(a: float) -> float:
    """-a."""
    return -a


@node(name="abs", cost="cheap")
def abs_(a: float) -> float:
    """The absolute value of a."""
    return abs(a)


@node(name="round", cost="cheap")
def round_(a: float, digits: Annotated[int, Port(min=0, max=15)] = 0) -> float:
    """a rounded to a number of decimal digits."""
    return round(a, digits)


@node(name="min", cost="cheap")
def min_(a: float, b: float) -> float:
    """The smaller of a and b."""
    return min(a, b)


@node(name="max", cost="cheap")
def max_(a: float, b: float) -> float:
    """The larger of a and b."""
    return max(a, b)


@node(name="sum", cost="cheap")
def sum_(values: list) -> float:
    """The sum of a list of numbers."""
    return sum(values)


@node(cost="cheap")
def to_int(value: Any) -> int:
    """Convert a number or numeric string to an integer (truncating)."""
    return int(value)


@node(cost="cheap")
def to_float(value: Any) -> float:
    """Convert a number or numeric string to a float."""
    return float(value)


# comparison and logic ----------------------------------------------------------------


@node(cost="cheap")
def equal(a: Any, b: Any) -> bool:
    """a == b."""
    return bool(a == b)


@node(cost="cheap")
def not_equal(a: Any, b: Any) -> bool:
    """a != b."""
    return bool(a != b)


@node(cost="cheap")
def less(a: float, b: float) -> bool:
    """a < b."""
    return a < b


@node(cost="cheap")
def less_equal(a: float, b: float) -> bool:
    """a <= b."""
    return a <= b


@node(cost="cheap")
def greater(a: float, b: float) -> bool:
    """a > b."""
    return a > b


@node(cost="cheap")
def greater_equal(a: float, b: float) -> bool:
    """a >= b."""
    return a >= b


@node(name="and", cost="cheap")
def and_(a: bool, b: bool) -> bool:
    """Logical and."""
    return a and b


@node(name="or", cost="cheap")
def or_(a: bool, b: bool) -> bool:
    """Logical or."""
    return a or b


@node(name="not", cost="cheap")
def not_(a: bool) -> bool:
    """Logical not."""
    return not a


# strings -----------------------------------------------------------------------------


@node(name="format")
def format_(template: str, values: dict | None = None) -> str:
    """Fill a str.format template, e.g. 'Hello {name}', from a mapping of values."""
    return template.format(**(values or {}))


@node(cost="cheap")
def concat(a: str, b: str, separator: str = "") -> str:
    """Join two strings with an optional separator."""
    return f"{a}{separator}{b}"


@node(cost="cheap")
def upper(text: str) -> str:
    """The text in upper case."""
    return text.upper()


@node(cost="cheap")
def lower(text: str) -> str:
    """The text in lower case."""
    return text.lower()


@node(cost="cheap")
def strip(text: str) -> str:
    """The text without leading and trailing whitespace."""
    return text.strip()


@node(cost="cheap")
def replace(text: str, old: str, new: str) -> str:
    """Replace every occurrence of old with new."""
    return text.replace(old, new)


@node(cost="cheap")
def split(text: str, separator: str | None = None) -> list:
    """Split text into a list (on whitespace by default)."""
    return text.split(separator)


@node(cost="cheap")
def join(items: list, separator: str = "") -> str:
    """Join a list of values into one string."""
    return separator.join(str(item) for item in items)


@node(cost="cheap")
def to_string(value: Any) -> str:
    """str(value)."""
    return str(value)


@node(cost="cheap")
def length(value: Any) -> int:
    """The length of a string, list or mapping."""
    return len(value)


# JSON and dicts ----------------------------------------------------------------------


@node(cost="cheap")
def json_parse(text: str) -> Any:
    """Parse a JSON string."""
    return json.loads(text)


@node(cost="cheap")
def json_dump(data: Any, indent: Annotated[int, Port(min=0, max=8)] | None = None) -> str:
    """Serialise a value to a JSON string (keys sorted)."""
    return json.dumps(data, indent=indent, sort_keys=True)


@node(cost="cheap")
def dict_get(data: dict, key: str, default: Any = None) -> Any:
    """data[key], or default when the key is missing."""
    return data.get(key, default)


@node(cost="cheap")
def dict_set(data: dict, key: str, value: Any) -> dict:
    """A copy of data with data[key] = value."""
    return {**data, key: value}


@node(cost="cheap")
def dict_merge(a: dict, b: dict) -> dict:
    """A copy of a updated with b."""
    return {**a, **b}


@node(cost="cheap")
def dict_keys(data: dict) -> list:
    """The keys of a mapping, in order."""
    return list(data)


@node(cost="cheap")
def dict_values(data: dict) -> list:
    """The values of a mapping, in key order."""
    return list(data.values())


@node(cost="cheap")
def json_path(data: Any, path: str) -> Any:
    """The value at a path like '$.a.b[0]'."""
    for step in parse_json_path(path):
        data = data[step]
    return data


# lists -------------------------------------------------------------------------------


@node(name="list", cost="cheap")
def list_(items: list) -> list:
    """A list constant."""
    return list(items)


@node(cost="cheap")
def list_get(items: list, index: int) -> Any:
    """items[index]; negative indexes count from the end."""
    return items[index]


@node(cost="cheap")
def list_append(items: list, item: Any) -> list:
    """A copy of items with item appended."""
    return [*items, item]


@node(cost="cheap")
def list_concat(a: list, b: list) -> list:
    """a followed by b."""
    return [*a, *b]


@node(cost="cheap")
def list_slice(items: list, start: int | None = None, stop: int | None = None) -> list:
    """items[start:stop]."""
    return items[start:stop]


@node(name="range")
def range_(start: int = 0, stop: int = 10, step: Annotated[int, Port(min=1)] = 1) -> list:
    """The integers from start up to (not including) stop."""
    return list(range(start, stop, step))


@node(cost="cheap")
def sort(items: list, reverse: bool = False) -> list:
    """A sorted copy of items."""
    return sorted(items, reverse=reverse)


@node(cost="cheap")
def reverse(items: list) -> list:
    """A reversed copy of items."""
    return items[::-1]


# control -----------------------------------------------------------------------------


@node(cost="cheap")
def switch(condition: bool, if_true: Any, if_false: Any) -> Any:
    """if_true when condition holds, else if_false."""
    return if_true if condition else if_false


@node(cost="cheap")
def select(options: list, index: Annotated[int, Port(min=0)] = 0) -> Any:
    """Pick one of several options by index."""
    return options[index]


@node
def log(value: Any, ctx: ExecutionContext, message: str = "") -> Any:
    """Log a value to the run's log and pass it through unchanged."""
    ctx.logger.info("%s%r", f"{message}: " if message else "", value)
    return value
