"""Experiment and run configuration: TOML in, validated pydantic models out.

A mistake anywhere — malformed TOML, an unknown field, weights that do not sum to 1, a
control that is not one of the variants, a path that does not exist — becomes one
:class:`~xpkit.errors.ConfigError` that names the file and the field.

Example ``experiments.toml``::

    metrics_dir = "metrics"            # relative paths are relative to this file
    shipped_metrics = true             # add the metrics shipped with xpkit (the default)
    engine = "duckdb"                  # or "spark"; --engine overrides it

    [tables]                           # logical table name -> Parquet path/glob or table
    experiment_assignments = "data/experiment_assignments.parquet"
    engagement_daily = "data/engagement_daily/*.parquet"

    [[experiment]]
    id = "homepage_ranking_v2"
    control = "control"
    weights = { control = 0.5, treatment = 0.5 }
    window = [0, 6]                    # days after the assignment date, inclusive
    metrics = ["watch_seconds", "streamers"]
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from xpkit.errors import ConfigError
from xpkit.locations import is_file_location, is_remote

Population = Literal["itt", "tot"]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
# Windows are in days; beyond ten years a date would leave the calendar's range sooner or
# later, and no experiment runs that long.
MAX_WINDOW_DAYS = 3650
Day = Annotated[StrictInt, Field(ge=-MAX_WINDOW_DAYS, le=MAX_WINDOW_DAYS)]
_MEMORY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB|%)\s*", re.I)


def check_memory_limit(value: str) -> str:
    """DuckDB's memory limit format: a size such as 2GB, 500MB, 1.5GiB, or a share like 75%."""
    m = _MEMORY.fullmatch(value)
    if m is None or float(m.group(1)) <= 0 or (m.group(2) == "%" and float(m.group(1)) > 100):
        raise ValueError(
            f"{value!r} is not a memory limit; write a size such as 2GB, 500MB or 1.5GiB, or a "
            f"share of the machine's memory such as 75%"
        )
    return value.strip()


def max_threads() -> int:
    return 4 * (os.cpu_count() or 1)


def check_threads(value: int) -> int:
    """Between 1 and four per CPU core."""
    if not 1 <= value <= max_threads():
        raise ValueError(
            f"threads must be between 1 and {max_threads()} (4 x {os.cpu_count() or 1} CPU "
            f"cores), got {value}"
        )
    return value


def check_table_name(value: str) -> str:
    """A table name sqlglot can quote: ``name``, ``schema.name`` or ``catalog.schema.name``."""
    from sqlglot import exp
    from sqlglot.errors import SqlglotError

    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"{value!r} contains a control character (a newline, a tab...)")
    try:
        exp.to_table(value)
    except SqlglotError as err:
        raise ValueError(
            f"{value!r} is not a table name ({str(err).splitlines()[0]}); write it as "
            f"name, schema.name or catalog.schema.name, with balanced quotes"
        ) from None
    return value


