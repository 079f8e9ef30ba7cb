"""Deterministic sample data for xpkit, with the true effects written next to it.

The generator builds a small streaming service: members with a latent engagement level,
a daily engagement table, and four experiments, each with a known treatment effect and some
with a known defect (a sample-ratio mismatch, broken exposure logging, units seen in two
variants, duplicate assignment rows). Because the generator draws both potential outcomes
for every member, the manifest can state the *finite-population* truth that an analysis is
supposed to recover, and a scorecard can be checked against it rather than against itself.

One effect is heterogeneous by design: in ``homepage_ranking_v2`` the watch-time lift goes
to exposed tv members outside JP only (``ExperimentSpec.slice_factors``). The manifest
states every experiment's truths per slice (each device, each country) as well as overall,
and says per (variant, metric, dimension) whether the effect differs across the slices by
construction (``Heterogeneity``), so a breakdown can be checked for finding the planted
heterogeneity and for not finding any where there is none.

For quantile metrics there is an event table too: one row per play of a
``homepage_ranking_v2`` member in its 7-day window, with a start latency. Its treatment
shortens the rare long stalls and nothing else, so the tail quantiles of latency fall while
the median does not move; the manifest states the true quantiles under both potential
outcomes (``QuantileTruth``).

Output (see ``README.md`` next to this file for the full description)::

    out_dir/experiment_assignments.parquet
    out_dir/engagement_daily.parquet      sorted by (date, member_id)
    out_dir/plays.parquet                 sorted by (date, member_id)
    out_dir/manifest.json

Usage::

    xpkit sample-data --members 1000000 --seed 7 --out data/
    python -m xpkit.sample_data.generate --members 1000000 --seed 7 --out data/

Scale: members are processed in fixed blocks and the daily table is produced one (day,
block) slice at a time and streamed to Parquet row groups, so memory stays flat in the
number of daily rows; only a few bytes per member are kept for the whole run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xpkit.files import atomic_path

GENERATOR_VERSION = "1.1"

ASSIGNMENTS_FILE = "experiment_assignments.parquet"
DAILY_FILE = "engagement_daily.parquet"
PLAYS_FILE = "plays.parquet"
MANIFEST_FILE = "manifest.json"

# --- calendar ---------------------------------------------------------------------------
STUDY_START = date(2024, 3, 1)
ENROLMENT_START = date(2024, 3, 15)
# Enrolment runs two days past the last date whose 7-day window fits in the data, so a
# realistic minority (about 2/17 = 12%) of units is still mid-window when the data ends and
# the complete-window rule has something to exclude.
ENROLMENT_DAYS = 17
DATA_END = date(2024, 4, 4)
WINDOW_DAYS = 7
PRE_PERIOD_DAYS = 14

N_DAYS = (DATA_END - STUDY_START).days + 1
ENROLMENT_OFFSET = (ENROLMENT_START - STUDY_START).days
LAST_COMPLETE_DAY = N_DAYS - WINDOW_DAYS  # day index of the last assignment with a full window

METRIC_COLUMNS = ("watch_seconds", "sessions", "plays", "errors")
ANY_WATCH = "proportion_any_watch"

COUNTRIES = ("US", "BR", "IN", "DE", "JP")
COUNTRY_WEIGHTS = (0.35, 0.2, 0.2, 0.15, 0.1)
DEVICES = ("tv", "mobile", "web")
DEVICE_WEIGHTS = (0.5, 0.3, 0.2)
# Big screens watch more and fail less; browsers fail most. Folding the device into the
# latent level keeps device a meaningful slice without a separate model per device.
DEVICE_ENGAGEMENT = np.array([1.25, 0.75, 0.9])
DEVICE_ERROR_FACTOR = np.array([0.8, 1.2, 1.5])
# The pre-treatment dimensions the manifest states per-slice truths for, with their labels.
# Device moves every baseline (through the latent level, and errors through the error
# factor) and, through the latent level, the exposure rate; country is drawn independently
# of everything else and moves nothing.
SLICE_DIMENSIONS: dict[str, tuple[str, ...]] = {"device": DEVICES, "country": COUNTRIES}
BASELINE_DIMENSIONS = ("device",)
# A member's cell is its (device, country) pair, flattened: device x len(COUNTRIES) + country.
# Truths are summed per cell, so any slice by device or country is a sum of cells.
N_CELLS = len(DEVICES) * len(COUNTRIES)

# --- engagement model -------------------------------------------------------------------
# log(lambda) ~ N(log(device factor), 1): a heavy right tail, as real viewing is.
LOG_LAMBDA_SD = 1.0
# P(active on a day) = logistic(ACTIVE_A + ACTIVE_B * log lambda [+ weekend]); about 60%.
ACTIVE_A, ACTIVE_B, WEEKEND_ACTIVE_SHIFT = 0.4, 1.0, 0.3
WATCH_SECONDS_PER_LAMBDA = 1500.0
# A gamma shape this low gives strong day-to-day noise, so the pre-period is a good but not
# perfect covariate - the realistic case for CUPED.
WATCH_SHAPE = 1.5
WEEKEND_WATCH_FACTOR = 1.2
EXTRA_SESSIONS_PER_LAMBDA = 0.6  # sessions = 1 + Poisson(0.6 * lambda * weekend)
# plays = Binomial(2 sessions, 0.725): about 1.45 plays per session, and a session can end
# without a play (browsing, a trailer) as real ones do.
PLAY_TRIALS_PER_SESSION, PLAY_PROB = 2, 0.725
ERRORS_PER_PLAY = 0.01
# P(exposed) = logistic(EXPOSURE_A + EXPOSURE_B * log lambda): heavier members reach the
# treated surface more often (about 60% overall), which is what makes TOT != ITT.
EXPOSURE_A, EXPOSURE_B = 0.45, 0.8

# --- defects ----------------------------------------------------------------------------
MULTI_VARIANT_RATE = 0.002  # homepage_ranking_v2 units also logged in the other variant
DUPLICATE_RATE = 0.001  # homepage_ranking_v2 units with an exact duplicate row
# player_srm loses treatment rows. Real logging losses are often a few percent; this one is
# sized so the default 40,000-member sample flags it (p < 0.001) for almost any seed.
SRM_LOSS_RATE = 0.15
EXPOSURE_DROP_RATE = 0.15  # search_exposure_bug: exposed treatment members logged as unexposed
# Both losses hit light members harder (a member with one session has one chance to be
# logged); the normalisers are E[logistic(-1.5 log lambda)] over the affected group, so the
# average loss equals the headline rate.
LOSS_SLOPE = 1.5
SRM_LOSS_NORMALISER = 0.50  # over all members
EXPOSURE_DROP_NORMALISER = 0.42  # over exposed members
MULTI_VARIANT_DELAY_US = (3_600_000_000, 48 * 3_600_000_000)  # 1 h .. 48 h later
DUPLICATE_DELAY_US = (1_000_000, 6 * 3_600_000_000)  # 1 s .. 6 h later

# --- plays and start latency -----------------------------------------------------------
# The plays table holds one row per play of a homepage_ranking_v2 member on a day of its
# analysis window: exactly `plays` rows for each such member-day of engagement_daily.
# start_latency_ms = round(exp(member level + play noise) [+ stall delay]) in whole ms:
# - member level = log device median + ENGAGEMENT_SLOPE x (log lambda - log device factor)
#   + N(0, MEMBER_SD^2): units differ a lot (a long right tail of slow members), and heavy
#   viewers, who make most of the plays, start faster; plays of one member are correlated,
#   so units are clusters (at the median the design effect is over 10);
# - play noise ~ N(0, PLAY_SD^2);
# - with probability STALL_RATE the play stalls and waits STALL_MS more (uniform).
# The treatment acts on exposed members' stalls only: their extra delay is multiplied by
# STALL_TREATED_FACTOR. Every stall, shortened or not, lasts over 750 ms, far above the
# median of all plays (about 390 ms), so the plays below the median and hence the median
# are the same under both potential outcomes, while p90/p95, which lie among the stalls,
# fall (by about 25% and 37% at the default size).
LATENCY_MEDIAN_MS = np.array([500.0, 400.0, 350.0])  # by device: tv, mobile, web
LATENCY_MEMBER_SD = 0.5
LATENCY_PLAY_SD = 0.35
LATENCY_ENGAGEMENT_SLOPE = -0.3
STALL_RATE = 0.10
STALL_MS = (1500.0, 6000.0)
STALL_TREATED_FACTOR = 0.5
LATENCY_QUANTILES = (0.5, 0.9, 0.95)
LATENCY_COLUMN = "start_latency_ms"

# Members are generated in blocks of this many; each block and each (block, day) slice has
# its own random substream. Keep it fixed: it is part of what makes output reproducible.
MEMBER_BLOCK = 250_000

_US_PER_DAY = 86_400_000_000
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class ExperimentSpec:
    """An experiment of the sample world: its population share, design and true effects.

    ``multipliers``: variant -> column -> multiplier ``m`` on that column's expected daily
    value, applied to exposed members from their assignment date on. Variants and columns
    not listed have no effect.

    ``slice_factors`` (optional): variant -> column -> dimension (``device``, ``country``)
    -> value -> factor in [0, 1] on the *lift* of a listed multiplier. A member's multiplier
    is ``1 + (m - 1) x f_device x f_country`` with the factors of its own device and country
    (a value not listed has factor 1), so factor 1 is the full lift ``m`` and factor 0 no
    effect. Without slice factors the multiplier is ``m`` for every exposed member.

    The effect terms of all experiments draw from one random stream per (block, day), in
    order, and how many numbers a Poisson or binomial draw consumes depends on its mean, so
    factors must not change those draws: a ``watch_seconds`` term draws nothing (its value is
    scaled exactly), and a count term draws its full-lift increment as without factors, then
    thins it by the member's factor from a stream of its own. Adding or changing factors
    therefore changes that term's values only; every other term, column and experiment is
    bit-identical.
    """

    experiment_id: str
    share: float
    variants: tuple[str, ...]
    weights: tuple[float, ...]
    multipliers: dict[str, dict[str, float]] = field(default_factory=dict)
    defects: tuple[str, ...] = ()
    slice_factors: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for variant, by_col in self.slice_factors.items():
            for col, by_dim in by_col.items():
                where = f"{self.experiment_id}: slice factors of {variant}/{col}"
                if col not in self.multipliers.get(variant, {}):
                    raise ValueError(f"{where} have no multiplier to scale")
                for dim, by_value in by_dim.items():
                    if dim not in SLICE_DIMENSIONS:
                        raise ValueError(f"{where}: unknown dimension {dim!r}")
                    unknown = set(by_value) - set(SLICE_DIMENSIONS[dim])
                    if unknown:
                        raise ValueError(f"{where}: unknown {dim} values {sorted(unknown)}")
                    if any(not 0.0 <= f <= 1.0 for f in by_value.values()):
                        raise ValueError(f"{where}: factors must lie in [0, 1]")

    def factors(self, variant: str, column: str) -> dict[str, dict[str, float]]:
        """dimension -> value -> factor for every value of every dimension (1 if unlisted)."""
        listed = self.slice_factors.get(variant, {}).get(column, {})
        return {
            dim: {value: float(listed.get(dim, {}).get(value, 1.0)) for value in values}
            for dim, values in SLICE_DIMENSIONS.items()
        }


EXPERIMENTS: tuple[ExperimentSpec, ...] = (
    ExperimentSpec(
        "homepage_ranking_v2",
        0.40,
        ("control", "treatment"),
        (0.5, 0.5),
        # A planted heterogeneous effect: the watch-time lift goes to exposed tv members
        # outside JP only (x1.15); mobile, web and JP members get none: an ITT lift of about
        # 6.7%, and a tv effect large enough for the heterogeneity test to find at the
        # default 40,000 members. Sessions rise x1.03 for every exposed member.
        {"treatment": {"watch_seconds": 1.15, "sessions": 1.03}},
        (
            f"about {MULTI_VARIANT_RATE:.1%} of units get a second assignment row in the other "
            "variant (a later timestamp): units seen in more than one variant",
            f"about {DUPLICATE_RATE:.1%} of units get an exact duplicate assignment row with a "
            "later timestamp",
        ),
        slice_factors={
            "treatment": {
                "watch_seconds": {
                    "device": {"tv": 1.0, "mobile": 0.0, "web": 0.0},
                    "country": {"JP": 0.0},
                }
            }
        },
    ),
    ExperimentSpec(
        "artwork_abc",
        0.30,
        ("control", "treatment_a", "treatment_b"),
        (1 / 3, 1 / 3, 1 / 3),
        {"treatment_a": {"plays": 1.04}, "treatment_b": {"plays": 1.06, "errors": 1.5}},
        ("treatment_b raises errors by 50% for exposed members (a guardrail harm)",),
    ),
    ExperimentSpec(
        "player_srm",
        0.15,
        ("control", "treatment"),
        (0.5, 0.5),
        {},
        (
            f"about {SRM_LOSS_RATE:.0%} of treatment assignment rows are never written, more "
            "often for light members: a sample-ratio mismatch that also biases the comparison",
        ),
    ),
    ExperimentSpec(
        "search_exposure_bug",
        0.15,
        ("control", "treatment"),
        (0.5, 0.5),
        {},
        (
            f"treatment exposure logging drops about {EXPOSURE_DROP_RATE:.0%} of exposed "
            "members' flags, more often for light members: ITT is clean, the exposed (TOT) "
            "population is not comparable across variants",
        ),
    ),
)

_HOMEPAGE, _ARTWORK, _SRM, _SEARCH = range(len(EXPERIMENTS))

ASSIGNMENTS_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("member_id", pa.int64()),
        ("variant", pa.string()),
        ("assignment_timestamp", pa.timestamp("us")),
        ("exposed_flag", pa.bool_()),
        ("country", pa.string()),
        ("device", pa.string()),
    ]
)
DAILY_SCHEMA = pa.schema(
    [
        ("member_id", pa.int64()),
        ("date", pa.date32()),
        ("watch_seconds", pa.float64()),
        ("sessions", pa.int32()),
        ("plays", pa.int32()),
        ("errors", pa.int32()),
    ]
)
PLAYS_SCHEMA = pa.schema(
    [
        ("member_id", pa.int64()),
        ("date", pa.date32()),
        (LATENCY_COLUMN, pa.float64()),
    ]
)
# The experiment whose members have play rows, and the variant whose exposed members get
# the shorter stalls (by name, and the index of the members who observe it).
_PLAYS_EXPERIMENT = _HOMEPAGE
_PLAYS_VARIANT_NAME = "treatment"
_PLAYS_VARIANT = EXPERIMENTS[_HOMEPAGE].variants.index(_PLAYS_VARIANT_NAME)


# --- manifest ---------------------------------------------------------------------------
@dataclass(frozen=True)
class EffectTruth:
    """Finite-population truth for one (variant vs control, metric) over the 7-day window.

    Means are per member of the truth population (complete window, one variant only),
    computed from both potential outcomes of every member. A relative figure is ``None``
    when its control mean is zero.
    """

    control_mean: float | None
    true_itt_abs: float | None
    true_itt_rel: float | None
    control_mean_exposed: float | None
    true_effect_on_exposed_abs: float | None
    true_effect_on_exposed_rel: float | None


@dataclass(frozen=True)
class SliceTruth:
    """Truths over one slice of the truth population: its members with one value of one
    pre-treatment dimension (``device`` or ``country``), computed like the whole
    population's from those members' own potential outcomes."""

    truth_population: dict[str, float]
    # variant -> metric -> truth, as ``ExperimentManifest.true_effects``.
    true_effects: dict[str, dict[str, EffectTruth]]


@dataclass(frozen=True)
class Heterogeneity:
    """Whether a (variant, metric)'s true ITT effect differs across a dimension's values by
    construction (in expectation over the draw of the members).

    ``absolute``/``relative``: the absolute effect / the relative lift differs. ``source``:
    ``planted`` (slice factors), ``baseline`` (a uniform multiplier on a dimension that moves
    the baseline and the exposure rate) or ``none``.
    """

    absolute: bool
    relative: bool
    source: str


@dataclass(frozen=True)
class QuantileTruth:
    """Finite-population truth for the q-quantile of a row-level value (event level).

    Over every window row of the truth population's members, each row's value under the
    control potential outcome and under the variant's: ``control_quantile`` and
    ``variant_quantile`` are the q-quantiles of the two sets of values (inverted CDF,
    ``numpy.quantile(..., method="inverted_cdf")``), ``true_itt_abs`` their difference and
    ``true_itt_rel`` that over ``control_quantile``. The ``_exposed`` fields are the same over
    the rows of truly exposed members. A figure is ``None`` without rows (or, relative, when
    its control quantile is zero).
    """

    control_quantile: float | None
    variant_quantile: float | None
    true_itt_abs: float | None
    true_itt_rel: float | None
    control_quantile_exposed: float | None
    variant_quantile_exposed: float | None
    true_effect_on_exposed_abs: float | None
    true_effect_on_exposed_rel: float | None


@dataclass(frozen=True)
class EventQuantileTruths:
    """Quantile truths of one column of an event table over the truth population.

    ``units``/``rows``: truth-population members with at least one window row, and their
    window rows (``_exposed``: of truly exposed members). ``quantiles``: q (as a string,
    ``"0.95"``) -> truth.
    """

    table: str
    column: str
    units: int
    rows: int
    units_exposed: int
    rows_exposed: int
    quantiles: dict[str, QuantileTruth]


@dataclass(frozen=True)
class ExperimentManifest:
    """Design, defects, counts and true effects of one experiment."""

    experiment_id: str
    share_of_members: float
    variants: list[str]
    weights: list[float]
    enrolment_start: str
    enrolment_end: str
    multipliers: dict[str, dict[str, float]]
    defects: list[str]
    counts: dict[str, int]
    truth_population: dict[str, float]
    # variant -> metric -> truth; every non-control variant, every metric column plus
    # proportion_any_watch.
    true_effects: dict[str, dict[str, EffectTruth]]
    # variant -> column -> dimension -> value -> factor on the lift, every value listed;
    # only for the (variant, column) pairs with slice factors. ``multipliers`` holds the
    # multiplier of a member whose factors are all 1.
    slice_factors: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    # dimension -> value -> truths over that slice of the truth population.
    slice_truths: dict[str, dict[str, SliceTruth]] = field(default_factory=dict)
    # variant -> metric -> dimension -> whether the effect differs across it by construction.
    heterogeneity: dict[str, dict[str, dict[str, Heterogeneity]]] = field(default_factory=dict)
    heterogeneity_notes: list[str] = field(default_factory=list)
    # variant -> column of an event table -> its quantile truths (only experiments whose
    # members have event rows: homepage_ranking_v2's plays).
    quantile_truths: dict[str, dict[str, EventQuantileTruths]] = field(default_factory=dict)
    quantile_notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Manifest:
    """What was generated and what an analysis of it should find."""

    generator_version: str
    seed: int
    members: int
    dates: dict[str, Any]
    files: dict[str, Any]
    notes: list[str]
    experiments: list[ExperimentManifest]

    def experiment(self, experiment_id: str) -> ExperimentManifest:
        for exp in self.experiments:
            if exp.experiment_id == experiment_id:
                return exp
        raise KeyError(experiment_id)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        def effects(raw: dict[str, Any]) -> dict[str, dict[str, EffectTruth]]:
            return {
                variant: {metric: EffectTruth(**t) for metric, t in by_metric.items()}
                for variant, by_metric in raw.items()
            }

        experiments = [
            ExperimentManifest(
                **{
                    **exp,
                    "true_effects": effects(exp["true_effects"]),
                    "slice_truths": {
                        dim: {
                            value: SliceTruth(s["truth_population"], effects(s["true_effects"]))
                            for value, s in by_value.items()
                        }
                        for dim, by_value in exp.get("slice_truths", {}).items()
                    },
                    "heterogeneity": {
                        variant: {
                            metric: {dim: Heterogeneity(**h) for dim, h in by_dim.items()}
                            for metric, by_dim in by_metric.items()
                        }
                        for variant, by_metric in exp.get("heterogeneity", {}).items()
                    },
                    "quantile_truths": {
                        variant: {
                            column: EventQuantileTruths(
                                **{
                                    **t,
                                    "quantiles": {
                                        q: QuantileTruth(**qt) for q, qt in t["quantiles"].items()
                                    },
                                }
                            )
                            for column, t in by_column.items()
                        }
                        for variant, by_column in exp.get("quantile_truths", {}).items()
                    },
                }
            )
            for exp in data["experiments"]
        ]
        return cls(**{**data, "experiments": experiments})

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- random streams ---------------------------------------------------------------------
def _member_rng(seed: int, block: int) -> np.random.Generator:
    # An explicit spawn key is the addressable form of SeedSequence.spawn: the stream of
    # block b never depends on how many blocks exist or in which order they are drawn.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, block)))


def _daily_rng(seed: int, block: int, day: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, block, day)))


def _slice_rng(seed: int, block: int, day: int, term: int) -> np.random.Generator:
    # Only for thinning a sliced count term: its own stream, so the draws of the day's
    # shared stream are the same as without slice factors.
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2, block, day, term)))


# The plays table draws only from these two streams of its own, so the other tables are
# the same with or without it.
def _latency_member_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3, block)))


def _plays_rng(seed: int, block: int, day: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(4, block, day)))


def _logistic(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# --- members ----------------------------------------------------------------------------
@dataclass
class _Block:
    """Per-member latent state of one block, kept for the whole run (a few bytes/member)."""

    first_id: int
    log_lam: np.ndarray  # float64
    # P(active) on a weekday and on a weekend day; computed once rather than on every day.
    p_active: np.ndarray  # float32, shape (2, n)
    device: np.ndarray  # int8 index into DEVICES
    cell: np.ndarray  # int8 (device, country) cell: device x len(COUNTRIES) + country
    experiment: np.ndarray  # int8 index into EXPERIMENTS
    variant: np.ndarray  # int8 index into the experiment's variants (first assignment)
    assign_day: np.ndarray  # int16 day index since STUDY_START
    exposed: np.ndarray  # bool: truly exposed (before any logging defect)
    in_truth: np.ndarray  # bool: complete window and seen in one variant only
    any_watch: np.ndarray  # bool: watched on some day of the window (filled day by day)
    latency_level: np.ndarray  # float32 log of the member's typical start latency (ms)
    played: np.ndarray  # bool: has a row in the plays table (filled day by day)


@dataclass
class _Counts:
    enrolled: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))
    lost: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))
    multi: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))
    dup: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))
    dropped: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))
    incomplete: np.ndarray = field(default_factory=lambda: np.zeros(len(EXPERIMENTS), np.int64))


def _draw_block(seed: int, block: int, n: int, counts: _Counts) -> tuple[_Block, pa.Table]:
    """Draw one block's members and return them with their assignment rows."""
    rng = _member_rng(seed, block)
    first_id = block * MEMBER_BLOCK + 1
    device = rng.choice(len(DEVICES), size=n, p=DEVICE_WEIGHTS).astype(np.int8)
    country = rng.choice(len(COUNTRIES), size=n, p=COUNTRY_WEIGHTS).astype(np.int8)
    log_lam = rng.normal(0.0, LOG_LAMBDA_SD, n) + np.log(DEVICE_ENGAGEMENT)[device]
    experiment = rng.choice(len(EXPERIMENTS), size=n, p=[e.share for e in EXPERIMENTS])
    experiment = experiment.astype(np.int8)
    u_variant = rng.random(n)
    variant = np.zeros(n, np.int8)
    for e, spec in enumerate(EXPERIMENTS):
        in_e = experiment == e
        cum = np.cumsum(spec.weights) / sum(spec.weights)
        variant[in_e] = np.minimum(
            np.searchsorted(cum, u_variant[in_e], side="right"), len(cum) - 1
        )
    assign_day = (ENROLMENT_OFFSET + rng.integers(0, ENROLMENT_DAYS, n)).astype(np.int16)
    time_of_day = rng.integers(0, _US_PER_DAY, n)
    exposed = rng.random(n) < _logistic(EXPOSURE_A + EXPOSURE_B * log_lam)
    u_defect = rng.random(n)
    u_delay = rng.random(n)

    # One uniform per member decides whichever defect applies to its experiment, so the
    # defects of different experiments never compete for random numbers.
    light = _logistic(-LOSS_SLOPE * log_lam)
    is_treatment = variant == 1
    lost = (experiment == _SRM) & is_treatment
    lost &= u_defect < SRM_LOSS_RATE * light / SRM_LOSS_NORMALISER
    dropped = (experiment == _SEARCH) & is_treatment & exposed
    dropped &= u_defect < EXPOSURE_DROP_RATE * light / EXPOSURE_DROP_NORMALISER
    homepage = experiment == _HOMEPAGE
    multi = homepage & (u_defect < MULTI_VARIANT_RATE)
    dup = homepage & (u_defect >= MULTI_VARIANT_RATE)
    dup &= u_defect < MULTI_VARIANT_RATE + DUPLICATE_RATE

    complete = assign_day <= LAST_COMPLETE_DAY
    n_exp = len(EXPERIMENTS)
    counts.enrolled += np.bincount(experiment, minlength=n_exp)
    counts.lost += np.bincount(experiment[lost], minlength=n_exp)
    counts.multi += np.bincount(experiment[multi], minlength=n_exp)
    counts.dup += np.bincount(experiment[dup], minlength=n_exp)
    counts.dropped += np.bincount(experiment[dropped], minlength=n_exp)
    counts.incomplete += np.bincount(experiment[~complete], minlength=n_exp)

    members = _Block(
        first_id=first_id,
        log_lam=log_lam,
        p_active=_logistic(
            ACTIVE_A + ACTIVE_B * log_lam + np.array([[0.0], [WEEKEND_ACTIVE_SHIFT]])
        ).astype(np.float32),
        device=device,
        cell=(device * len(COUNTRIES) + country).astype(np.int8),
        experiment=experiment,
        variant=variant,
        assign_day=assign_day,
        exposed=exposed,
        in_truth=complete & ~multi,
        any_watch=np.zeros(n, bool),
        latency_level=_latency_levels(seed, block, device, log_lam),
        played=np.zeros(n, bool),
    )

    # Assignment rows: every logged member once, plus the defect rows.
    start_us = (STUDY_START - _EPOCH).days * _US_PER_DAY
    last_us = start_us + N_DAYS * _US_PER_DAY - 1
    ts = start_us + assign_day.astype(np.int64) * _US_PER_DAY + time_of_day
    member_idx = np.arange(n)
    logged = member_idx[~lost]
    lo, hi = MULTI_VARIANT_DELAY_US
    multi_idx = member_idx[multi]
    multi_ts = ts[multi] + (lo + u_delay[multi] * (hi - lo)).astype(np.int64)
    lo, hi = DUPLICATE_DELAY_US
    dup_idx = member_idx[dup]
    dup_ts = ts[dup] + (lo + u_delay[dup] * (hi - lo)).astype(np.int64)
    row_member = np.concatenate([logged, multi_idx, dup_idx])
    row_ts = np.minimum(np.concatenate([ts[logged], multi_ts, dup_ts]), last_us)
    # Homepage has two variants, so "the other variant" of v is 1 - v.
    row_variant = np.concatenate([variant[logged], 1 - variant[multi], variant[dup]])
    order = np.lexsort((row_ts, row_member))
    row_member, row_ts, row_variant = row_member[order], row_ts[order], row_variant[order]
    row_exp = experiment[row_member]
    counts.rows += np.bincount(row_exp, minlength=n_exp)

    # Variant labels: flatten (experiment, variant index) into one code per label.
    labels: list[str] = []
    offsets = []
    for spec in EXPERIMENTS:
        offsets.append(len(labels))
        labels.extend(spec.variants)
    variant_code = np.asarray(offsets, np.int32)[row_exp] + row_variant

    table = pa.table(
        {
            "experiment_id": _labels(row_exp, [e.experiment_id for e in EXPERIMENTS]),
            "member_id": pa.array(first_id + row_member, pa.int64()),
            "variant": _labels(variant_code, labels),
            "assignment_timestamp": pa.array(row_ts, pa.timestamp("us")),
            "exposed_flag": pa.array(exposed[row_member] & ~dropped[row_member], pa.bool_()),
            "country": _labels(country[row_member], COUNTRIES),
            "device": _labels(device[row_member], DEVICES),
        },
        schema=ASSIGNMENTS_SCHEMA,
    )
    return members, table


