"""A metrics folder is a package: relative imports, subfolders, no shadowed standard library,
the shipped metrics added unless the config says otherwise, and clashes named."""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.test_errors_data import assert_message, run, world
from xpkit.cli import main
from xpkit.define.registry import (
    load_catalogue,
    load_metrics,
    shipped_metrics_dir,
)
from xpkit.errors import MetricDefinitionError

SOURCES = '''from xpkit import Source


class Daily(Source):
    """Daily rows."""

    table = "daily"
'''


def metric_file(
    name: str, expression: str, source_import: str = "from .sources import Daily"
) -> str:
    return (
        f"from xpkit import Metric\n{source_import}\n\n\n"
        f"class {name}(Metric):\n"
        f'    """{name} per member."""\n\n'
        f"    source = Daily\n    expression = {expression!r}\n"
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def repository(root: Path) -> Path:
    """Sources shared across files and subfolders, and files named like stdlib modules."""
    return write(
        root / "metrics",
        {
            "sources.py": SOURCES,
            "engagement.py": metric_file("Played", "SUM(played)"),
            # A subfolder without __init__.py, importing the parent's sources.
            "video/watching.py": metric_file(
                "Watched", "SUM(watch_seconds)", "from ..sources import Daily"
            ),
            # A subfolder package of its own.
            "audio/__init__.py": "",
            "audio/listening.py": metric_file(
                "Listened", "MAX(played)", "from ..sources import Daily"
            ),
            # Named like standard-library modules, and using them.
            "json.py": metric_file("JsonPlays", "COUNT(*)")
            + "\nimport json as _json\nPAYLOAD = _json.dumps({'a': 1})\n",
            "statistics.py": metric_file("StatPlays", "SUM(played * 2)")
            + "\nimport statistics as _st\nMIDDLE = _st.median([1, 2, 3])\n",
            # A helper: importable, not searched for metrics.
            "_helpers.py": metric_file("Hidden", "SUM(played)"),
            "uses_helper.py": "from ._helpers import Hidden as Reused  # noqa: F401\n",
        },
    )


def test_a_folder_is_a_package_with_relative_imports_and_subfolders(tmp_path: Path) -> None:
    registry = load_metrics(repository(tmp_path))
    assert sorted(registry.metrics) == [
        "json_plays",
        "listened",
        "played",
        "stat_plays",
        "watched",
    ]
    # One Source class, shared by every file that imports it.
    assert len({m.source for m in registry.metrics.values()}) == 1
    assert registry.file_of("watched") == tmp_path / "metrics" / "video" / "watching.py"
    assert registry.file_of("listened") == tmp_path / "metrics" / "audio" / "listening.py"
    assert registry.metrics["played"].description == "Played per member."


def test_files_named_like_the_standard_library_shadow_nothing(tmp_path: Path) -> None:
    registry = load_metrics(repository(tmp_path))
    module = sys.modules[registry.metrics["json_plays"].__module__]
    assert module.PAYLOAD == '{"a": 1}'  # the file's own `import json` is the stdlib's
    assert sys.modules[registry.metrics["stat_plays"].__module__].MIDDLE == 2
    assert json.dumps([1]) == "[1]" and statistics.mean([1, 3]) == 2
    assert sys.modules["json"] is json and sys.modules["statistics"] is statistics


def test_an_edited_file_is_read_again(tmp_path: Path) -> None:
    folder = repository(tmp_path)
    assert "played" in load_metrics(folder).metrics
    (folder / "engagement.py").write_text(metric_file("Replayed", "SUM(played)"))
    names = load_metrics(folder).metrics
    assert "replayed" in names and "played" not in names


def test_the_shipped_metrics_are_added_unless_left_out(tmp_path: Path) -> None:
    folder = repository(tmp_path)
    both = load_catalogue(folder)
    assert {"played", "watch_seconds", "errors_per_play"} <= set(both.metrics)
    assert both.file_of("watch_seconds") == shipped_metrics_dir() / "engagement.py"
    assert "the metrics shipped with xpkit" in both.origin
    alone = load_catalogue(folder, shipped=False)
    assert "watch_seconds" not in alone.metrics and "played" in alone.metrics
    assert set(load_catalogue(None).metrics) == set(load_metrics(shipped_metrics_dir()).metrics)


def test_a_copy_of_a_shipped_file_is_loaded_once(tmp_path: Path) -> None:
    """A checkout's metrics/ holds the shipped files themselves: no clash with itself."""
    folder = tmp_path / "metrics"
    shutil.copytree(shipped_metrics_dir(), folder)
    registry = load_catalogue(folder)
    assert registry.file_of("watch_seconds") == folder / "engagement.py"


def test_a_name_defined_twice_in_a_folder_names_both_files(tmp_path: Path) -> None:
    folder = write(
        tmp_path / "metrics",
        {
            "sources.py": SOURCES,
            "a.py": metric_file("Played", "SUM(played)"),
            "sub/b.py": metric_file("Played", "MAX(played)", "from ..sources import Daily"),
        },
    )
    with pytest.raises(MetricDefinitionError) as err:
        load_metrics(folder)
    assert str(folder / "sub" / "b.py") in str(err.value)
    assert str(folder / "a.py") in str(err.value)
    assert "metric name 'played' is already defined" in str(err.value)


def test_a_clash_with_a_shipped_metric_exits_2_naming_both_files(tmp_path: Path) -> None:
    config = world(
        tmp_path,
        metrics="from xpkit import Metric, Source\n\n\nclass Daily(Source):\n"
        '    table = "daily"\n\n\nclass Sessions(Metric):\n    source = Daily\n'
        '    expression = "SUM(played)"\n',
        names='["sessions"]',
    )
    result = run(config)
    assert_message(
        result,
        f"{tmp_path / 'metrics' / 'm.py'}: metric name 'sessions' is also the name of a "
        "metric shipped with xpkit",
        str(shipped_metrics_dir() / "engagement.py"),
        "class Sessions",
        "shipped_metrics = false",
    )
    config.write_text("shipped_metrics = false\n" + config.read_text())
    assert run(config).exit_code == 0


def test_shipped_metrics_false_leaves_them_out(tmp_path: Path) -> None:
    config = world(tmp_path, names='["played", "watch_seconds"]')
    config.write_text("shipped_metrics = false\n" + config.read_text())
    result = run(config)
    assert_message(result, "unknown metric 'watch_seconds'", "metrics in")
    assert "metrics shipped with xpkit" not in result.output


def test_a_project_uses_its_own_and_the_shipped_metrics_side_by_side(tmp_path: Path) -> None:
    config = world(tmp_path, names='["played"]')
    registry = load_catalogue(tmp_path / "metrics")
    assert "played" in registry.metrics and "watch_seconds" in registry.metrics
    assert run(config).exit_code == 0


def test_an_absolute_import_of_a_sibling_says_to_import_it_relatively(tmp_path: Path) -> None:
    config = world(tmp_path)
    write(
        tmp_path / "metrics",
        {
            "sources.py": SOURCES,
            "other.py": metric_file("Other", "SUM(played)", "from sources import Daily"),
        },
    )
    result = run(config)
    assert_message(
        result,
        str(tmp_path / "metrics" / "other.py"),
        "could not import (ModuleNotFoundError",
        "import each other relatively: write `from .sources import ...`",
    )


def test_an_error_in_an_imported_file_names_that_file(tmp_path: Path) -> None:
    config = world(tmp_path)
    write(
        tmp_path / "metrics",
        {
            "sources.py": SOURCES + "\nclass Broken(Source):\n    unit = 'member id'\n"
            "    table = 'daily'\n",
            "zz.py": metric_file("Other", "SUM(played)"),
        },
    )
    result = run(config)
    assert_message(result, str(tmp_path / "metrics" / "sources.py"), "source Broken")


def test_a_syntax_error_names_its_file_and_line(tmp_path: Path) -> None:
    config = world(tmp_path)
    write(tmp_path / "metrics", {"sub/bad.py": "class Oops(:\n"})
    result = run(config)
    assert_message(result, str(tmp_path / "metrics" / "sub" / "bad.py"), "SyntaxError", "line 1")


def test_the_command_line_lists_the_catalogue(tmp_path: Path) -> None:
    config = world(tmp_path)
    result = CliRunner().invoke(main, ["metrics", "--config", str(config)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert lines[0].split() == ["name", "kind", "source", "file"]
    row = next(line for line in lines if line.startswith("played "))
    assert "mean" in row and "daily" in row and "m.py" in row
    assert any(line.startswith("watch_seconds ") for line in lines)  # shipped
    assert "Seconds watched per member in the analysis window." in result.output


def test_a_name_defined_twice_exits_2_from_the_command_line(tmp_path: Path) -> None:
    config = world(tmp_path)
    write(
        tmp_path / "metrics",
        {"sub/again.py": "from ..m import Daily\n" + metric_file("Played", "MAX(played)", "")},
    )
    assert_message(
        run(config),
        f"{tmp_path / 'metrics' / 'sub' / 'again.py'}: metric name 'played' is already "
        f"defined in {tmp_path / 'metrics' / 'm.py'}",
    )


def test_the_catalogue_of_a_missing_folder_or_config_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["metrics", "--metrics-dir", str(tmp_path / "none")])
    assert_message(result, f"metrics directory {tmp_path / 'none'} does not exist")
    result = CliRunner().invoke(main, ["metrics", "--config", str(tmp_path / "x.toml")])
    assert_message(result, f"{tmp_path / 'x.toml'}: configuration file not found")
