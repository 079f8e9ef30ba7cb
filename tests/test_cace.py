"""The scorecard's CACE row agrees with the ITT row beside it and with 2SLS on raw data.

Per-unit data are simulated with one-sided non-compliance and a pre-period covariate; the
analysis sees only moments (as from the SQL), the reference sees the rows: linearmodels'
IV2SLS of y on d (instrumented by assignment) with the covariate as exogenous regressor.
"""

from __future__ import annotations

import numpy as np
import pytest

from xpkit.config import ExperimentConfig
from xpkit.decide.analysis import MetricInfo, analyse
from xpkit.layout import MetricLayout
from xpkit.moments import Moments
from xpkit.readout import MomentsKey, MomentsTable

linearmodels = pytest.importorskip("linearmodels")

LAYOUT = MetricLayout(
    "m", "mean", "m__value", covariates=("m__pre",), exposure="exposed", pre_value="m__pre"
)
METRICS = {"m": MetricInfo("m", "mean", True, LAYOUT)}
EXPERIMENT = ExperimentConfig(
    id="iv", control="control", weights={"control": 0.5, "treatment": 0.5}, metrics=["m"]
)


def simulate(seed: int, n: int = 4000) -> tuple[dict[str, np.ndarray], MomentsTable]:
    rng = np.random.default_rng(seed)
    z = rng.random(n) < 0.5
    pre = rng.gamma(2.0, 50.0, n)
    # Engaged units are likelier to reach the changed surface: exposure correlates with y.
    reach = rng.random(n) < 0.3 + 0.4 * (pre > np.median(pre))
    d = z & reach
    y = 0.8 * pre + rng.normal(0, 40, n) + 25.0 * d
    table = {}
    for variant, arm in (("control", ~z), ("treatment", z)):
        # The assignment log flags exposure in both arms (reached the surface); the
        # analysis sets treatment received to 0 in control itself.
        rows = np.column_stack([y[arm], pre[arm], reach[arm].astype(float)])
        moments = Moments.from_rows(rows, LAYOUT.columns)
        table[MomentsKey("itt", variant, "m")] = moments
        table[MomentsKey("tot", variant, "m")] = Moments.from_rows(rows[reach[arm]], LAYOUT.columns)
    return {"y": y, "d": d.astype(float), "z": z.astype(float), "pre": pre}, MomentsTable(table)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_cace_is_2sls_with_the_itt_rows_covariates(seed: int) -> None:
    import pandas as pd
    from linearmodels.iv import IV2SLS

    raw, table = simulate(seed)
    rows = {r.population: r for r in analyse(EXPERIMENT, METRICS, table)}
    cace, itt = rows["cace"].effect, rows["itt"].effect
    frame = pd.DataFrame(raw).assign(const=1.0)
    fit = IV2SLS(frame["y"], frame[["const", "pre"]], frame["d"], frame["z"]).fit(cov_type="robust")
    assert cace.method == "cace_2sls"
    assert cace.abs_effect == pytest.approx(fit.params["d"], rel=1e-9)
    # Delta method with theta held fixed vs HC0: equal up to O(1/n) small-sample terms.
    assert cace.abs_se == pytest.approx(fit.std_errors["d"], rel=0.02)
    # Consistent with the ITT row: the same adjusted effect over the first stage.
    assert cace.extra["itt_effect"] == pytest.approx(itt.abs_effect, rel=1e-12)
    share = cace.extra["first_stage_effect"]
    assert cace.abs_effect == pytest.approx(itt.abs_effect / share, rel=1e-12)
    # The compliers' own baseline gives the relative effect.
    assert cace.rel_lift is not None and cace.rel_lift == pytest.approx(
        cace.abs_effect / abs(cace.mean_control), rel=1e-12
    )