def _latency_levels(seed: int, block: int, device: np.ndarray, log_lam: np.ndarray) -> np.ndarray:
    """Each member's log typical start latency, drawn for every member of the block (only
    homepage_ranking_v2 members use it) from the block's latency stream."""
    z = _latency_member_rng(seed, block).standard_normal(len(device))
    engagement = log_lam - np.log(DEVICE_ENGAGEMENT)[device]  # N(0, 1): within the device
    level = np.log(LATENCY_MEDIAN_MS)[device] + LATENCY_ENGAGEMENT_SLOPE * engagement
    return (level + LATENCY_MEMBER_SD * z).astype(np.float32)


def _labels(codes: np.ndarray, names: Sequence[str]) -> pa.Array:
    # Dictionary take + cast is vectorised; building Python strings per row is not.
    indices = pa.array(codes.astype(np.int32), pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(names, pa.string())).cast(pa.string())


# --- daily engagement and potential outcomes -------------------------------------------
@dataclass(frozen=True)
class _EffectTerm:
    experiment: int
    variant: int
    column: str
    multiplier: float
    # Lift factor per (device, country) cell, shape (len(DEVICES), len(COUNTRIES)); None
    # when the term has no slice factors (every exposed member gets the full multiplier).
    cell_factor: np.ndarray | None = None


