"""Catalog pricing: one pure function shared by the valuation agent and the calculator.

Model (documented in docs/pricing.md): fill the submitted months into a contiguous monthly
series (a month missing inside the span earned nothing), keep the most recent
``window_months``, and price the advance as a multiple of typical monthly income:
  low    = 25th percentile month x multiple
  median = median month          x multiple
  high   = 75th percentile month x multiple
All arithmetic is on integers (minor units); percentiles interpolate with exact fractions
and round half-even, so the same history always yields the same cents.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from fractions import Fraction

from models.events import RoyaltyPeriod

MODEL_VERSION = "median-multiple-v1"

_PERIOD = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class PricingParams:
    multiple_months: int = 24
    window_months: int = 36
    min_months: int = 3


@dataclass(frozen=True, slots=True)
class Valuation:
    low_minor: int
    median_minor: int
    high_minor: int
    median_monthly_royalty_minor: int
    months_considered: int
    model_version: str = MODEL_VERSION


@dataclass(frozen=True, slots=True)
class ValuationFailure:
    reason: str
    months_considered: int
    model_version: str = MODEL_VERSION


@functools.lru_cache(maxsize=4096)  # a handful of distinct months recur in every history
def month_index(period: str) -> int:
    """'2025-01' -> a monotonically increasing month number; ValueError when malformed."""
    match = _PERIOD.match(period)
    if match is None:
        raise ValueError(f"period {period!r} is not a calendar month YYYY-MM")
    return int(match.group(1)) * 12 + int(match.group(2)) - 1


def monthly_series(history: tuple[RoyaltyPeriod, ...] | list[RoyaltyPeriod]) -> list[int]:
    """Contiguous monthly amounts from the first to the last submitted month, oldest first."""
    if not history:
        return []
    by_month: dict[int, int] = {}
    for item in history:
        index = month_index(item.period)
        by_month[index] = by_month.get(index, 0) + item.amount_minor
    first, last = min(by_month), max(by_month)
    return [by_month.get(index, 0) for index in range(first, last + 1)]


def _percentile(sorted_values: list[int], fraction: Fraction) -> Fraction:
    """Linear-interpolation percentile (the 'inclusive' method), exact."""
    position = fraction * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    weight = position - lower
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * weight


def _round(value: Fraction) -> int:
    return round(value)  # Fraction rounds half-to-even


def value_catalog(
    history: tuple[RoyaltyPeriod, ...] | list[RoyaltyPeriod],
    params: PricingParams = PricingParams(),
) -> Valuation | ValuationFailure:
    """Price an advance from a royalty history, or say plainly why it cannot be priced."""
    series = monthly_series(history)[-params.window_months :]
    months = len(series)
    if months == 0:
        return ValuationFailure("no_royalty_history", 0)
    if any(amount < 0 for amount in series):
        return ValuationFailure("negative_royalties", months)
    if months < params.min_months:
        return ValuationFailure("insufficient_history", months)
    ordered = sorted(series)
    median = _percentile(ordered, Fraction(1, 2))
    if median == 0:
        return ValuationFailure("zero_royalties", months)
    q1 = _percentile(ordered, Fraction(1, 4))
    q3 = _percentile(ordered, Fraction(3, 4))
    multiple = params.multiple_months
    return Valuation(
        low_minor=_round(q1 * multiple),
        median_minor=_round(median * multiple),
        high_minor=_round(q3 * multiple),
        median_monthly_royalty_minor=_round(median),
        months_considered=months,
    )
