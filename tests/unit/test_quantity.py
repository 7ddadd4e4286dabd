"""operator/quantity.py against Kubernetes' own examples and the kubernetes client's parser.

Expected values: the Kubernetes documentation's memory example ("128974848, 129e6, 129M,
128974848000m, 123Mi" are about the same value; counted by hand: 123 x 1024^2 = 128974848)
and its CPU example (0.1 is 100m); the binary and decimal suffix tables of apimachinery's
quantity.go; and, for a grid of valid quantities, the ``kubernetes`` package's
``parse_quantity`` (an independent implementation, loaded only in this test).
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from lightbox.operator.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("128974848", Decimal(128974848)),
        ("129e6", Decimal(129000000)),
        ("129M", Decimal(129000000)),
        ("128974848000m", Decimal(128974848)),
        ("123Mi", Decimal(128974848)),
        ("0.1", Decimal("0.1")),
        ("100m", Decimal("0.1")),
        ("1Ki", Decimal(1024)),
        ("1Ei", Decimal(2**60)),
        ("1k", Decimal(1000)),
        ("1E", Decimal(10**18)),
        ("5n", Decimal("0.000000005")),
        ("5u", Decimal("0.000005")),
        ("1.5Gi", Decimal(1610612736)),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+2", Decimal(2)),
        ("-2m", Decimal("-0.002")),
        ("12E3", Decimal(12000)),
        ("12e-3", Decimal("0.012")),
    ],
)
def test_the_documented_examples(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_equal_to_the_kubernetes_client_on_a_grid_of_valid_quantities() -> None:
    from kubernetes.utils.quantity import parse_quantity as client_parse

    numbers = ["0", "1", "7", "250", "1.5", ".25", "3.", "+4", "-6"]
    suffixes = ["", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "e3", "E-2", "e+1"]
    for number, suffix in itertools.product(numbers, suffixes):
        text = number + suffix
        assert parse_quantity(text) == client_parse(text), text


@pytest.mark.parametrize(
    "text",
    ["", "K", "1K", "1ki", "1KI", "Mi", "1.2.3", "--1", "+-1", "1 Gi", " 1", "1Gi ", "1e", "1e1.5", "1ei",
     "NaN", "nan", "Infinity", "inf", "0x10", "1_000", "１", "1Gi\n", "1" * 65],
)
def test_anything_else_is_refused_naming_the_text_and_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity: a decimal number with an optional suffix"):
        parse_quantity(text)


def test_an_exponent_beyond_any_decimal_is_refused_not_raised_as_an_arithmetic_error() -> None:
    for text in ("1e999999999", "1e-999999999"):
        with pytest.raises(ValueError, match="exponent .* is out of range"):
            parse_quantity(text)