def _cell_factor(spec: ExperimentSpec, variant: str, column: str) -> np.ndarray | None:
    if column not in spec.slice_factors.get(variant, {}):
        return None
    factors = spec.factors(variant, column)
    by_device = np.array([factors["device"][d] for d in DEVICES])
    by_country = np.array([factors["country"][c] for c in COUNTRIES])
    return np.outer(by_device, by_country)


_TERMS: tuple[_EffectTerm, ...] = tuple(
    _EffectTerm(e, spec.variants.index(v), col, m, _cell_factor(spec, v, col))
    for e, spec in enumerate(EXPERIMENTS)
    for v, by_col in spec.multipliers.items()
    for col, m in by_col.items()
)


@dataclass
class _TruthSums:
    """Window sums over truth-population members, per experiment (and variant for effects).

    ``base``/``base_exposed``/``increment`` are the whole experiment's; the ``cell_``
    arrays hold the same sums split by (device, country) cell, for the per-slice truths
    (kept apart so the whole-experiment sums add up in the same order as they always did).
    """

    base: np.ndarray = field(
        default_factory=lambda: np.zeros((len(EXPERIMENTS), len(METRIC_COLUMNS)))
    )
    base_exposed: np.ndarray = field(
        default_factory=lambda: np.zeros((len(EXPERIMENTS), len(METRIC_COLUMNS)))
    )
    increment: np.ndarray = field(default_factory=lambda: np.zeros(len(_TERMS)))
    cell_base: np.ndarray = field(
        default_factory=lambda: np.zeros((len(EXPERIMENTS), N_CELLS, len(METRIC_COLUMNS)))
    )
    cell_base_exposed: np.ndarray = field(
        default_factory=lambda: np.zeros((len(EXPERIMENTS), N_CELLS, len(METRIC_COLUMNS)))
    )
    cell_increment: np.ndarray = field(default_factory=lambda: np.zeros((len(_TERMS), N_CELLS)))


