from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from models.events import RoyaltyPeriod
from models.pricing import PricingParams, Valuation, ValuationFailure, month_index, monthly_series, value_catalog


def months(amounts: list[int], start_year: int = 2024) -> list[RoyaltyPeriod]:
    out = []
    for i, amount in enumerate(amounts):
        year, month = divmod(i, 12)
        out.append(RoyaltyPeriod(period=f"{start_year + year}-{month + 1:02d}", amount_minor=amount))
    return out


def test_median_times_multiple_with_quartile_range() -> None:
    result = value_catalog(months([100, 200, 300, 400, 500]))
    assert isinstance(result, Valuation)
    assert result.median_monthly_royalty_minor == 300
    assert (result.low_minor, result.median_minor, result.high_minor) == (200 * 24, 300 * 24, 400 * 24)
    assert result.months_considered == 5


def test_even_count_median_rounds_half_to_even_in_minor_units() -> None:
    result = value_catalog(months([1, 2, 3, 4]), PricingParams(multiple_months=1))
    assert isinstance(result, Valuation)
    assert result.median_minor == 2  # 2.5 -> 2 (banker's rounding, exact Fraction arithmetic)


def test_missing_months_inside_the_span_count_as_zero() -> None:
    history = [RoyaltyPeriod("2025-01", 100), RoyaltyPeriod("2025-04", 100)]
    assert monthly_series(history) == [100, 0, 0, 100]


def test_only_the_most_recent_window_is_considered() -> None:
    result = value_catalog(months([10_000] * 24 + [100] * 36))
    assert isinstance(result, Valuation)
    assert result.median_monthly_royalty_minor == 100 and result.months_considered == 36


def test_unpriceable_histories_fail_explicitly() -> None:
    assert value_catalog([]) == ValuationFailure("no_royalty_history", 0)
    assert value_catalog(months([0, 0, 0, 0])) == ValuationFailure("zero_royalties", 4)
    assert value_catalog(months([100, 200])) == ValuationFailure("insufficient_history", 2)


def test_month_index_rejects_malformed_periods() -> None:
    assert month_index("2025-12") - month_index("2025-01") == 11
    for bad in ("2025-13", "2025-1", "25-01", "2025/01", ""):
        try:
            month_index(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


@given(st.lists(st.integers(min_value=0, max_value=10**10), min_size=3, max_size=60))
def test_range_is_ordered_and_deterministic(amounts: list[int]) -> None:
    first = value_catalog(months(amounts))
    assert first == value_catalog(months(amounts))
    if isinstance(first, Valuation):
        assert 0 <= first.low_minor <= first.median_minor <= first.high_minor
        assert all(isinstance(v, int) for v in (first.low_minor, first.median_minor, first.high_minor))
    else:
        assert first.reason == "zero_royalties"
