"""Metric declarations: parsed at definition time, rejected with the metric's name."""

from __future__ import annotations

import pytest

from xpkit import Metric, Source
from xpkit.define.metric import snake_case
from xpkit.errors import MetricDefinitionError


class Events(Source):
    table = "events"
    unit = "user_id"
    time = "day"


def define(**attrs: object) -> type[Metric]:
    attrs.setdefault("source", Events)
    return type("SomeMetric", (Metric,), dict(attrs))


def test_name_is_snake_case_of_class_name_unless_given() -> None:
    assert snake_case("WatchSeconds") == "watch_seconds"
    assert snake_case("CTRClicks") == "ctr_clicks"
    assert define(expression="SUM(x)").name == "some_metric"
    assert define(expression="SUM(x)", name="custom").name == "custom"


def test_docstring_becomes_description() -> None:
    m = type(
        "Doc",
        (Metric,),
        {"__doc__": "  Seconds\n  watched. ", "source": Events, "expression": "SUM(x)"},
    )
    assert m.description == "Seconds watched."


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({}, "`expression` must be a SQL string"),
        ({"expression": 3}, "`expression` must be a SQL string"),
        ({"expression": "SUM(x"}, "`expression` is not valid SQL"),
        ({"expression": "SUM(x); DROP TABLE events"}, "found 2 statements"),
        ({"expression": "DROP TABLE events"}, "may only be an expression"),
        ({"expression": "(SELECT SUM(x) FROM events)"}, "SUBQUERY is not allowed"),
        ({"expression": "x + 1"}, "must be a per-unit aggregate"),
        ({"expression": "SUM(x) + y"}, "column 'y' in `expression` is used outside an aggregate"),
        ({"expression": "SUM(x) OVER ()"}, "WINDOW is not allowed"),
        ({"expression": "SUM(x)", "kind": "median"}, "`kind` must be"),
        ({"expression": "SUM(x)", "kind": "ratio"}, "needs a `denominator`"),
        ({"expression": "SUM(x)", "denominator": "SUM(y)"}, "only for kind = 'ratio'"),
        ({"expression": "SUM(x)", "filter": "SUM(y) > 0"}, "may not aggregate"),
        ({"expression": "SUM(x)", "cap": "p150"}, "`cap` must be"),
        ({"expression": "SUM(x)", "source": object}, "`source` must be a Source subclass"),
        ({"expression": "SUM(x)", "name": "Bad Name"}, "name must be lower snake_case"),
    ],
)
def test_bad_definitions_are_rejected_with_the_metric_name(attrs: dict, message: str) -> None:
    with pytest.raises(MetricDefinitionError) as err:
        define(**attrs)
    assert message in str(err.value)
    assert "some_metric" in str(err.value) or "bad name" in str(err.value).lower()


def test_count_star_is_allowed_and_columns_are_collected() -> None:
    m = define(expression="COUNT(*)", filter="device = 'tv'", covariate="SUM(pre_x)")
    assert m.columns_used() == {"device", "pre_x"}


def test_percentile_and_fixed_caps() -> None:
    assert define(expression="SUM(x)", cap="p99").cap_percentile == pytest.approx(0.99)
    assert define(expression="SUM(x)", cap=100).cap_value == 100.0


def test_definition_hash_changes_with_the_expression() -> None:
    a = define(expression="SUM(x)")
    b = define(expression="SUM(x) * 2")
    assert a.definition_sha256() != b.definition_sha256()
    assert a.definition_sha256() == define(expression="SUM( x )").definition_sha256()


def test_source_needs_plain_column_names() -> None:
    with pytest.raises(MetricDefinitionError, match="`unit` must be a plain column name"):
        type("BadSource", (Source,), {"table": "t", "unit": "a; drop", "time": "d"})


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"table": "events\nDROP"}, "`table` contains a control character"),
        ({"table": "ev\tents"}, "`table` contains a control character"),
        ({"table": 'ev"ents'}, "`table` is not a table name"),
        ({"table": "events", "name": "bad\nname"}, "`name` must be letters, digits and _"),
    ],
)
def test_source_table_and_name_are_checked_like_every_identifier(attrs: dict, message: str) -> None:
    with pytest.raises(MetricDefinitionError, match=message) as info:
        type("Src", (Source,), dict(attrs))
    assert "source Src" in str(info.value)
