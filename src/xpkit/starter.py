"""``xpkit init``: a starter project for a user's own tables.

Reads the columns (and the experiments and variants) of an assignment table and of fact
tables, through DuckDB, and writes an ``experiments.toml`` and a metrics module for them:

- ``[assignments]``: the experiment, unit, variant, timestamp and exposure columns, guessed
  from names and types (``--column ROLE=NAME`` sets one; no exposure column guessed means
  ``exposed = false``: intent-to-treat only);
- one ``Source`` per fact table, its unit column the assignments' (or a guess) and its date
  the DATE or TIMESTAMP column whose name looks most like a date;
- one ``Metric`` per numeric column (its per-unit sum, CUPED on the pre-period) and per
  boolean column (the share of units with a true value);
- one ``[[experiment]]`` per experiment id in the assignments, equal weights over the
  variants found (the designed split is not in the data: the config says to check it) and
  the control guessed from the variants' names.

Nothing is overwritten: an existing file stops it before anything is written.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from xpkit.config import load_config
from xpkit.define.metric import snake_case
from xpkit.define.registry import load_metrics
from xpkit.engines import Engine, open_engine
from xpkit.errors import BadInputError, DataError, EngineStatementError, XpkitError
from xpkit.locations import is_file_location, is_remote

ASSIGNMENTS_TABLE = "experiment_assignments"
CONFIG_FILE = "experiments.toml"
METRICS_FILE = Path("metrics") / "starter.py"
ROLES = ("experiment", "unit", "variant", "timestamp", "exposed")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# Names each role's column is likely to have, best first (compared in lower case).
_NAMES: dict[str, tuple[str, ...]] = {
    "experiment": ("experiment_id", "experiment", "experiment_name", "experiment_key",
                   "exp_id", "test_id", "test_name", "ab_test_id"),
    "unit": ("member_id", "user_id", "unit_id", "customer_id", "account_id", "visitor_id",
             "profile_id", "client_id", "device_id", "anonymous_id", "session_id", "uid"),
    "variant": ("variant", "variant_id", "variant_name", "arm", "treatment_group", "group",
                "group_name", "bucket", "cell", "branch", "treatment", "condition"),
    "timestamp": ("assignment_timestamp", "assigned_at", "assignment_time",
                  "assignment_date", "assigned_on", "first_assigned_at", "timestamp", "ts"),
    "exposed": ("exposed", "exposed_flag", "is_exposed", "exposure", "exposure_flag",
                "triggered", "is_triggered", "triggered_flag"),
    "time": ("date", "day", "event_date", "activity_date", "ds", "dt", "date_day",
             "event_day", "timestamp", "event_time", "event_timestamp", "ts"),
}  # fmt: skip
_CONTROL_NAMES = ("control", "ctrl", "baseline", "holdout", "default", "a", "c", "0")


@dataclass(frozen=True)
class TableColumns:
    """A table the user named: its logical name, its location and its columns' types."""

    name: str
    location: str
    columns: tuple[tuple[str, pa.DataType], ...]

    def names(self) -> list[str]:
        return [c for c, _ in self.columns]

    def type_of(self, column: str) -> pa.DataType:
        return dict(self.columns)[column]

    def describe(self) -> str:
        return ", ".join(f"{c} ({_kind(t)})" for c, t in self.columns)


@dataclass(frozen=True)
class StarterMetric:
    class_name: str
    name: str
    source: str  # the Source class
    expression: str
    kind: str
    description: str


@dataclass(frozen=True)
class StarterSource:
    class_name: str
    table: TableColumns
    unit: str
    time: str


@dataclass(frozen=True)
class Starter:
    """What ``xpkit init`` writes, and what it guessed (for the user to check)."""

    out: Path
    config_text: str
    metrics_text: str
    guesses: list[str] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.out / CONFIG_FILE

    @property
    def metrics_path(self) -> Path:
        return self.out / METRICS_FILE


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_boolean(dtype):
        return "boolean"
    if pa.types.is_integer(dtype):
        return "integer"
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if pa.types.is_timestamp(dtype):
        return "timestamp"
    if pa.types.is_date(dtype):
        return "date"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return "text"
    return str(dtype)


def _is_when(dtype: pa.DataType) -> bool:
    return bool(pa.types.is_date(dtype) or pa.types.is_timestamp(dtype))


def _is_number(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
    )


def _is_id(column: str) -> bool:
    low = column.lower()
    return low == "id" or low.endswith("_id")


