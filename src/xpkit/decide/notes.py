"""What each population's effect means, in the words every output labels it with.

Kept apart from the analysis so that a reader of published runs (``xpkit show``) labels
them without loading the statistics.
"""

from __future__ import annotations

POPULATION_NOTES = {
    "itt": "intent to treat: every assigned unit; the unbiased effect of the assignment",
    "tot": "treatment on the treated, SELECTED ON EXPOSURE: exposure correlates with "
    "engagement, so this is not an unbiased effect",
    "cace": "complier average causal effect: the ITT effect over the exposure-rate effect, both "
    "adjusted like the ITT row (2SLS, one-sided non-compliance); the honest effect per "
    "exposed unit; means and relative lift are the compliers' own",
}