TableName = Annotated[StrictStr, Field(min_length=1), AfterValidator(check_table_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _no_exposure(value: object) -> object:
    """``exposed = false`` (or ``""``): the table has no exposure column."""
    if value is False or value == "":
        return None
    if value is True:
        raise ValueError(
            'true names no column: write the exposure column\'s name (exposed = "exposed_flag"), '
            "or exposed = false when the table has none (intent-to-treat only)"
        )
    return value


class AssignmentColumns(_Strict):
    """How the assignment table's columns are named (defaults match the sample data).

    ``exposed`` is the 0/1 (boolean) column saying the unit reached the changed surface,
    logged for control units too; ``exposed = false`` when there is none: xpkit then
    analyses intent-to-treat only (no TOT population, no complier effect).
    """

    table: TableName = "experiment_assignments"
    experiment: Identifier = "experiment_id"
    unit: Identifier = "member_id"
    variant: Identifier = "variant"
    timestamp: Identifier = "assignment_timestamp"
    exposed: Annotated[Identifier | None, BeforeValidator(_no_exposure)] = "exposed_flag"


class ExposureLog(_Strict):
    """An optional event log of exposures, checked against the assignments."""

    table: TableName = "exposures"
    experiment: Identifier = "experiment_id"
    unit: Identifier = "member_id"
    timestamp: Identifier = "exposure_timestamp"


class UnitAttributes(_Strict):
    """A table of unit attributes that slices may use besides the assignment table's columns.

    One row per unit, or, with ``time``, rows valid from that time on: a unit's attribute is
    its row's as of its first assignment (the latest row at or before it), so what the
    treatment changes later cannot move a unit between slices.
    """

    table: TableName = "unit_attributes"
    unit: Identifier = "member_id"
    time: Identifier | None = None


# A slice is one dimension (``device``) or a two-way breakdown (``device*country``).
SliceSpec = Annotated[
    StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\*[A-Za-z_][A-Za-z0-9_]*)?$")
]
# What a slice value becomes when it is NULL, or outside a dimension's top values.
MISSING_SLICE = "(missing)"
OTHER_SLICE = "(other)"
ALL_SLICES = "(all)"


def slice_dimensions(spec: str) -> tuple[str, ...]:
    """``"device*country"`` -> ``("device", "country")``; ``"device"`` -> ``("device",)``."""
    return tuple(spec.split("*"))


_SLICE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\*[A-Za-z_][A-Za-z0-9_]*)?$")


