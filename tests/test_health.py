"""Each health check on counts made by hand: data that trips it, data that does not, the
reason text, and whether it is a gate (invalid) or a reason to wait.

Every gate here has a test that fails when the gate is switched off (made to always pass).
"""

from __future__ import annotations

from datetime import date

import pytest

from xpkit.config import ExperimentConfig
from xpkit.decide.health import Check, data_checks, exposure_checks, failed_gates, run_checks
from xpkit.readout import AssignmentSummary

EXPERIMENT = ExperimentConfig(
    id="exp",
    control="control",
    weights={"control": 0.5, "treatment": 0.5},
    metrics=["m"],
    start_date=date(2024, 1, 1),
    end_date=date(2024, 1, 31),
)


def bucket(
    variant: str | None,
    n: int,
    *,
    rows: int | None = None,
    exposed: int = 0,
    complete: int | None = None,
    first: date = date(2024, 1, 2),
    last: date = date(2024, 1, 20),
) -> AssignmentSummary:
    rows = n if rows is None else rows
    return AssignmentSummary(
        variant=variant,
        n_units=n,
        n_rows=rows,
        n_duplicate_rows=rows - n,
        n_exposed=exposed,
        n_complete=n if complete is None else complete,
        first_assignment_date=first,
        last_assignment_date=last,
    )


HEALTHY = [bucket("control", 5000, exposed=3000), bucket("treatment", 5020, exposed=3010)]


def spread(summary: list[AssignmentSummary], exposed: bool = False) -> list[dict[str, int]]:
    """The buckets' units over ten assignment days, as the cells give them."""
    days: list[dict[str, int]] = [{} for _ in range(10)]
    for s in summary:
        if s.variant is None:
            continue
        total = s.n_exposed if exposed else s.n_units
        for d in range(10):
            days[d][s.variant] = total // 10 + (total % 10 if d == 9 else 0)
    return days


def checks_of(summary: list[AssignmentSummary]) -> dict[str, Check]:
    checks = run_checks(
        EXPERIMENT,
        summary,
        exposure_configured=True,
        daily=spread(summary),
        daily_exposed=spread(summary, exposed=True),
    )
    return {c.name: c for c in checks}


def test_a_healthy_experiment_passes_every_check() -> None:
    checks = checks_of(HEALTHY)
    assert all(c.passed for c in checks.values()), [c for c in checks.values() if not c.passed]
    assert not failed_gates(list(checks.values()))
    assert set(checks) == {
        "unknown_variants", "srm_assignment", "srm_assignment_chisquare", "srm_exposed",
        "srm_exposed_chisquare", "multi_variant_units", "duplicate_assignment_rows",
        "incomplete_windows", "assignments_within_dates",
    }  # fmt: skip


def test_srm_on_assignment_is_a_gate_with_the_chi_square_beside_it() -> None:
    checks = checks_of([bucket("control", 5000), bucket("treatment", 5600)])
    check = checks["srm_assignment"]
    assert not check.passed and check.gate
    assert "SAMPLE RATIO MISMATCH: always-valid p" in check.detail
    assert "over 10 assignment days" in check.detail and "control 5000" in check.detail
    reference = checks["srm_assignment_chisquare"]
    assert not reference.gate and not reference.passed
    # The always-valid p-value pays for looking every day: larger than the one-look one.
    assert check.value is not None and reference.value is not None
    assert check.value > reference.value


def test_a_mismatch_the_daily_chi_square_would_flag_by_peeking_does_not_trip_the_gate() -> None:
    # 5000 vs 5230: chi-square p ~ 0.022, a "mismatch" at 0.05 on one look of many.
    checks = checks_of([bucket("control", 5000), bucket("treatment", 5230)])
    assert checks["srm_assignment"].passed
    assert checks["srm_assignment_chisquare"].value < 0.05


def test_srm_on_exposed_units_is_a_gate() -> None:
    summary = [bucket("control", 5000, exposed=2000), bucket("treatment", 5000, exposed=2600)]
    checks = checks_of(summary)
    assert checks["srm_assignment"].passed
    assert not checks["srm_exposed"].passed and checks["srm_exposed"].gate
    assert "on exposed units" in checks["srm_exposed"].detail


