"""Kubernetes resource quantities ("500m", "0.5", "128Mi", "1G", "1e3") <-> base units.

The API stores integers in base units (``cpu_millis``, ``*_bytes``) so that the
scheduler adds and compares plain numbers; manifests keep the Kubernetes
notation people already write. Like Kubernetes, a value finer than the base
unit is rounded up ("0.1m" of CPU is 1m, half a byte is a byte), so a request
is never silently lowered.

Grammar (as in k8s.io/apimachinery resource.Quantity)::

    quantity ::= signed-number suffix
    suffix   ::= Ki | Mi | Gi | Ti | Pi | Ei | m | "" | k | M | G | T | P | E | (e|E) signed-int
"""

from __future__ import annotations

import decimal
import math
import re
from decimal import Decimal

INT64_MAX = (1 << 63) - 1
INT64_MIN = -(1 << 63)

_BINARY = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_DECIMAL = {"m": Decimal("0.001"), "": Decimal(1), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6}
_DECIMAL |= {"G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18}
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<binary>Ki|Mi|Gi|Ti|Pi|Ei)|[eE](?P<exponent>[+-]?\d{1,3})|(?P<decimal>[mkMGTPE]?))"
)
# Wide enough for any int64 in any unit, so rounding happens only where we say.
_CONTEXT = decimal.Context(prec=80, Emax=999, Emin=-999)


class QuantityError(ValueError):
    """Not a quantity, or not one that fits the API's 64-bit integers."""


def parse(value: object) -> Decimal:
    """A quantity (string, or a bare JSON/YAML number) -> its exact value in plain units."""
    if isinstance(value, bool):
        raise QuantityError("not a quantity")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise QuantityError("not a finite number")
        return Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError("not a quantity")
    m = _QUANTITY.fullmatch(value)
    if m is None:
        raise QuantityError("not a quantity")
    number = Decimal(m["number"])
    if m["binary"]:
        return _CONTEXT.multiply(number, Decimal(_BINARY[m["binary"]]))
    if m["exponent"] is not None:
        return _CONTEXT.multiply(number, _CONTEXT.power(Decimal(10), int(m["exponent"])))
    return _CONTEXT.multiply(number, _DECIMAL[m["decimal"]])


def _to_int64(value: object, scale: int) -> int:
    try:
        amount = _CONTEXT.multiply(parse(value), Decimal(scale))
        whole = int(amount.to_integral_value(rounding=decimal.ROUND_CEILING))
    except decimal.DecimalException:
        raise QuantityError("too large") from None
    if not INT64_MIN <= whole <= INT64_MAX:
        raise QuantityError("too large")
    return whole


def cpu_millis(value: object) -> int:
    """CPU in cores ("0.5", "500m", 2) -> thousandths of a core."""
    return _to_int64(value, 1000)


def whole_units(value: object) -> int:
    """Bytes (or any count) ("128Mi", "1G", 1e3) -> an integer, rounded up."""
    return _to_int64(value, 1)


def format_cpu(millis: int) -> str:
    """2000 -> "2", 500 -> "500m": whole cores when exact, as kubectl prints them."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(amount: int) -> str:
    """The shortest exact notation: 134217728 -> "128Mi", 10**9 -> "1G", 1500 -> "1500"."""
    if amount == 0:
        return "0"
    candidates = [f"{amount // m}{suffix}" for suffix, m in reversed(_BINARY.items()) if amount % m == 0]
    candidates += [
        f"{amount // int(m)}{suffix}"
        for suffix, m in reversed(_DECIMAL.items())
        if m >= 1000 and amount % int(m) == 0
    ]
    candidates.append(str(amount))
    return min(candidates, key=len)