def _count_increment(
    rng: np.random.Generator, y0: np.ndarray, mean0: np.ndarray, multiplier: float
) -> np.ndarray:
    """Integer change that moves a count's expected value from mean0 to multiplier*mean0.

    Raising adds an independent Poisson((m-1) mean0) - a sum of Poissons is Poisson, so a
    Poisson column stays Poisson. Lowering thins the untreated count binomially.
    """
    if multiplier >= 1.0:
        return rng.poisson((multiplier - 1.0) * mean0)
    return -rng.binomial(y0, 1.0 - multiplier)


def _thin(rng: np.random.Generator, inc: np.ndarray, share: np.ndarray) -> np.ndarray:
    """Keep each unit of a count increment with probability ``share`` (per member).

    Thinning Poisson(lambda) gives Poisson(share x lambda), and thinning a binomial removal
    Binomial(y0, 1-m) gives Binomial(y0, (1-m) share): either way the member's lift is
    scaled by its factor, as for watch_seconds.
    """
    kept = rng.binomial(np.abs(inc), share)
    return np.where(inc < 0, -kept, kept)


def _day_slice(seed: int, b: int, day: int, m: _Block, truth: _TruthSums) -> pa.RecordBatch:
    """Daily rows of one block for one day; adds this day's window rows to the truth sums."""
    rng = _daily_rng(seed, b, day)
    weekend = (STUDY_START.weekday() + day) % 7 >= 5
    idx = np.flatnonzero(rng.random(len(m.log_lam)) < m.p_active[int(weekend)])
    lam = np.exp(m.log_lam[idx]) * (WEEKEND_WATCH_FACTOR if weekend else 1.0)

    # Untreated potential outcome Y0 for every active member.
    watch_mean = WATCH_SECONDS_PER_LAMBDA * lam
    sessions_mean = 1.0 + EXTRA_SESSIONS_PER_LAMBDA * lam
    watch = rng.gamma(WATCH_SHAPE, watch_mean / WATCH_SHAPE)
    sessions = 1 + rng.poisson(EXTRA_SESSIONS_PER_LAMBDA * lam)
    plays_mean = PLAY_TRIALS_PER_SESSION * PLAY_PROB * sessions
    plays = rng.binomial(PLAY_TRIALS_PER_SESSION * sessions, PLAY_PROB)
    errors_mean = ERRORS_PER_PLAY * DEVICE_ERROR_FACTOR[m.device[idx]] * plays
    errors = rng.poisson(errors_mean)
    y0 = {"watch_seconds": watch, "sessions": sessions, "plays": plays, "errors": errors}
    means = {"sessions": sessions_mean, "plays": plays_mean, "errors": errors_mean}

    exp = m.experiment[idx]
    since = day - m.assign_day[idx]
    in_window = m.in_truth[idx] & (since >= 0) & (since < WINDOW_DAYS)
    exposed = m.exposed[idx]
    treated = exposed & (since >= 0)
    m.any_watch[idx[in_window]] = True

    n_exp = len(EXPERIMENTS)
    window_rows = np.flatnonzero(in_window)
    window_exp = exp[window_rows]
    window_exposed = exposed[window_rows]
    window_code = window_exp.astype(np.intp) * N_CELLS + m.cell[idx[window_rows]]
    for c, col in enumerate(METRIC_COLUMNS):
        y = y0[col][window_rows].astype(np.float64)
        truth.base[:, c] += np.bincount(window_exp, y, minlength=n_exp)
        truth.base_exposed[:, c] += np.bincount(
            window_exp[window_exposed], y[window_exposed], minlength=n_exp
        )
        truth.cell_base[:, :, c] += np.bincount(window_code, y, minlength=n_exp * N_CELLS).reshape(
            n_exp, N_CELLS
        )
        truth.cell_base_exposed[:, :, c] += np.bincount(
            window_code[window_exposed], y[window_exposed], minlength=n_exp * N_CELLS
        ).reshape(n_exp, N_CELLS)

    # Treated potential outcomes: drawn for every exposed member of the experiment,
    # whatever variant it was assigned, so the truth covers the whole population.
    observed = {col: v.copy() for col, v in y0.items()}
    for t, term in enumerate(_TERMS):
        rows = np.flatnonzero(treated & (exp == term.experiment))
        base = y0[term.column][rows]
        cell = m.cell[idx[rows]]
        share = None if term.cell_factor is None else term.cell_factor.ravel()[cell]
        if term.column == "watch_seconds":
            lift = term.multiplier - 1.0
            inc: np.ndarray = lift * base if share is None else (lift * share) * base
        else:
            # The full lift from the shared stream (whose later draws must not move), then
            # each member's share of it from the term's own stream.
            inc = _count_increment(rng, base, means[term.column][rows], term.multiplier)
            if share is not None:
                inc = _thin(_slice_rng(seed, b, day, t), inc, share)
        in_w = in_window[rows]
        truth.increment[t] += float(inc[in_w].sum())
        truth.cell_increment[t] += np.bincount(
            cell[in_w], inc[in_w].astype(np.float64), minlength=N_CELLS
        )
        mine = m.variant[idx[rows]] == term.variant
        observed[term.column][rows[mine]] += inc[mine]

    day_value = (STUDY_START - _EPOCH).days + day
    return pa.record_batch(
        [
            pa.array(m.first_id + idx, pa.int64()),
            pa.array(np.full(len(idx), day_value, np.int32), pa.int32()).cast(pa.date32()),
            pa.array(observed["watch_seconds"], pa.float64()),
            pa.array(observed["sessions"].astype(np.int32), pa.int32()),
            pa.array(observed["plays"].astype(np.int32), pa.int32()),
            pa.array(observed["errors"].astype(np.int32), pa.int32()),
        ],
        schema=DAILY_SCHEMA,
    )


