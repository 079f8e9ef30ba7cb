"""Guardrails: non-inferiority against a margin, plus a check for significant harm."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import special

from xpkit.stats.effect import Effect
from xpkit.stats.lift import NAN, check_alpha


@dataclass(frozen=True)
class GuardrailResult:
    """Outcome of a guardrail check on one metric.

    ``p_value`` is one-sided for H0 "the harm is at least ``margin``"; ``bound`` is the
    one-sided ``1 - alpha`` confidence bound on the harmful side (lower bound when higher is
    better, upper bound when lower is better), on the relative scale when ``relative``.
    """

    p_value: float
    bound: float
    margin: float
    relative: bool
    breached: bool
    reason: str
    significant_harm: bool


def _format(value: float, relative: bool, signed: bool) -> str:
    if not math.isfinite(value):
        return "undefined"
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.3g}%" if relative else f"{value:{sign}.4g}"


def non_inferiority_test(
    effect: Effect,
    margin: float,
    relative: bool,
    higher_is_better: bool,
    alpha: float = 0.05,
    *,
    metric: str | None = None,
) -> GuardrailResult:
    """One-sided non-inferiority test of ``effect`` against ``margin`` (>= 0).

    Let ``d`` be the estimate (``abs_effect``, or ``rel_lift`` when ``relative``), ``se``
    its standard error and ``h = -1`` when higher is better, ``+1`` when lower is better,
    so ``h d`` is the harm. Then

        H0: h d >= margin   vs   H1: h d < margin,
        p = F((h d - margin) / se),   bound = d + h q_{1-alpha} se,

    with ``F``/``q`` the Student t distribution on ``effect.df`` degrees of
    freedom when the effect carries one (Welch, CUPED) and the standard normal otherwise
    (relative lifts are always normal, as their intervals are). Non-inferiority holds when
    ``p < alpha``, equivalently when the bound lies on the safe side of ``-h margin``.
    Reference: Wellek (2010), *Testing Statistical Hypotheses of Equivalence and
    Noninferiority*, 2nd ed., ch. 2.

    ``significant_harm`` is a two-sided level-``alpha`` test of ``d = 0`` that comes out
    significant in the harmful direction; a small, real harm inside the margin still trips
    the guardrail, because ``breached = not non_inferior or significant_harm``.

    Anything that cannot be evaluated — relative margin with an undefined relative lift, or
    a NaN/zero standard error — is ``breached`` with the reason in ``reason``: a guardrail
    that cannot rule out harm must not pass. ``metric`` only labels the reason.
    """
    alpha = check_alpha(alpha)
    margin = float(margin)
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    prefix = f"{metric}: " if metric else ""
    harm_word = "drop" if higher_is_better else "rise"
    side = "lower" if higher_is_better else "upper"
    h = -1.0 if higher_is_better else 1.0
    margin_text = _format(margin, relative, signed=False)

    if relative:
        if effect.rel_lift is None or effect.rel_se is None:
            return GuardrailResult(
                p_value=NAN,
                bound=NAN,
                margin=margin,
                relative=True,
                breached=True,
                reason=(
                    f"{prefix}relative lift undefined (control mean too close to zero), so a "
                    f"{harm_word} of more than {margin_text} cannot be ruled out"
                ),
                significant_harm=False,
            )
        estimate, se, df = effect.rel_lift, effect.rel_se, None
    else:
        estimate, se = effect.abs_effect, effect.abs_se
        df = effect.df

    usable_df = df is None or (math.isfinite(df) and df > 0.0)
    if not (math.isfinite(estimate) and math.isfinite(se) and se > 0.0 and usable_df):
        return GuardrailResult(
            p_value=NAN,
            bound=NAN,
            margin=margin,
            relative=relative,
            breached=True,
            reason=(
                f"{prefix}no usable standard error (too few units or no variance), so a "
                f"{harm_word} of more than {margin_text} cannot be ruled out"
            ),
            significant_harm=False,
        )

    # The scipy.special ufuncs behind scipy.stats.norm / scipy.stats.t (cdf, ppf, and
    # sf(x) = cdf(-x)): the same numbers without building a distribution object per call.
    def cdf(x: float) -> float:
        return float(special.ndtr(x) if df is None else special.stdtr(df, x))

    def ppf(q: float) -> float:
        return float(special.ndtri(q) if df is None else special.stdtrit(df, q))

    harm = h * estimate
    p_value = cdf((harm - margin) / se)
    bound = estimate + h * ppf(1.0 - alpha) * se
    non_inferior = p_value < alpha
    significant_harm = harm > 0.0 and 2.0 * cdf(-abs(estimate) / se) < alpha

    bound_text = f"{side} bound {_format(bound, relative, signed=True)}"
    if not non_inferior:
        reason = f"cannot rule out a {harm_word} of more than {margin_text} ({bound_text})"
    else:
        reason = f"rules out a {harm_word} of more than {margin_text} ({bound_text})"
    if significant_harm:
        reason += (
            f"; significant {harm_word} of {_format(estimate, relative, signed=True)}"
            f" (two-sided p below {alpha:g})"
        )
    return GuardrailResult(
        p_value=p_value,
        bound=bound,
        margin=margin,
        relative=relative,
        breached=(not non_inferior) or significant_harm,
        reason=prefix + reason,
        significant_harm=significant_harm,
    )
