"""Health checks: is the experiment's data fit to be analysed at all?

Input is the per-variant assignment summary (counts only; the moments statement's cells
summed by :func:`xpkit.readout.assignment_counts`); output is a list of :class:`Check`
rows. A failed *gate* makes every result of the experiment invalid: xpkit prints the reason first and exits 3 rather than show a
clean-looking number computed on a broken split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from xpkit.config import ExperimentConfig
from xpkit.readout import AssignmentSummary
from xpkit.stats.srm import sequential_srm_test, srm_test


@dataclass(frozen=True)
class Check:
    """One health check. A failed ``gate`` makes every result invalid; a failed ``wait``
    check means the experiment is healthy but not ready to decide (keep running)."""

    name: str
    value: float | None
    threshold: float | None
    passed: bool
    gate: bool
    detail: str
    wait: bool = False


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def srm_checks(
    name: str,
    daily: Sequence[Mapping[str, int]],
    weights: Mapping[str, float],
    threshold: float,
    what: str,
) -> list[Check]:
    """The SRM gate and, beside it for reference, the one-look chi-square.

    xpkit runs every day, so a fixed-threshold chi-square checked on every run is itself
    peeking (its false-alarm rate over 28 daily runs is several times its threshold). The
    gate is the always-valid test of Lindon & Malek (2022) over the cumulative counts by
    assignment day (:func:`xpkit.stats.srm.sequential_srm_test`): however many runs look,
    a healthy split trips it with probability at most ``threshold``.
    """
    looks = [{v: day.get(v, 0) for v in weights} for day in daily]
    counts = {v: sum(day[v] for day in looks) for v in weights}
    total = sum(counts.values())
    if total == 0:
        return [Check(name, None, threshold, False, True, f"no {what} units: nothing to test")]
    sequential = sequential_srm_test(looks, weights, cumulative=False)
    chi2 = srm_test(counts, weights)
    observed = ", ".join(
        f"{v} {counts[v]} ({_share(counts[v], total):.2%} vs {weights[v]:.2%})" for v in weights
    )
    passed = sequential.p_value >= threshold
    verdict = "split matches the configured weights" if passed else "SAMPLE RATIO MISMATCH"
    return [
        Check(
            name,
            sequential.p_value,
            threshold,
            passed,
            True,
            f"{verdict}: always-valid p = {sequential.p_value:.3g} over {len(looks)} "
            f"assignment days on {what} units: {observed}",
        ),
        Check(
            f"{name}_chisquare",
            chi2.p_value,
            threshold,
            chi2.p_value >= threshold,
            False,
            f"for reference, the one-look chi-square p = {chi2.p_value:.3g} (not a gate: "
            "checked on every daily run it raises false alarms)",
        ),
    ]


def run_checks(
    experiment: ExperimentConfig,
    summary: Sequence[AssignmentSummary],
    *,
    exposure_configured: bool,
    daily: Sequence[Mapping[str, int]],
    daily_exposed: Sequence[Mapping[str, int]] = (),
) -> list[Check]:
    """Every health check for one experiment, gates and information alike.

    ``daily``/``daily_exposed`` are the units (exposed units) per variant by assignment
    day, oldest first: the looks of the SRM gate.
    """
    checks: list[Check] = []
    single = [s for s in summary if s.variant is not None]
    multi = [s for s in summary if s.variant is None]
    n_single = sum(s.n_units for s in single)
    n_multi = sum(s.n_units for s in multi)
    n_units = n_single + n_multi

    if n_units == 0:
        return [
            Check(
                "assignments_present",
                0,
                None,
                False,
                True,
                f"no assignment rows for experiment {experiment.id!r}: check the id and the "
                f"assignment table",
            )
        ]

    unknown = sorted(
        s.variant for s in single if s.variant is not None and s.variant not in experiment.weights
    )
    checks.append(
        Check(
            "unknown_variants",
            float(len(unknown)),
            0,
            not unknown,
            True,
            f"variants in the data but not in the configuration: {unknown}"
            if unknown
            else "every variant in the data is configured",
        )
    )
    checks += srm_checks(
        "srm_assignment", daily, experiment.weights, experiment.srm_threshold, "assigned"
    )
    if exposure_configured:
        checks += srm_checks(
            "srm_exposed", daily_exposed, experiment.weights, experiment.srm_threshold, "exposed"
        )

    share_multi = _share(n_multi, n_units)
    checks.append(
        Check(
            "multi_variant_units",
            share_multi,
            experiment.max_multi_variant_share,
            share_multi <= experiment.max_multi_variant_share,
            True,
            f"{n_multi} of {n_units} units ({share_multi:.2%}) were assigned to more than one "
            f"variant; they are excluded from every metric",
        )
    )
    n_rows = sum(s.n_rows for s in summary)
    n_dupes = sum(s.n_duplicate_rows for s in single)
    share_dupes = _share(n_dupes, n_rows)
    checks.append(
        Check(
            "duplicate_assignment_rows",
            share_dupes,
            experiment.max_duplicate_row_share,
            share_dupes <= experiment.max_duplicate_row_share,
            True,
            f"{n_dupes} of {n_rows} assignment rows ({share_dupes:.2%}) repeat a unit's "
            f"assignment to the same variant; the earliest one is used",
        )
    )
    n_complete = sum(s.n_complete for s in single)
    share_incomplete = _share(n_single - n_complete, n_single)
    # Immature is not invalid: units still inside their window are a reason to wait,
    # not a broken experiment.
    checks.append(
        Check(
            "incomplete_windows",
            share_incomplete,
            experiment.max_incomplete_share,
            share_incomplete <= experiment.max_incomplete_share,
            False,
            f"{n_single - n_complete} of {n_single} units ({share_incomplete:.2%}) have not "
            f"completed their {experiment.window[1] + 1}-day window yet and are not analysed",
            wait=True,
        )
    )
    if experiment.start_date or experiment.end_date:
        firsts = [s.first_assignment_date for s in summary if s.first_assignment_date]
        lasts = [s.last_assignment_date for s in summary if s.last_assignment_date]
        early = experiment.start_date is not None and min(firsts) < experiment.start_date
        late = experiment.end_date is not None and max(lasts) > experiment.end_date
        span = f"{min(firsts)} .. {max(lasts)}"
        checks.append(
            Check(
                "assignments_within_dates",
                float(early or late),
                0,
                not (early or late),
                True,
                f"assignments span {span}, configured {experiment.start_date} .. "
                f"{experiment.end_date}"
                + (
                    ""
                    if not (early or late)
                    else ": units were assigned outside the experiment dates"
                ),
            )
        )
    return checks


def data_checks(
    experiment: ExperimentConfig,
    *,
    n_rows: int,
    null_unit_rows: int,
    null_timestamp_rows: int,
    future_rows: Mapping[str, int],
    today: date,
) -> list[Check]:
    """Defects of the data itself: assignment rows without a unit or a timestamp (left
    out, never merged into one unit), and fact rows dated after today."""
    n_null = null_unit_rows + null_timestamp_rows
    share = _share(n_null, n_rows + n_null)
    checks = [
        Check(
            "null_assignment_keys",
            share,
            experiment.max_null_key_share,
            share <= experiment.max_null_key_share,
            True,
            f"{null_unit_rows} assignment rows without a unit id and {null_timestamp_rows} "
            f"without a timestamp ({share:.2%} of the experiment's rows) are left out"
            if n_null
            else "every assignment row has a unit id and a timestamp",
        )
    ]
    future = {table: n for table, n in future_rows.items() if n}
    checks.append(
        Check(
            "rows_in_the_future",
            float(sum(future.values())),
            0,
            not future,
            True,
            "; ".join(
                f"table {table!r} has {n} rows dated after today ({today}): dates in the "
                f"future point at a broken date column or clock; fix or filter those rows"
                for table, n in future.items()
            )
            or f"no fact rows dated after today ({today})",
        )
    )
    return checks


def exposure_checks(counts: Mapping[str, int] | None, *, flagged: bool = True) -> list[Check]:
    """Exposure events with no assignment, or before it, point at broken logging.

    ``flagged``: the assignment table has an exposure column (``exposed`` is not false).
    """
    if counts is None:
        detail = (
            "no exposure log configured ([exposures] in the config): exposure comes from "
            "the assignment table's flag, so exposures without or before an assignment "
            "cannot be checked"
        )
        if not flagged:
            detail = (
                "no exposure column ([assignments] exposed = false) and no exposure log: "
                "intent-to-treat only, without the TOT population, the complier effect or "
                "the exposed-split check"
            )
        return [Check("exposure_log", None, None, True, False, detail)]
    total = int(counts["n_exposures"] or 0)
    out = []
    for name, key, what in (
        ("exposures_without_assignment", "n_without_assignment", "belong to units never assigned"),
        ("exposures_before_assignment", "n_before_assignment", "happened before the assignment"),
    ):
        bad = int(counts[key] or 0)
        out.append(
            Check(
                name,
                float(bad),
                0,
                bad == 0,
                True,
                f"{bad} of {total} exposure events {what}"
                + ("" if bad == 0 else ": the exposure logging is broken"),
            )
        )
    return out


def sample_checks(experiment: ExperimentConfig, variants: list[str]) -> list[Check]:
    """Every configured variant must have analysable units once windows are applied."""
    missing = [v for v in experiment.weights if v not in variants]
    if not missing:
        return []
    return [
        Check(
            "variants_with_complete_windows",
            float(len(missing)),
            0,
            False,
            True,
            f"no unit with a complete window in variant(s) {missing}: nothing to compare yet",
        )
    ]


def failed_gates(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.gate and not c.passed]