# --- plays and their start latency ------------------------------------------------------
@dataclass
class _LatencyTruth:
    """Whole-millisecond histograms of the truth population's window plays.

    ``hist[world, who, ms]``: plays with that latency, under the control (world 0) or the
    variant's (world 1) potential outcome, over all members (who 0) or the truly exposed
    (who 1). Latencies are whole milliseconds, so the histograms give the exact quantiles
    of the rows in O(max latency) memory, however many plays there are.
    """

    hist: np.ndarray = field(default_factory=lambda: np.zeros((2, 2, 1), np.int64))

    def add(self, world: int, who: int, values: np.ndarray) -> None:
        counts = np.bincount(values, minlength=self.hist.shape[2])
        if counts.size > self.hist.shape[2]:
            grown = np.zeros((2, 2, counts.size), np.int64)
            grown[:, :, : self.hist.shape[2]] = self.hist
            self.hist = grown
        self.hist[world, who] += counts


def _whole_ms(x: np.ndarray) -> np.ndarray:
    return np.maximum(np.rint(x), 1.0)


def _plays_slice(
    seed: int, b: int, day: int, m: _Block, daily: pa.RecordBatch, truth: _LatencyTruth
) -> pa.RecordBatch:
    """Play rows of one block for one day, from the day's engagement rows: ``plays`` rows
    for each member-day of the plays experiment in the member's window. Adds the truth
    population's plays, under both potential outcomes, to ``truth``."""
    idx = daily.column("member_id").to_numpy() - m.first_id
    plays = daily.column("plays").to_numpy()
    since = day - m.assign_day[idx]
    keep = (m.experiment[idx] == _PLAYS_EXPERIMENT) & (since >= 0) & (since < WINDOW_DAYS)
    member = np.repeat(idx[keep], plays[keep])  # rows in member order, as the daily table
    m.played[member] = True

    rng = _plays_rng(seed, b, day)
    noise = rng.standard_normal(member.size)
    stall = rng.random(member.size) < STALL_RATE
    delay = rng.uniform(*STALL_MS, member.size)
    base = np.exp(m.latency_level[member] + LATENCY_PLAY_SD * noise)
    y0 = _whole_ms(np.where(stall, base + delay, base))
    # The variant's potential outcome, for every member whatever its variant: an exposed
    # member's stall is shortened (a window day is always on or after the assignment date).
    exposed = m.exposed[member]
    y1 = np.where(exposed & stall, _whole_ms(base + STALL_TREATED_FACTOR * delay), y0)

    pop = m.in_truth[member]
    for world, y in enumerate((y0, y1)):
        values = y[pop].astype(np.int64)
        truth.add(world, 0, values)
        truth.add(world, 1, values[exposed[pop]])

    observed = np.where(m.variant[member] == _PLAYS_VARIANT, y1, y0)
    day_value = (STUDY_START - _EPOCH).days + day
    return pa.record_batch(
        [
            pa.array(m.first_id + member, pa.int64()),
            pa.array(np.full(member.size, day_value, np.int32), pa.int32()).cast(pa.date32()),
            pa.array(observed, pa.float64()),
        ],
        schema=PLAYS_SCHEMA,
    )