def parse_slices(text: str) -> list[str]:
    """``--slice device,country`` or ``device*country`` -> the slices, checked."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise ValueError("name at least one column, e.g. --slice device,country")
    bad = [v for v in values if not _SLICE.match(v)]
    if bad:
        raise ValueError(
            f"{bad[0]!r} is not a slice: give column names separated by commas "
            f"(device,country), or two joined by * for a two-way breakdown (device*country)"
        )
    return check_slices(values)


def check_slices(values: list[str]) -> list[str]:
    """Slices are listed once each, and a two-way breakdown names two different columns."""
    seen: set[tuple[str, ...]] = set()
    for value in values:
        dims = slice_dimensions(value)
        if len(set(dims)) != len(dims):
            raise ValueError(f"slice {value!r} names the same column twice")
        key = tuple(sorted(dims))
        if key in seen:
            raise ValueError(f"slice {value!r} is listed more than once")
        seen.add(key)
    return values


class GuardrailConfig(_Strict):
    """A metric that must not get worse by more than ``margin`` (non-inferiority)."""

    metric: StrictStr = Field(min_length=1)
    margin: StrictFloat = Field(ge=0)
    relative: StrictBool = True


class ExperimentConfig(_Strict):
    """One experiment to analyse.

    ``metrics`` are the decision metrics: ``primary`` ones (default: the first listed) decide
    a ship, the rest are secondary. ``guardrails`` are computed too and block a ship when a
    harm beyond their margin cannot be ruled out.
    """

    # Strict types: "0.05" is not a number and true is not a count (an integer is accepted
    # where a float is expected: margin = 0 is 0.0).
    id: StrictStr = Field(min_length=1)
    control: StrictStr = Field(min_length=1)
    weights: dict[str, StrictFloat]
    window: tuple[Day, Day] = (0, 6)
    pre_window: tuple[Day, Day] = (-14, -1)
    metrics: list[StrictStr] = Field(min_length=1)
    populations: list[Population] = ["itt", "tot"]
    alpha: StrictFloat = Field(default=0.05, gt=0, lt=0.5)
    srm_threshold: StrictFloat = Field(default=0.001, gt=0, lt=0.5)
    start_date: date | None = None
    end_date: date | None = None
    primary: list[StrictStr] | None = None
    guardrails: list[GuardrailConfig] = []
    correction: Literal["bh", "holm", "none"] = "bh"
    min_days: StrictInt = Field(default=7, ge=1)
    min_units: StrictInt = Field(default=100, ge=1)
    max_multi_variant_share: StrictFloat = Field(default=0.01, ge=0, le=1)
    max_duplicate_row_share: StrictFloat = Field(default=0.01, ge=0, le=1)
    max_incomplete_share: StrictFloat = Field(default=0.5, ge=0, le=1)
    max_null_key_share: StrictFloat = Field(default=0.001, ge=0, le=1)
    sequential_mde: StrictFloat = Field(default=0.02, gt=0)
    # The default stopping rule: O'Brien-Fleming alpha spending toward planned_units, or,
    # without it, toward the units that detect planned_mde with planned_power according
    # to the pre-period variance of the first primary metric (decide/planning.py).
    stopping_rule: Literal["always_valid", "group_sequential", "fixed_horizon"] = "group_sequential"
    planned_mde: StrictFloat = Field(default=0.02, gt=0, lt=1)
    planned_power: StrictFloat = Field(default=0.8, gt=0, lt=1)
    planned_units: StrictInt | None = Field(default=None, ge=2)
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
    max_days: StrictInt | None = Field(default=None, ge=1)
    # Breakdowns by attributes fixed at assignment (columns of the assignment table or of
    # [unit_attributes]); values beyond the top slice_top_k by units are "(other)".
    slices: Annotated[list[SliceSpec], AfterValidator(check_slices)] = []
    slice_top_k: StrictInt = Field(default=20, ge=1, le=1000)

    @field_validator("weights")
    @classmethod
    def _weights_sum_to_one(cls, weights: dict[str, float]) -> dict[str, float]:
        if len(weights) < 2:
            raise ValueError(f"needs at least two variants, got {sorted(weights)}")
        bad = {k: v for k, v in weights.items() if not (v > 0 and math.isfinite(v))}
        if bad:
            raise ValueError(f"every weight must be a positive number, got {bad}")
        total = sum(weights.values())
        if abs(total - 1) > 1e-6:
            raise ValueError(f"weights must sum to 1, they sum to {total:g}")
        return weights

    @field_validator("window", "pre_window")
    @classmethod
    def _ordered(cls, window: tuple[int, int]) -> tuple[int, int]:
        if window[0] > window[1]:
            raise ValueError(f"start must not be after end, got {list(window)}")
        return window

    @field_validator("metrics", "populations")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            raise ValueError(f"listed more than once: {dupes}")
        return values

    @field_validator("populations")
    @classmethod
    def _itt_listed(cls, values: list[str]) -> list[str]:
        if "itt" not in values:
            raise ValueError(
                f'must include "itt" (intent-to-treat is always computed; "tot" is optional): '
                f'write ["itt"] or ["itt", "tot"], got {values}'
            )
        return values

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        if self.control not in self.weights:
            raise ValueError(
                f"control variant {self.control!r} is not one of the variants in weights "
                f"{sorted(self.weights)}"
            )
        if self.window[0] < 0:
            raise ValueError(
                f"window must start on or after the assignment day, got {list(self.window)}"
            )
        if self.pre_window[1] >= 0:
            raise ValueError(
                f"pre_window must end before the assignment day, got {list(self.pre_window)}"
            )
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError("start_date is after end_date")
        unknown_primary = sorted(set(self.primary or []) - set(self.metrics))
        if unknown_primary:
            raise ValueError(f"primary metrics {unknown_primary} are not listed in metrics")
        if self.primary == []:
            raise ValueError("primary must name at least one metric")
        guarded = [g.metric for g in self.guardrails]
        dupes = sorted({g for g in guarded if guarded.count(g) > 1})
        if dupes:
            raise ValueError(f"guardrail listed more than once: {dupes}")
        return self

    @property
    def primary_metrics(self) -> list[str]:
        return self.primary if self.primary else self.metrics[:1]

    @property
    def all_metrics(self) -> list[str]:
        """Decision metrics then guardrails, each once."""
        out = list(self.metrics)
        out += [g.metric for g in self.guardrails if g.metric not in out]
        return out

    def role(self, metric: str) -> str:
        if metric in self.primary_metrics:
            return "primary"
        if metric in self.metrics:
            return "secondary"
        return "guardrail"

    @property
    def treatments(self) -> list[str]:
        return [v for v in self.weights if v != self.control]


# Recent days an incremental run keeps per day and checks for late rows (restatement).
DEFAULT_RESTATEMENT_LOOKBACK = 3


class RunConfig(_Strict):
    """The whole configuration file."""

    tables: dict[str, StrictStr] = {}
    database: StrictStr | None = None
    metrics_dir: StrictStr | None = None
    # The metrics shipped with xpkit (xpkit.metrics) are added to the project's; false
    # leaves them out (a project whose names would clash with theirs, say).
    shipped_metrics: StrictBool = True
    engine: Literal["duckdb", "spark"] = "duckdb"  # where the SQL runs
    # The zone that turns every timestamp into a calendar date (assignment days, windows),
    # on every engine, whatever the machine's own zone.
    timezone: str = "UTC"
    # DuckDB's resources (the command line's --memory-limit, --threads and
    # --temp-directory override them): spills go to temp_directory, else a private
    # temporary folder removed when the run ends.
    memory_limit: Annotated[StrictStr, AfterValidator(check_memory_limit)] | None = None
    threads: Annotated[StrictInt, AfterValidator(check_threads)] | None = None
    temp_directory: StrictStr | None = None
    # Incremental runs (xpkit run --incremental): the folder their state is kept in (the
    # command line's --state overrides it), and how many recent days are kept per day and
    # checked for late rows on every run.
    state: StrictStr | None = None
    restatement_lookback: Annotated[StrictInt, Field(ge=0, le=366)] = DEFAULT_RESTATEMENT_LOOKBACK
    assignments: AssignmentColumns = AssignmentColumns()
    exposures: ExposureLog | None = None
    unit_attributes: UnitAttributes | None = None
    experiment: list[ExperimentConfig] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name such as 'UTC' or "
                "'America/Los_Angeles'"
            ) from None
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> RunConfig:
        ids = [e.id for e in self.experiment]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"experiment ids must be unique, repeated: {dupes}")
        for name, location in self.tables.items():
            check_table_name(name)
            if any(ord(ch) < 32 or ord(ch) == 127 for ch in location):
                raise ValueError(f"tables.{name}: {location!r} contains a control character")
        return self


# What messages call a configuration given as a dict rather than a file.
DICT_ORIGIN = "the config"


class LoadedConfig(BaseModel):
    """A validated configuration plus where it came from (paths already resolved).

    ``path`` is the TOML file, or None for a configuration given as a dict (the Python
    API); messages start with :attr:`origin`, the file or ``"the config"``.
    """

    model_config = ConfigDict(frozen=True)

    path: Path | None
    sha256: str
    run: RunConfig

    @property
    def origin(self) -> str:
        return DICT_ORIGIN if self.path is None else str(self.path)

    def experiment(self, experiment_id: str) -> ExperimentConfig:
        for e in self.run.experiment:
            if e.id == experiment_id:
                return e
        known = ", ".join(e.id for e in self.run.experiment)
        raise ConfigError(
            f"{self.origin}: no experiment with id {experiment_id!r} (known: {known})"
        )

    @property
    def metrics_dir(self) -> Path | None:
        return None if self.run.metrics_dir is None else Path(self.run.metrics_dir)


def _location(loc: tuple[int | str, ...], data: dict) -> str:
    """Render a pydantic error location as ``experiment[homepage_ranking_v2].weights``."""
    parts: list[str] = []
    node: object = data
    for item in loc:
        if isinstance(item, int) and parts:
            label = str(item)
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict):
                label = str(node[item].get("id", item))
            parts[-1] = f"{parts[-1]}[{label}]"
        else:
            parts.append(str(item))
        if isinstance(node, dict):
            node = node.get(item) if isinstance(item, str) else None
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            node = None
    return ".".join(parts) or "(top level)"


def load_config(path: str | Path) -> LoadedConfig:
    """Read, validate and resolve a configuration file, or raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML ({err})") from None
    run = _resolve_paths(_validate(data, str(path)), path.parent.resolve(), str(path))
    return LoadedConfig(path=path, sha256=hashlib.sha256(raw).hexdigest(), run=run)


