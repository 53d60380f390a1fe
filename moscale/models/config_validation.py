"""The one place where MoScale configs check the types and ranges of their fields.

A config.json edited by hand (`"num_codes": "32"`, `"code_dim": 16.5`) would otherwise reach the model and fail
deep inside torch with a message that names neither the field nor the file. Each config lists a `Rule` per
`__init__` argument and calls `check_fields` first thing, so a bad value is refused with the config, the field, the
value and what the field accepts.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """What one field accepts: `expected` is said in the error ("an integer >= 1"); a value that fails `has_type`
    raises TypeError, one that has the type but fails `in_range` raises ValueError."""

    expected: str
    has_type: Callable[[object], bool]
    in_range: Callable[[object], bool] = lambda value: True


def _is_integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(at_least, at_most, above) -> tuple[str, Callable[[object], bool]]:
    """Words for a range and its test; bounds left as None do not apply."""
    if at_least is not None and at_most is not None:
        words = f" in [{at_least}, {at_most}]"
    elif above is not None:
        words = f" > {above}"
    elif at_least is not None:
        words = f" >= {at_least}"
    elif at_most is not None:
        words = f" <= {at_most}"
    else:
        words = ""

    def test(value) -> bool:
        return (
            (at_least is None or value >= at_least)
            and (at_most is None or value <= at_most)
            and (above is None or value > above)
        )

    return words, test


def integer(at_least: int | None = None, at_most: int | None = None) -> Rule:
    words, test = _bounds(at_least, at_most, None)
    return Rule(f"an integer{words}", _is_integer, test)


def number(at_least: float | None = None, at_most: float | None = None, above: float | None = None) -> Rule:
    """A finite real number (an integer is one too)."""
    words, test = _bounds(at_least, at_most, above)
    return Rule(f"a finite number{words}", _is_number, test)


def probability() -> Rule:
    return number(0, 1)


def boolean() -> Rule:
    return Rule("true or false", lambda value: isinstance(value, bool))


def string() -> Rule:
    return Rule("a string", lambda value: isinstance(value, str))


def one_of(*choices: str) -> Rule:
    return Rule(f"one of {', '.join(map(repr, choices))}", lambda value: isinstance(value, str), choices.__contains__)


def sequence(item: Rule, length: int | None = None) -> Rule:
    """A list or tuple (JSON gives lists) of `length` items (any number if None), each following `item`."""
    count = "a list" if length is None else f"a list of {length} items"
    return Rule(
        f"{count} (each {item.expected})",
        lambda value: isinstance(value, (list, tuple)) and all(item.has_type(v) for v in value),
        lambda value: (length is None or len(value) == length) and all(item.in_range(v) for v in value),
    )


def optional(rule: Rule) -> Rule:
    """`rule`, or None (null in JSON)."""
    return Rule(
        f"{rule.expected} or null",
        lambda value: value is None or rule.has_type(value),
        lambda value: value is None or rule.in_range(value),
    )


def check_fields(
    owner: str, values: Mapping[str, object], rules: Mapping[str, Rule], saved_in: str = "config.json"
) -> None:
    """Refuse the first of `values` (a config's `__init__` arguments) that breaks its rule in `rules`.

    `owner` names the config class in the message; `saved_in` is the file such values are loaded from (a config is
    most often built from a saved one), which the message names too.
    """
    for name, rule in rules.items():
        value = values[name]
        if rule.has_type(value) and rule.in_range(value):
            continue
        error = TypeError if not rule.has_type(value) else ValueError
        raise error(
            f"{owner}: {name} must be {rule.expected}, got {reprlib.repr(value)} ({type(value).__name__}); "
            f"correct it in the {saved_in} it was loaded from, or in the argument passed"
        )