def _hist_quantile(hist: np.ndarray, q: float) -> float | None:
    """The q-quantile of the values a histogram of whole numbers counts, as
    ``numpy.quantile(values, q, method="inverted_cdf")``: the sorted value at 0-based
    position ``ceil(q n) - 1`` (at least 0)."""
    n = int(hist.sum())
    if n == 0:
        return None
    position = max(math.ceil(n * q) - 1, 0)
    return float(np.searchsorted(np.cumsum(hist), position + 1, side="left"))


def _quantile_truths(blocks: list[_Block], truth: _LatencyTruth) -> EventQuantileTruths:
    units = units_exposed = 0
    for m in blocks:
        pop = m.in_truth & (m.experiment == _PLAYS_EXPERIMENT) & m.played
        units += int(pop.sum())
        units_exposed += int((pop & m.exposed).sum())

    def diff(a: float | None, b: float | None) -> tuple[float | None, float | None]:
        if a is None or b is None:
            return None, None
        return b - a, _ratio(b - a, a)

    quantiles = {}
    for q in LATENCY_QUANTILES:
        c, v = (_hist_quantile(truth.hist[w, 0], q) for w in (0, 1))
        c_exp, v_exp = (_hist_quantile(truth.hist[w, 1], q) for w in (0, 1))
        itt_abs, itt_rel = diff(c, v)
        exp_abs, exp_rel = diff(c_exp, v_exp)
        quantiles[f"{q:g}"] = QuantileTruth(
            control_quantile=c,
            variant_quantile=v,
            true_itt_abs=itt_abs,
            true_itt_rel=itt_rel,
            control_quantile_exposed=c_exp,
            variant_quantile_exposed=v_exp,
            true_effect_on_exposed_abs=exp_abs,
            true_effect_on_exposed_rel=exp_rel,
        )
    return EventQuantileTruths(
        table="plays",
        column=LATENCY_COLUMN,
        units=units,
        rows=int(truth.hist[0, 0].sum()),
        units_exposed=units_exposed,
        rows_exposed=int(truth.hist[0, 1].sum()),
        quantiles=quantiles,
    )