def _best(
    table: TableColumns, role: str, *, accept: Callable[[pa.DataType], bool] | None = None
) -> str | None:
    """The column whose name best matches ``role``'s usual names (and type, if asked)."""
    columns = [c for c in table.names() if accept is None or accept(table.type_of(c))]
    by_name = {c.lower(): c for c in columns}
    for candidate in _NAMES[role]:
        if candidate in by_name:
            return by_name[candidate]
    return None


def _location(text: str, what: str, database: str | None) -> str:
    """A location the engine reads: an existing file, folder or glob made absolute, or a
    table of the database as it is."""
    if is_remote(text):
        return text
    if database is not None and not is_file_location(text):
        return text
    path = os.path.abspath(text)
    if not Path(path).exists() and not glob.glob(path, recursive=True):
        raise BadInputError(
            f"{what}{text}: no file matches; give a Parquet or CSV file, a folder or a glob "
            f"(or, with --database, the name of a table in it)"
        )
    return path


def _columns(engine: Engine, name: str, location: str, what: str) -> TableColumns:
    from sqlglot import exp

    try:
        schema = engine.query(f"SELECT * FROM {exp.to_table(name).sql('duckdb')} LIMIT 0").schema
    except (XpkitError, EngineStatementError) as err:  # the user's table: say which one
        reason = getattr(err, "reason", None) or str(err)
        raise DataError(f"{what}{location}: cannot read its columns ({reason})") from None
    return TableColumns(name, location, tuple((f.name, f.type) for f in schema))


def _parse_facts(facts: Sequence[str]) -> list[tuple[str, str]]:
    parsed: list[tuple[str, str]] = []
    for item in facts:
        name, sep, path = item.partition("=")
        name = name.strip()
        if not sep or not path.strip():
            raise BadInputError(
                f"--facts {item!r}: write NAME=PATH, e.g. --facts engagement_daily=daily.parquet"
            )
        if not _IDENTIFIER.fullmatch(name) or name == ASSIGNMENTS_TABLE:
            raise BadInputError(
                f"--facts {item!r}: the table's name {name!r} must be letters, digits and _ "
                f"(not starting with a digit), and not {ASSIGNMENTS_TABLE!r}, the assignments'"
            )
        if name in (n for n, _ in parsed):
            raise BadInputError(f"--facts: table name {name!r} is given twice")
        parsed.append((name, path.strip()))
    if not parsed:
        raise BadInputError("give at least one fact table: --facts NAME=PATH")
    return parsed


def _parse_columns(columns: Sequence[str]) -> dict[str, str]:
    chosen: dict[str, str] = {}
    for item in columns:
        role, sep, column = item.partition("=")
        role, column = role.strip(), column.strip()
        if not sep or role not in ROLES or not column:
            raise BadInputError(
                f"--column {item!r}: write ROLE=COLUMN with ROLE one of {', '.join(ROLES)}, "
                f"e.g. --column unit=user_id (or --column exposed=false)"
            )
        chosen[role] = column
    return chosen


def _assignment_columns(
    table: TableColumns, chosen: Mapping[str, str]
) -> tuple[dict[str, str | None], list[str]]:
    """Each role's column of the assignment table, and the guesses made."""
    roles: dict[str, str | None] = {}
    guesses = []
    lowered = {c.lower(): c for c in table.names()}
    for role, column in chosen.items():
        if role == "exposed" and column.lower() == "false":
            roles[role] = None
            continue
        if column.lower() not in lowered:
            raise BadInputError(
                f"--column {role}={column}: no column {column!r} in the assignments "
                f"{table.location} (columns: {table.describe()})"
            )
        roles[role] = lowered[column.lower()]
    guessers = {
        "experiment": lambda: _best(table, "experiment"),
        "unit": lambda: _best(table, "unit") or _only_id(table, roles),
        "variant": lambda: _best(table, "variant"),
        "timestamp": lambda: _best(table, "timestamp", accept=_is_when) or _only_when(table),
        "exposed": lambda: _best(
            table, "exposed", accept=lambda t: _kind(t) in ("boolean", "integer")
        ),
    }
    for role in ROLES:
        if role in roles:
            continue
        guess = guessers[role]()
        if guess is None and role != "exposed":
            raise BadInputError(
                f"the assignments {table.location}: xpkit init cannot tell which column is the "
                f"{role} (columns: {table.describe()}); name it with --column {role}=COLUMN"
                + (" (a DATE or TIMESTAMP column)" if role == "timestamp" else "")
            )
        roles[role] = guess
        if guess is None:
            guesses.append(
                "no exposure column found: exposed = false, so intent-to-treat only "
                "(name one with --column exposed=COLUMN)"
            )
        else:
            guesses.append(f"the {role} column is {guess!r}")
    return roles, guesses