def config_from_dict(data: Mapping[str, Any], base: Path | None = None) -> LoadedConfig:
    """A configuration given as a dict (the TOML file's schema), validated and resolved like
    a file's; relative paths are relative to ``base`` (default: the working directory).

    Messages name ``"the config"`` and the field. The hash is the SHA-256 of the dict as
    canonical JSON (sorted keys; dates as ISO text).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{DICT_ORIGIN}: {type(data).__name__!r} is not a configuration; give the path "
            f"of a TOML file or a dict with the same fields"
        )
    plain = dict(data)
    run = _validate(plain, DICT_ORIGIN)
    run = _resolve_paths(run, (base or Path.cwd()).resolve(), DICT_ORIGIN)
    text = json.dumps(plain, sort_keys=True, default=str, separators=(",", ":"))
    return LoadedConfig(path=None, sha256=hashlib.sha256(text.encode()).hexdigest(), run=run)


def _validate(data: dict[str, Any], origin: str) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check the spelling)"
            lines.append(f"{_location(e['loc'], data)}: {msg}")
        raise ConfigError(f"{origin}: " + "; ".join(lines)) from None


def resolve_location(location: str, base: Path) -> str | None:
    """A table's location as the engines read it: a file path or glob made absolute against
    ``base`` (None when nothing matches it); a table name or remote URL as written."""
    if not is_file_location(location, base) or is_remote(location):
        # A table inside the database, or a remote location (s3a://, gs://, hdfs://...)
        # that only the engine can see: kept as written, checked when it is read.
        return location
    resolved = location if Path(location).is_absolute() else str(base / location)
    # An existing path is taken as written (a folder named data[1] is not a pattern);
    # ** also matches the folder itself, as the engines read it.
    if not Path(resolved).exists() and not glob.glob(resolved, recursive=True):
        return None
    return resolved


def _resolve_paths(run: RunConfig, base: Path, path: str) -> RunConfig:
    """Make relative paths relative to the config file and check that they exist."""
    tables: dict[str, str] = {}
    for name, location in run.tables.items():
        resolved = resolve_location(location, base)
        if resolved is None:
            raise ConfigError(f"{path}: tables.{name}: no file matches {location!r}")
        tables[name] = resolved
    database = run.database
    if database is not None:
        db = Path(database) if Path(database).is_absolute() else base / database
        if not db.is_file():
            raise ConfigError(f"{path}: database: file {database!r} does not exist")
        database = str(db)
        with db.open("rb") as handle:
            if handle.read(16)[8:12] != b"DUCK":
                raise ConfigError(
                    f"{path}: database: {database!r} is not a DuckDB database file; point it "
                    f"at a .duckdb file, or list the tables' files under [tables]"
                )
    metrics_dir = run.metrics_dir
    if metrics_dir is not None:
        md = Path(metrics_dir) if Path(metrics_dir).is_absolute() else base / metrics_dir
        if not md.is_dir():
            raise ConfigError(f"{path}: metrics_dir: directory {metrics_dir!r} does not exist")
        metrics_dir = str(md)
    temp_directory = run.temp_directory
    if temp_directory is not None and not Path(temp_directory).is_absolute():
        temp_directory = str(base / temp_directory)
    state = run.state
    if state is not None and not Path(state).is_absolute():
        state = str(base / state)
    return run.model_copy(
        update={
            "tables": tables,
            "database": database,
            "metrics_dir": metrics_dir,
            "temp_directory": temp_directory,
            "state": state,
        }
    )
