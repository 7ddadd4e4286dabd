"""Kubernetes resource quantities (``500m``, ``4Gi``, ``129e6``) as exact decimals.

The grammar is apimachinery's (``k8s.io/apimachinery/pkg/api/resource/quantity.go``)::

    <quantity>     ::= <sign>? <number> <suffix>
    <number>       ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>       ::= <binarySI> | <decimalSI> | <decimalExponent>
    <binarySI>     ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>    ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= e <sign>? <digits> | E <sign>? <digits>

Written here rather than imported from the ``kubernetes`` package: that one is the only
reason the operator process loaded the whole synchronous client (51 MiB resident,
docs/performance.md), and it also takes ``K``, ``NaN`` and ``Infinity``, which the API
server refuses.
"""

from __future__ import annotations

import re
from decimal import Decimal

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<binary>[KMGTPE]i)|[eE](?P<exponent>[+-]?[0-9]+)|(?P<decimal>[numkMGTPE]?))"
)
# The API server keeps a quantity's exponent within int32 and its string within 32 characters
# (isQuantity, our CRDs); longer text is refused before Decimal gets to build a huge number.
MAX_LENGTH = 64
MAX_EXPONENT = 1000  # no resource is near 10^1000; Decimal's default context would overflow at 10^999999


def parse_quantity(text: str) -> Decimal:
    """The exact value of a quantity; ValueError naming the text and the accepted forms otherwise."""
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) and len(text) <= MAX_LENGTH else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity: a decimal number with an optional suffix "
            "(n, u, m, k, M, G, T, P, E; Ki, Mi, Gi, Ti, Pi, Ei; or an exponent such as e6), e.g. 500m or 4Gi"
        )
    number = Decimal(match["number"])
    if match["binary"]:
        return number * Decimal(1024) ** _BINARY[match["binary"]]
    exponent = int(match["exponent"]) if match["exponent"] is not None else _DECIMAL[match["decimal"]]
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"{text!r}: the exponent {exponent} is out of range (at most {MAX_EXPONENT} either way)")
    return number.scaleb(exponent)