def _only_id(table: TableColumns, taken: Mapping[str, str | None]) -> str | None:
    ids = [c for c in table.names() if _is_id(c) and c not in taken.values()]
    ids = [c for c in ids if c.lower() not in _NAMES["experiment"] + _NAMES["variant"]]
    return ids[0] if len(ids) == 1 else None


def _only_when(table: TableColumns) -> str | None:
    whens = [c for c in table.names() if _is_when(table.type_of(c))]
    return whens[0] if len(whens) == 1 else None


def _class_name(text: str) -> str:
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", text) if part)
    if not name or name[0].isdigit():
        name = "M" + name
    return name


def _metric_name(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", snake_case(text).lower()).strip("_")
    if not name or name[0].isdigit():
        name = "m_" + name
    return name


def _sql_column(column: str) -> str:
    """The column as DuckDB SQL: bare when that parses to the same column, else quoted."""
    from sqlglot import exp, parse_one
    from sqlglot.errors import SqlglotError

    if _IDENTIFIER.fullmatch(column):
        try:
            tree = parse_one(f"SUM({column})", read="duckdb")
            if [c.name for c in tree.find_all(exp.Column)] == [column]:
                return column
        except SqlglotError:
            pass
    return exp.column(column, quoted=True).sql("duckdb")


def _fact_source(
    table: TableColumns, unit: str, taken_classes: set[str]
) -> tuple[StarterSource, list[str]]:
    guesses = []
    lowered = {c.lower(): c for c in table.names()}
    fact_unit = lowered.get(unit.lower()) or _best(table, "unit") or _only_id(table, {})
    if fact_unit is None:
        raise BadInputError(
            f"--facts {table.name}={table.location}: no column {unit!r} (the assignments' unit) "
            f"and no other unit id to join on (columns: {table.describe()}); give the table "
            f"the units' id column under the assignments' name"
        )
    if fact_unit.lower() != unit.lower():
        guesses.append(f"{table.name}: its unit column is {fact_unit!r}")
    time = _best(table, "time", accept=_is_when) or _only_when(table)
    if time is None:
        whens = [c for c in table.names() if _is_when(table.type_of(c))]
        if not whens:
            raise BadInputError(
                f"--facts {table.name}={table.location}: no DATE or TIMESTAMP column for the "
                f"rows' dates (columns: {table.describe()}); store the date as a DATE (or "
                f"cast it in a view)"
            )
        time = whens[0]
        guesses.append(f"{table.name}: its date column is {time!r} (of {', '.join(whens)})")
    for column in (fact_unit, time):
        if not _IDENTIFIER.fullmatch(column):
            raise BadInputError(
                f"--facts {table.name}={table.location}: column {column!r} is not a plain name "
                f"(letters, digits, _); rename it (or select it under another name in a view)"
            )
    name = _class_name(table.name)
    while name in taken_classes:
        name += "Rows"
    taken_classes.add(name)
    return StarterSource(name, table, fact_unit, time), guesses


def _fact_metrics(
    source: StarterSource, taken_names: set[str], taken_classes: set[str], clash: set[str]
) -> list[StarterMetric]:
    metrics = []
    table = source.table
    for column, dtype in table.columns:
        if column in (source.unit, source.time) or _is_id(column):
            continue
        sql = _sql_column(column)
        if pa.types.is_boolean(dtype):
            kind = "proportion"
            expression = f"MAX(CASE WHEN {sql} THEN 1 ELSE 0 END)"
            description = (
                f"Share of units with {column} true on a row of {table.name} in the analysis "
                f"window."
            )
        elif _is_number(dtype):
            kind = "mean"
            expression = f"SUM({sql})"
            description = f"Sum of {column} per unit over the analysis window ({table.name})."
        else:
            continue
        name = _metric_name(column)
        if name in clash:
            name = f"{_metric_name(table.name)}_{name}"
        while name in taken_names:
            name += "_"
        taken_names.add(name)
        class_name = _class_name(name)
        while class_name in taken_classes:
            class_name += "Metric"
        taken_classes.add(class_name)
        metrics.append(
            StarterMetric(class_name, name, source.class_name, expression, kind, description)
        )
    return metrics


def _relative(location: str, out: Path) -> str:
    if is_remote(location) or not os.path.isabs(location):
        return location
    return os.path.relpath(location, os.path.abspath(out))


def _weights(variants: Sequence[str]) -> dict[str, float]:
    share = round(1 / len(variants), 6)
    weights = {v: share for v in variants}
    weights[variants[0]] = round(1 - share * (len(variants) - 1), 6)
    return weights


def _control(variants: Sequence[str]) -> str:
    low = {v.lower(): v for v in variants}
    for name in _CONTROL_NAMES:
        if name in low:
            return low[name]
    return variants[0]


def _toml(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _experiments(
    engine: Engine, roles: Mapping[str, str | None]
) -> tuple[list[tuple[str, list[str], dict[str, int]]], list[str]]:
    from sqlglot import exp

    col = {r: exp.column(c, quoted=True).sql("duckdb") for r, c in roles.items() if c}
    rows = engine.query(
        f"SELECT CAST({col['experiment']} AS VARCHAR) AS experiment, "
        f"CAST({col['variant']} AS VARCHAR) AS variant, COUNT(DISTINCT {col['unit']}) AS units "
        f"FROM {ASSIGNMENTS_TABLE} WHERE {col['experiment']} IS NOT NULL "
        f"AND {col['variant']} IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
    ).to_pylist()
    found: dict[str, dict[str, int]] = {}
    for row in rows:
        found.setdefault(row["experiment"], {})[row["variant"]] = int(row["units"])
    experiments, notes = [], []
    for experiment, units in found.items():
        variants = list(units)
        if len(variants) < 2:
            notes.append(f"experiment {experiment!r} has one variant only: left out")
            continue
        control = _control(variants)
        ordered = [control] + [v for v in variants if v != control]
        experiments.append((experiment, ordered, units))
    return experiments, notes


def plan_starter(
    assignments: str,
    facts: Sequence[str],
    out: Path,
    *,
    database: str | None = None,
    columns: Sequence[str] = (),
) -> Starter:
    """Read the tables and render the starter files (nothing is written)."""
    fact_args = _parse_facts(facts)
    chosen = _parse_columns(columns)
    for target in (out / CONFIG_FILE, out / METRICS_FILE):
        if target.exists():
            raise BadInputError(
                f"{target} already exists; xpkit init never overwrites a file: choose another "
                f"--out, or move the file away"
            )
    if database is not None and not Path(database).is_file():
        raise BadInputError(f"--database {database}: no such file")
    tables = {ASSIGNMENTS_TABLE: _location(assignments, "--assignments ", database)}
    for name, path in fact_args:
        tables[name] = _location(path, f"--facts {name}=", database)
    engine = open_engine("duckdb", tables, database=os.path.abspath(database) if database else None)
    try:
        assigned = _columns(engine, ASSIGNMENTS_TABLE, assignments, "--assignments ")
        fact_tables = [_columns(engine, name, path, f"--facts {name}=") for name, path in fact_args]
        roles, guesses = _assignment_columns(assigned, chosen)
        experiments, notes = _experiments(engine, roles)
    finally:
        engine.close()
    if not experiments:
        raise DataError(
            f"--assignments {assignments}: no experiment with two or more variants in column "
            f"{roles['experiment']!r} / {roles['variant']!r}"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    guesses += notes
    unit = roles["unit"]
    assert unit is not None
    classes: set[str] = set()
    sources = []
    for table in fact_tables:
        source, more = _fact_source(table, unit, classes)
        sources.append(source)
        guesses += more
    counts: dict[str, int] = {}
    for source in sources:
        for column in source.table.names():
            counts[_metric_name(column)] = counts.get(_metric_name(column), 0) + 1
    clash = {name for name, n in counts.items() if n > 1}
    names: set[str] = set()
    metrics = [m for s in sources for m in _fact_metrics(s, names, classes, clash)]
    if not metrics:
        raise BadInputError(
            "the fact tables have no numeric or boolean column to make a metric of ("
            + "; ".join(f"{t.name}: {t.describe()}" for t in fact_tables)
            + ")"
        )
    slices = [
        c
        for c, t in assigned.columns
        if c not in roles.values() and _kind(t) == "text" and _IDENTIFIER.fullmatch(c)
    ]
    config = _config_text(tables, database, out, roles, experiments, metrics, slices)
    module = _metrics_text(sources, metrics)
    return Starter(out=out, config_text=config, metrics_text=module, guesses=guesses)


def _config_text(
    tables: Mapping[str, str],
    database: str | None,
    out: Path,
    roles: Mapping[str, str | None],
    experiments: Sequence[tuple[str, list[str], dict[str, int]]],
    metrics: Sequence[StarterMetric],
    slices: Sequence[str],
) -> str:
    lines = [
        "# Written by `xpkit init`: check the guesses marked below, then",
        "#   xpkit metrics --config experiments.toml",
        "#   xpkit run --config experiments.toml --out results/",
        "# Relative paths are relative to this file.",
        "",
        'metrics_dir = "metrics"',
        "# The metrics shipped with xpkit are for its sample tables: left out.",
        "shipped_metrics = false",
    ]
    if database is not None:
        lines.append(f"database = {_toml(_relative(os.path.abspath(database), out))}")
    lines += ["", "[tables]"]
    for name, location in tables.items():
        lines.append(f"{_key(name)} = {_toml(_relative(location, out))}")
    lines += ["", "[assignments]", f"table = {_toml(ASSIGNMENTS_TABLE)}"]
    for role in ("experiment", "unit", "variant", "timestamp"):
        lines.append(f"{role} = {_toml(roles[role])}")
    exposed = roles.get("exposed")
    if exposed is None:
        lines.append(
            "exposed = false  # no exposure column: intent-to-treat only (no TOT, no CACE)"
        )
    else:
        lines.append(
            f"exposed = {_toml(exposed)}  # reached the changed surface; logged for control too"
        )
    names = [m.name for m in metrics]
    for experiment, variants, units in experiments:
        weights = _weights(variants)
        seen = ", ".join(f"{v} {units[v]:,}" for v in variants)
        lines += [
            "",
            "[[experiment]]",
            f"id = {_toml(experiment)}",
            f"control = {_toml(variants[0])}  # guessed from the variants' names: check it",
            "# The designed split (equal shares assumed: set the real one; the sample-ratio",
            f"# check compares the data with it). Units seen: {seen}.",
            "weights = { " + ", ".join(f"{_key(v)} = {weights[v]!r}" for v in variants) + " }",
            "window = [0, 6]  # days after assignment, inclusive",
            "# Every metric of metrics/starter.py: keep the ones this experiment is about.",
            f"metrics = {_toml(names)}",
            f"primary = {_toml(names[:1])}",
        ]
        if slices:
            lines.append(f"# slices = {_toml(slices)}  # attributes fixed at assignment")
    return "\n".join(lines) + "\n"


def _metrics_text(sources: Sequence[StarterSource], metrics: Sequence[StarterMetric]) -> str:
    lines = [
        '"""Metrics for the tables given to `xpkit init`: one Source per fact table, one Metric',
        'per numeric (or boolean) column. Edit freely: xpkit init never overwrites this file."""',
        "",
        "from xpkit import Metric, Source",
    ]
    for source in sources:
        lines += [
            "",
            "",
            f"class {source.class_name}(Source):",
            f'    """Rows of {source.table.name}: a unit ({source.unit}) and a date '
            f'({source.time}) each."""',
            "",
            f"    table = {json.dumps(source.table.name)}",
            f"    unit = {json.dumps(source.unit)}",
            f"    time = {json.dumps(source.time)}",
        ]
    for metric in metrics:
        lines += [
            "",
            "",
            f"class {metric.class_name}(Metric):",
            f'    """{metric.description}"""',
            "",
        ]
        if snake_case(metric.class_name) != metric.name:
            lines.append(f"    name = {json.dumps(metric.name)}")
        lines += [
            f"    source = {metric.source}",
            f"    expression = {json.dumps(metric.expression)}",
        ]
        if metric.kind != "mean":
            lines.append(f"    kind = {json.dumps(metric.kind)}")
        lines.append('    covariate = "pre"  # CUPED: the same expression over the pre-period')
    return "\n".join(lines) + "\n"


def write_starter(starter: Starter) -> list[Path]:
    """Write the starter files (never over an existing one) and check that they load."""
    written: list[Path] = []
    try:
        for path, text in (
            (starter.config_path, starter.config_text),
            (starter.metrics_path, starter.metrics_text),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(path, "x", encoding="utf-8") as handle:  # "x": never over a file
                    handle.write(text)
            except FileExistsError:
                raise BadInputError(
                    f"{path} already exists; xpkit init never overwrites a file: choose "
                    f"another --out, or move the file away"
                ) from None
            written.append(path)
        load_config(starter.config_path)
        load_metrics(starter.metrics_path.parent)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