# --- writing ----------------------------------------------------------------------------
class _RowGroupWriter:
    """Streams batches into Parquet row groups of exactly ``row_group_size`` rows.

    ParquetWriter.write_table makes at least one row group per call, so slices smaller than
    a row group are buffered here; otherwise a 40,000-member block would become a tiny row
    group and the footer statistics (what lets a date filter skip data) would be diluted.
    Encoding and compression run on a background thread (Arrow releases the GIL) while the
    next slice is drawn; at most one row group is in flight, so memory stays bounded.
    """

    def __init__(self, path: Path, schema: pa.Schema, row_group_size: int) -> None:
        # Dictionary encoding pays off for repeated values (dates, labels) and only costs
        # time on near-unique ones (ids, measurements), so it is limited to the former.
        dictionary = [f.name for f in schema if f.type in (pa.string(), pa.date32())]
        self._writer = pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=dictionary)
        self._schema = schema
        self._size = row_group_size
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._pool = ThreadPoolExecutor(max_workers=1)
        self._in_flight: Future[None] | None = None
        self.rows = 0

    def append(self, batch: pa.RecordBatch | pa.Table) -> None:
        batches = batch.to_batches() if isinstance(batch, pa.Table) else [batch]
        self._pending.extend(batches)
        self._pending_rows += batch.num_rows
        self.rows += batch.num_rows
        if self._pending_rows >= self._size:
            table = pa.Table.from_batches(self._pending, self._schema)
            full = (table.num_rows // self._size) * self._size
            self._write(table.slice(0, full))
            rest = table.slice(full)
            self._pending = rest.to_batches()
            self._pending_rows = rest.num_rows

    def _write(self, table: pa.Table) -> None:
        self._wait()
        self._in_flight = self._pool.submit(
            self._writer.write_table, table, row_group_size=self._size
        )

    def _wait(self) -> None:
        if self._in_flight is not None:
            # .result() re-raises a failed write here, in the generating thread.
            self._in_flight.result()
            self._in_flight = None

    def close(self) -> None:
        try:
            if self._pending_rows:
                self._write(pa.Table.from_batches(self._pending, self._schema))
            self._wait()
        finally:
            self._pending = []
            self._pool.shutdown(wait=True)
            self._writer.close()


# --- truth ------------------------------------------------------------------------------
def _ratio(num: float, den: float) -> float | None:
    return num / den if den != 0 else None


def _population(n: int, n_exposed: int) -> dict[str, float]:
    return {
        "members": n,
        "exposed_members": n_exposed,
        "exposed_share": _ratio(n_exposed, n) or 0.0,
    }


def _effects(
    e: int,
    n: int,
    n_exposed: int,
    any_watch: int,
    base: np.ndarray,
    base_exposed: np.ndarray,
    increment: np.ndarray,
) -> dict[str, dict[str, EffectTruth]]:
    """Truths of experiment ``e`` over one population from its window sums: ``base`` and
    ``base_exposed`` per metric column, ``increment`` per effect term."""
    spec = EXPERIMENTS[e]
    effects: dict[str, dict[str, EffectTruth]] = {}
    for v, variant in enumerate(spec.variants[1:], start=1):
        by_metric: dict[str, EffectTruth] = {}
        for c, col in enumerate(METRIC_COLUMNS):
            inc = sum(
                increment[t]
                for t, term in enumerate(_TERMS)
                if term.experiment == e and term.variant == v and term.column == col
            )
            b, b_exp = base[c], base_exposed[c]
            by_metric[col] = EffectTruth(
                control_mean=_ratio(b, n),
                true_itt_abs=_ratio(inc, n),
                true_itt_rel=_ratio(inc, b),
                control_mean_exposed=_ratio(b_exp, n_exposed),
                true_effect_on_exposed_abs=_ratio(inc, n_exposed),
                true_effect_on_exposed_rel=_ratio(inc, b_exp),
            )
        # Treatments scale values on active days but never change whether a member is
        # active, and every active day has watch_seconds > 0: the share with any watch is
        # untouched, so its true effect is exactly zero.
        by_metric[ANY_WATCH] = EffectTruth(
            control_mean=_ratio(any_watch, n),
            true_itt_abs=0.0,
            true_itt_rel=0.0,
            control_mean_exposed=None,
            true_effect_on_exposed_abs=0.0,
            true_effect_on_exposed_rel=0.0,
        )
        effects[variant] = by_metric
    return effects


def _experiment_truth(
    e: int, truth: _TruthSums, blocks: list[_Block]
) -> tuple[dict[str, float], dict[str, dict[str, EffectTruth]], dict[str, dict[str, SliceTruth]]]:
    """The whole truth population's truths, and the same per slice (one value of one
    dimension), computed alike from the members' own potential outcomes."""
    n_cell = np.zeros(N_CELLS, np.int64)
    n_exposed_cell = np.zeros(N_CELLS, np.int64)
    any_watch_cell = np.zeros(N_CELLS, np.int64)
    for m in blocks:
        pop = m.in_truth & (m.experiment == e)
        n_cell += np.bincount(m.cell[pop], minlength=N_CELLS)
        n_exposed_cell += np.bincount(m.cell[pop & m.exposed], minlength=N_CELLS)
        any_watch_cell += np.bincount(m.cell[pop & m.any_watch], minlength=N_CELLS)
    n, n_exposed = int(n_cell.sum()), int(n_exposed_cell.sum())
    effects = _effects(
        e,
        n,
        n_exposed,
        int(any_watch_cell.sum()),
        truth.base[e],
        truth.base_exposed[e],
        truth.increment,
    )
    cells = np.arange(N_CELLS).reshape(len(DEVICES), len(COUNTRIES))
    by_dimension = {"device": list(cells), "country": list(cells.T)}
    slices: dict[str, dict[str, SliceTruth]] = {}
    for dim, values in SLICE_DIMENSIONS.items():
        slices[dim] = {}
        for value, members in zip(values, by_dimension[dim], strict=True):
            k, k_exposed = int(n_cell[members].sum()), int(n_exposed_cell[members].sum())
            slices[dim][value] = SliceTruth(
                truth_population=_population(k, k_exposed),
                true_effects=_effects(
                    e,
                    k,
                    k_exposed,
                    int(any_watch_cell[members].sum()),
                    truth.cell_base[e, members].sum(axis=0),
                    truth.cell_base_exposed[e, members].sum(axis=0),
                    truth.cell_increment[:, members].sum(axis=1),
                ),
            )
    return _population(n, n_exposed), effects, slices


def _heterogeneity(spec: ExperimentSpec) -> dict[str, dict[str, dict[str, Heterogeneity]]]:
    """Which (variant, metric) effects differ across which dimension, by construction.

    - ``planted``: the term's slice factors differ across the dimension's values.
    - ``baseline``: a multiplier uniform across the dimension, on a dimension that moves the
      baseline and the exposure rate (device): the relative lift on exposed members is the
      same everywhere, but the absolute ITT effect differs with the baseline, and the ITT
      relative lift with the exposure rate (and with how the exposed share of the value
      moves with the baseline).
    - ``none``: no effect, or a multiplier uniform across a dimension that moves nothing
      (country): the expected ITT effect, absolute and relative, is the same everywhere.

    Device and country are drawn independently, so factors on one dimension never make
    the other heterogeneous. "Expected" is over the draw of the members: the finite-
    population truths of the slices of a homogeneous pair still differ a little, because
    each slice holds different members.
    """
    out: dict[str, dict[str, dict[str, Heterogeneity]]] = {}
    for variant in spec.variants[1:]:
        out[variant] = {}
        for metric in (*METRIC_COLUMNS, ANY_WATCH):
            m = spec.multipliers.get(variant, {}).get(metric)
            sliced = metric in spec.slice_factors.get(variant, {})
            factors = spec.factors(variant, metric)
            by_dim: dict[str, Heterogeneity] = {}
            for dim in SLICE_DIMENSIONS:
                if m is None or m == 1.0:
                    by_dim[dim] = Heterogeneity(False, False, "none")
                elif sliced and len(set(factors[dim].values())) > 1:
                    by_dim[dim] = Heterogeneity(True, True, "planted")
                elif dim in BASELINE_DIMENSIONS:
                    by_dim[dim] = Heterogeneity(True, True, "baseline")
                else:
                    by_dim[dim] = Heterogeneity(False, False, "none")
            out[variant][metric] = by_dim
    return out


def _heterogeneity_notes(spec: ExperimentSpec) -> list[str]:
    notes = []
    for variant, by_col in spec.multipliers.items():
        for col, m in by_col.items():
            if col in spec.slice_factors.get(variant, {}):
                factors = spec.factors(variant, col)
                listed = "; ".join(
                    f"{dim} " + ", ".join(f"{value} {f:g}" for value, f in by_value.items())
                    for dim, by_value in factors.items()
                )
                planted = [d for d, f in factors.items() if len(set(f.values())) > 1]
                notes.append(
                    f"{variant} x {col}: PLANTED heterogeneity by {' and '.join(planted)}. An "
                    f"exposed member's multiplier is 1 + {m - 1:g} x f_device x f_country "
                    f"with factors {listed}; a member with factor 0 is unaffected."
                )
            else:
                notes.append(
                    f"{variant} x {col}: x{m:g} for every exposed member. Homogeneous by "
                    "country; by device the absolute ITT effect (and the ITT lift, through "
                    "the exposure rate) differs because device moves the baseline, while the "
                    "relative lift on exposed members is the same."
                )
    notes.append(
        "Every other (variant, metric), proportion_any_watch included, has zero effect in "
        "every slice: homogeneous by construction."
    )
    return notes


def _quantile_notes() -> list[str]:
    lo, hi = STALL_MS
    median = ", ".join(
        f"{d} {ms:g}" for d, ms in zip(DEVICES, LATENCY_MEDIAN_MS.tolist(), strict=True)
    )
    return [
        f"plays: one row per play of a {EXPERIMENTS[_PLAYS_EXPERIMENT].experiment_id} member "
        f"on a day of its {WINDOW_DAYS}-day window [assignment date, +{WINDOW_DAYS - 1} days] "
        "(cut at data_end), exactly engagement_daily.plays rows per member-day. "
        f"{LATENCY_COLUMN} = round(exp(member level + play noise) [+ stall delay]) in whole "
        f"ms, >= 1: member level = log device median + {LATENCY_ENGAGEMENT_SLOPE:g} x "
        f"(log lambda - log device factor) + N(0, {LATENCY_MEMBER_SD:g}^2) with device "
        f"medians {median} ms (heavy viewers start faster); play noise ~ N(0, "
        f"{LATENCY_PLAY_SD:g}^2); with probability "
        f"{STALL_RATE:g} a play stalls and waits Uniform({lo:g}, {hi:g}) ms more.",
        f"PLANTED tail effect: for exposed {_PLAYS_VARIANT_NAME} members a stall's extra "
        f"delay is multiplied by {STALL_TREATED_FACTOR:g}; plays without a stall are "
        "unchanged. Every stall lasts over "
        f"{STALL_TREATED_FACTOR * lo:g} ms in both potential outcomes, above the median of "
        "all plays (about 390 ms at the default size), so the plays below the median are the "
        "same in both and the true median difference is exactly 0, while p90 and p95, which "
        "lie among the stalls, fall.",
        "quantile_truths[variant][column].quantiles[q]: over every window play of the truth-"
        "population members, each play's latency under control and under the variant's "
        "potential outcome; control_quantile and variant_quantile are the q-quantiles "
        "(inverted CDF, numpy method='inverted_cdf') of the two sets of values, true_itt_abs "
        "their difference and true_itt_rel that over control_quantile; the _exposed fields "
        "are the same over truly exposed members' plays. units and rows count the members "
        "with a window play and their plays.",
    ]


def _day(index: int) -> str:
    return (STUDY_START + timedelta(days=index)).isoformat()


# --- public entry point -----------------------------------------------------------------
def generate(
    out_dir: Path, members: int = 40_000, seed: int = 7, *, row_group_size: int = 1_000_000
) -> Manifest:
    """Write the sample tables and manifest to ``out_dir`` and return the manifest.

    Output depends only on ``(members, seed)``; ``row_group_size`` changes the Parquet
    layout, never the rows. Each file is written to a temporary name and renamed into place,
    so an interrupted run leaves earlier output intact.
    """
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    if row_group_size < 1:
        raise ValueError(f"row_group_size must be at least 1, got {row_group_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    counts = _Counts()
    blocks: list[_Block] = []
    n_blocks = math.ceil(members / MEMBER_BLOCK)
    with atomic_path(out_dir / ASSIGNMENTS_FILE) as tmp:
        writer = _RowGroupWriter(tmp, ASSIGNMENTS_SCHEMA, row_group_size)
        try:
            for b in range(n_blocks):
                n = min(MEMBER_BLOCK, members - b * MEMBER_BLOCK)
                block, table = _draw_block(seed, b, n, counts)
                blocks.append(block)
                writer.append(table)
        finally:
            writer.close()
        assignment_rows = writer.rows

    # Day-major order puts the file in (date, member_id) order, so row-group min/max
    # statistics on `date` are narrow and a date-range filter skips most of the file.
    # The plays table is cut from the daily rows as they are written, so its rows per
    # member-day are the daily `plays` by construction, in the same (date, member_id) order.
    truth = _TruthSums()
    latency = _LatencyTruth()
    with atomic_path(out_dir / DAILY_FILE) as tmp, atomic_path(out_dir / PLAYS_FILE) as tmp_plays:
        writer = _RowGroupWriter(tmp, DAILY_SCHEMA, row_group_size)
        plays_writer = _RowGroupWriter(tmp_plays, PLAYS_SCHEMA, row_group_size)
        try:
            for day in range(N_DAYS):
                for b, block in enumerate(blocks):
                    daily = _day_slice(seed, b, day, block, truth)
                    writer.append(daily)
                    plays_writer.append(_plays_slice(seed, b, day, block, daily, latency))
        finally:
            try:
                writer.close()
            finally:
                plays_writer.close()
        daily_rows = writer.rows
        plays_rows = plays_writer.rows

    experiments = []
    for e, spec in enumerate(EXPERIMENTS):
        population, effects, slices = _experiment_truth(e, truth, blocks)
        experiments.append(
            ExperimentManifest(
                experiment_id=spec.experiment_id,
                share_of_members=spec.share,
                variants=list(spec.variants),
                weights=list(spec.weights),
                enrolment_start=_day(ENROLMENT_OFFSET),
                enrolment_end=_day(ENROLMENT_OFFSET + ENROLMENT_DAYS - 1),
                multipliers={v: dict(c) for v, c in spec.multipliers.items()},
                defects=list(spec.defects),
                counts={
                    "units_enrolled": int(counts.enrolled[e]),
                    "assignment_rows": int(counts.rows[e]),
                    "lost_assignment_rows": int(counts.lost[e]),
                    "multi_variant_units": int(counts.multi[e]),
                    "duplicate_rows": int(counts.dup[e]),
                    "exposure_flags_dropped": int(counts.dropped[e]),
                    "units_incomplete_window": int(counts.incomplete[e]),
                },
                truth_population=population,
                true_effects=effects,
                slice_factors={
                    v: {col: spec.factors(v, col) for col in by_col}
                    for v, by_col in spec.slice_factors.items()
                },
                slice_truths=slices,
                heterogeneity=_heterogeneity(spec),
                heterogeneity_notes=_heterogeneity_notes(spec),
                quantile_truths=(
                    {_PLAYS_VARIANT_NAME: {LATENCY_COLUMN: _quantile_truths(blocks, latency)}}
                    if e == _PLAYS_EXPERIMENT
                    else {}
                ),
                quantile_notes=_quantile_notes() if e == _PLAYS_EXPERIMENT else [],
            )
        )
    manifest = Manifest(
        generator_version=GENERATOR_VERSION,
        seed=seed,
        members=members,
        dates={
            "study_start": STUDY_START.isoformat(),
            "enrolment_start": _day(ENROLMENT_OFFSET),
            "enrolment_end": _day(ENROLMENT_OFFSET + ENROLMENT_DAYS - 1),
            "data_end": DATA_END.isoformat(),
            "window_days": WINDOW_DAYS,
            "pre_period_days": PRE_PERIOD_DAYS,
            "last_complete_assignment_date": _day(LAST_COMPLETE_DAY),
        },
        files={
            "experiment_assignments": {"path": ASSIGNMENTS_FILE, "rows": assignment_rows},
            "engagement_daily": {
                "path": DAILY_FILE,
                "rows": daily_rows,
                "sort_order": ["date", "member_id"],
            },
            "plays": {
                "path": PLAYS_FILE,
                "rows": plays_rows,
                "sort_order": ["date", "member_id"],
                "experiments": [EXPERIMENTS[_PLAYS_EXPERIMENT].experiment_id],
            },
        },
        notes=[
            "Truths are finite-population means over the experiment's enrolled members whose "
            "7-day window [assignment date, +6 days] ends on or before data_end and who were "
            "assigned to one variant only; lost assignment rows do not remove a member.",
            "true_itt_abs = mean over those members of Y(variant) - Y(control) summed over the "
            "window; true_itt_rel divides by the control mean; true_effect_on_exposed_* is the "
            "same over truly exposed members (before any exposure-logging defect).",
            "A multiplier m scales a column's expected daily value for exposed members from "
            "their assignment date on: watch_seconds exactly, count columns by an added "
            "Poisson((m-1) x expected count).",
            "With slice_factors for a (variant, column), an exposed member's multiplier is "
            "1 + (m-1) x f_device x f_country with the factors of its own device and country; "
            "multipliers then holds m, the multiplier of a member whose factors are both 1.",
            "slice_truths[dimension][value] are the same truths over the truth-population "
            "members with that device or country, from their own potential outcomes. "
            "heterogeneity[variant][metric][dimension] says whether the true ITT effect "
            "(absolute, relative) differs across the dimension's values by construction: "
            "planted (slice factors), baseline (a uniform multiplier: device moves the "
            "baseline and the exposure rate) or none (zero effect, or country, which moves "
            "nothing). Slices of a homogeneous pair still differ a little in their "
            "finite-population truths, because each holds different members.",
            "proportion_any_watch has a true effect of exactly 0: treatments change values on "
            "active days, never whether a member is active.",
        ],
        experiments=experiments,
    )
    with atomic_path(out_dir / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return manifest


def write_sample(out_dir: Path, *, members: int, seed: int) -> Path:
    """Generate data into ``out_dir`` and put the sample experiments.toml beside it."""
    import importlib.resources
    import shutil

    generate(out_dir, members=members, seed=seed)
    template = importlib.resources.files("xpkit.sample_data").joinpath("experiments.toml")
    config = out_dir / "experiments.toml"
    shutil.copyfile(str(template), config)
    return config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xpkit.sample_data.generate",
        description="Write xpkit's deterministic sample experiment data and its true effects.",
        epilog="example: python -m xpkit.sample_data.generate --members 1000000 --seed 7 --out data/",
    )
    parser.add_argument("--members", type=int, default=40_000, help="number of members")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--row-group-size", type=int, default=1_000_000, help="Parquet rows per row group"
    )
    args = parser.parse_args(argv)
    if args.members < 1 or args.row_group_size < 1:
        parser.error("--members and --row-group-size must be at least 1")
    started = time.perf_counter()
    manifest = generate(args.out, args.members, args.seed, row_group_size=args.row_group_size)
    elapsed = time.perf_counter() - started
    files = manifest.files
    print(
        f"wrote {files['experiment_assignments']['rows']:,} assignment rows, "
        f"{files['engagement_daily']['rows']:,} daily rows and {files['plays']['rows']:,} "
        f"play rows for {args.members:,} members (seed {args.seed}) to {args.out} in "
        f"{elapsed:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
