"""Find Metric classes in the metrics repository (a folder of Python files)."""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from xpkit.define.metric import Metric
from xpkit.errors import MetricDefinitionError


@dataclass(frozen=True)
class MetricRegistry:
    """Metrics by name, and the folder they were loaded from."""

    metrics: dict[str, type[Metric]]
    origin: str

    def get(self, name: str) -> type[Metric]:
        try:
            return self.metrics[name]
        except KeyError:
            known = ", ".join(sorted(self.metrics)) or "(none)"
            raise MetricDefinitionError(
                f"unknown metric {name!r}; metrics in {self.origin}: {known}"
            ) from None

    def resolve(self, names: Iterable[str]) -> list[type[Metric]]:
        return [self.get(n) for n in names]


def default_metrics_dir() -> Path:
    """``./metrics`` when run from a checkout, else the seed metrics shipped with xpkit."""
    local = Path.cwd() / "metrics"
    if local.is_dir() and any(local.glob("*.py")):
        return local
    return Path(str(importlib.resources.files("xpkit.metrics")))


def load_metrics(directory: str | Path | None = None) -> MetricRegistry:
    """Import every ``*.py`` in ``directory`` and collect the Metric classes defined there.

    A metric that fails to define (bad SQL, missing source) or a file that fails to import is
    reported with the file's path; two metrics with one name are an error, not a silent
    override.
    """
    directory = Path(directory) if directory is not None else default_metrics_dir()
    if not directory.is_dir():
        raise MetricDefinitionError(f"metrics directory {directory} does not exist")
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    metrics: dict[str, type[Metric]] = {}
    where: dict[str, str] = {}
    for file in sorted(directory.glob("*.py")):
        if file.name.startswith("_"):
            continue
        module_name = f"xpkit_metrics_{digest}.{file.stem}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:  # pragma: no cover - not a Python file
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except MetricDefinitionError as err:
            raise MetricDefinitionError(f"{file}: {err}") from None
        except Exception as err:
            frame = traceback.extract_tb(err.__traceback__)[-1]
            raise MetricDefinitionError(
                f"{file}: could not import ({type(err).__name__}: {err}, line {frame.lineno})"
            ) from None
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, Metric)
                and obj is not Metric
                and obj.__module__ == module_name
            ):
                _add(metrics, where, obj, str(file))
    return MetricRegistry(metrics=metrics, origin=str(directory))


def registry_of(classes: Iterable[object], origin: str = "the metrics= list") -> MetricRegistry:
    """A registry of Metric classes given directly (a notebook's, say), checked like a
    folder's: each must be a Metric subclass, and two metrics may not share a name."""
    metrics: dict[str, type[Metric]] = {}
    where: dict[str, str] = {}
    for obj in classes:
        if not (isinstance(obj, type) and issubclass(obj, Metric) and obj is not Metric):
            raise MetricDefinitionError(
                f"{origin}: {obj!r} is not a Metric class; list classes that subclass "
                f"xpkit.Metric (the classes themselves, not instances or names)"
            )
        if metrics.get(obj.name) is not obj:  # the same class listed twice is listed once
            _add(metrics, where, obj, f"{obj.__module__}.{obj.__qualname__}")
    return MetricRegistry(metrics=metrics, origin=origin)


def _add(
    metrics: dict[str, type[Metric]], where: dict[str, str], obj: type[Metric], at: str
) -> None:
    if obj.name in metrics:
        raise MetricDefinitionError(
            f"{at}: metric name {obj.name!r} is already defined in {where[obj.name]}; give "
            f"one of them an explicit `name`"
        )
    metrics[obj.name] = obj
    where[obj.name] = at