def test_unknown_variant_is_a_gate() -> None:
    check = checks_of([*HEALTHY, bucket("treatmnet", 40)])["unknown_variants"]
    assert not check.passed and check.gate
    assert check.detail == "variants in the data but not in the configuration: ['treatmnet']"


def test_multi_variant_units_over_the_share_is_a_gate() -> None:
    below = checks_of([*HEALTHY, bucket(None, 50, rows=100)])["multi_variant_units"]
    assert below.passed  # 0.5% <= 1%
    above = checks_of([*HEALTHY, bucket(None, 200, rows=400)])["multi_variant_units"]
    assert not above.passed and above.gate
    assert "200 of 10220 units (1.96%) were assigned to more than one variant" in above.detail


def test_duplicate_assignment_rows_over_the_share_is_a_gate() -> None:
    ok = checks_of([bucket("control", 5000, rows=5040), bucket("treatment", 5020)])
    assert ok["duplicate_assignment_rows"].passed
    bad = checks_of([bucket("control", 5000, rows=5200), bucket("treatment", 5020)])
    check = bad["duplicate_assignment_rows"]
    assert not check.passed and check.gate
    assert "200 of 10220 assignment rows (1.96%) repeat" in check.detail


def test_assignments_outside_the_experiment_dates_is_a_gate() -> None:
    late = [bucket("control", 5000, last=date(2024, 2, 3)), bucket("treatment", 5020)]
    check = checks_of(late)["assignments_within_dates"]
    assert not check.passed and check.gate
    assert "units were assigned outside the experiment dates" in check.detail
    early = [bucket("control", 5000, first=date(2023, 12, 30)), bucket("treatment", 5020)]
    assert not checks_of(early)["assignments_within_dates"].passed


def test_incomplete_windows_mean_wait_not_invalid() -> None:
    young = [bucket("control", 5000, complete=2000), bucket("treatment", 5020, complete=2010)]
    check = checks_of(young)["incomplete_windows"]
    assert not check.passed and check.wait and not check.gate
    assert not failed_gates([check])
    assert "6010 of 10020 units (59.98%) have not completed their 7-day window" in check.detail
    assert checks_of(HEALTHY)["incomplete_windows"].passed


def test_no_assignments_is_a_gate() -> None:
    (check,) = run_checks(EXPERIMENT, [], exposure_configured=False, daily=[])
    assert check.name == "assignments_present" and not check.passed and check.gate
    assert "no assignment rows for experiment 'exp'" in check.detail


@pytest.mark.parametrize(
    ("null_units", "null_times", "passed"), [(0, 0, True), (5, 0, True), (0, 40, False)]
)
def test_assignment_rows_without_unit_or_timestamp(
    null_units: int, null_times: int, passed: bool
) -> None:
    (check, _) = data_checks(
        EXPERIMENT,
        n_rows=10_000,
        null_unit_rows=null_units,
        null_timestamp_rows=null_times,
        future_rows={},
        today=date(2024, 2, 1),
    )
    assert check.name == "null_assignment_keys" and check.gate and check.passed is passed
    if null_units or null_times:
        assert f"{null_units} assignment rows without a unit id" in check.detail
        assert f"{null_times} without a timestamp" in check.detail


def test_fact_rows_in_the_future_are_a_gate() -> None:
    args = dict(n_rows=10, null_unit_rows=0, null_timestamp_rows=0, today=date(2024, 2, 1))
    (_, clean) = data_checks(EXPERIMENT, future_rows={"daily": 0}, **args)  # type: ignore[arg-type]
    assert clean.passed
    (_, bad) = data_checks(EXPERIMENT, future_rows={"daily": 1}, **args)  # type: ignore[arg-type]
    assert bad.name == "rows_in_the_future" and not bad.passed and bad.gate
    assert "table 'daily' has 1 rows dated after today (2024-02-01)" in bad.detail


def test_exposure_log_checks() -> None:
    (info,) = exposure_checks(None)
    assert info.passed and not info.gate
    counts = {"n_exposures": 1000, "n_without_assignment": 0, "n_before_assignment": 0}
    assert all(c.passed for c in exposure_checks(counts))
    broken = {c.name: c for c in exposure_checks({**counts, "n_before_assignment": 200})}
    check = broken["exposures_before_assignment"]
    assert not check.passed and check.gate
    assert broken["exposures_without_assignment"].passed
