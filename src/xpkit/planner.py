"""A power plan for one metric from an experiment's own data, through the same SQL a run uses.

Orders the stages as the runner does (metrics, schema check, dates, the moments statement,
moments) with a pre-period as long as the analysis window, then hands the moments to
:func:`xpkit.decide.planning.plan`.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from xpkit.compile import compile_moments
from xpkit.config import LoadedConfig
from xpkit.decide.planning import DEFAULT_PLANNED_LOOKS, PowerPlan, plan
from xpkit.decide.stopping import family_size
from xpkit.define.registry import MetricRegistry
from xpkit.engines import Engine
from xpkit.errors import DataError
from xpkit.readout import read_cells, read_moments
from xpkit.runner import check_schema, resolve_dates, resolve_metrics
from xpkit.stats.group_sequential import inflation_factor


def power_plan(
    config: LoadedConfig,
    registry: MetricRegistry,
    experiment_id: str,
    metric_name: str,
    engine: Engine,
    *,
    mde_relative: float,
    power: float = 0.8,
) -> PowerPlan:
    """Plan sample size for ``metric_name`` from the experiment's data, with the same SQL."""
    experiment = config.experiment(experiment_id)
    # A pre-period as long as the analysis window, so the pre-period variance is on the
    # scale of the metric being planned (a 14-day sum varies more than a 7-day one).
    length = experiment.window[1] - experiment.window[0] + 1
    experiment = experiment.model_copy(update={"pre_window": (-length, -1)})
    metrics = resolve_metrics(config, registry, experiment_id, [metric_name])
    check_schema(config, metrics, engine)
    bounds = resolve_dates(config, metrics, experiment_id, engine)
    if bounds is None:
        raise DataError(f"experiment {experiment_id!r}: no assignments to plan from")
    dates = bounds.dates
    query = compile_moments(
        experiment, metrics, config.run.assignments, dates, dialect=engine.dialect
    )
    assert query.layout is not None
    moments = read_moments(read_cells(engine.query(query.sql), query.layout), query.layout)
    cells = [
        m for v in moments.variants("itt") if (m := moments.get("itt", v, metric_name)) is not None
    ]
    control = moments.get("itt", experiment.control, metric_name)
    if control is None or not cells:
        raise DataError(
            f"experiment {experiment_id!r}: no control units with a complete window to plan from"
        )
    pooled = cells[0]
    for cell in cells[1:]:
        pooled = pooled.merge(cell)
    # Units with a complete window were assigned between the first assignment and
    # as_of - window end: that span is the enrolment rate's denominator.
    last_complete = dates.as_of - timedelta(days=experiment.window[1])
    enrolment_days = max((last_complete - dates.first_assignment).days + 1, 1)
    # Plan for the configured stopping rule: the group-sequential design's maximum sample
    # (its inflation over the fixed horizon, at the rule's alpha / m) is what it needs.
    alpha, rule, inflation = experiment.alpha, experiment.stopping_rule.replace("_", " "), 1.0
    if experiment.stopping_rule == "group_sequential":
        looks = experiment.max_days or DEFAULT_PLANNED_LOOKS
        alpha = experiment.alpha / family_size(experiment)
        inflation = inflation_factor(
            np.arange(1, looks + 1) / looks, alpha, power, experiment.spending
        )
        rule = f"group-sequential ({experiment.spending.replace('_', '-')}, {looks} looks)"
    elif experiment.stopping_rule == "always_valid":
        rule = "always valid (planned as fixed horizon: the mSPRT needs more units than this)"
    return plan(
        metric_name,
        query.layout.metrics[metric_name],
        control,
        pooled,
        weights=[experiment.weights[experiment.control]]
        + [experiment.weights[v] for v in experiment.treatments],
        units_per_day=pooled.n / enrolment_days,
        mde_relative=mde_relative,
        alpha=alpha,
        power=power,
        rule=rule,
        inflation=inflation,
    )
