"""The metrics repository: folders of Python files declaring Metric classes.

A metrics folder is loaded as one Python package of its own:

- its files import shared ``Source`` classes from each other with relative imports
  (``from .sources import Daily``, ``from ..common import Daily`` in a subfolder);
- its subfolders are read too, with or without an ``__init__.py``;
- a file named like a standard-library module (``json.py``, ``statistics.py``) hides
  nothing: the folder is imported under a package name of its own and never put on
  ``sys.path``, so ``import json`` anywhere still means the standard library;
- a file or folder whose name starts with ``_`` or ``.`` is a helper: imported when
  another file imports it, not searched for metrics.

The catalogue a run uses (:func:`load_catalogue`) is a project's folder plus the metrics
shipped with xpkit (the ``xpkit.metrics`` package), unless the configuration leaves the
shipped ones out; one metric name defined twice is an error naming both files.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.resources
import importlib.util
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from xpkit.define.metric import Metric
from xpkit.errors import MetricDefinitionError

SHIPPED_PACKAGE = "xpkit.metrics"
SHIPPED_SWITCH = "shipped_metrics = false"


@dataclass(frozen=True)
class MetricRegistry:
    """Metrics by name, where they were loaded from, and the file defining each."""

    metrics: dict[str, type[Metric]]
    origin: str
    files: dict[str, Path] = field(default_factory=dict)

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

    def file_of(self, name: str) -> Path | None:
        """The file that defines metric ``name``."""
        return self.files.get(name)


def shipped_metrics_dir() -> Path:
    """The folder of the metrics shipped with xpkit (the ``xpkit.metrics`` package)."""
    return Path(str(importlib.resources.files(SHIPPED_PACKAGE)))


def default_metrics_dir() -> Path:
    """``./metrics`` when run from a checkout, else the seed metrics shipped with xpkit."""
    local = Path.cwd() / "metrics"
    if local.is_dir() and any(local.glob("*.py")):
        return local
    return shipped_metrics_dir()


def project_metrics_dir() -> Path | None:
    """``./metrics`` when the working folder has one with Python files in it."""
    local = Path.cwd() / "metrics"
    if local.is_dir() and any(local.rglob("*.py")):
        return local
    return None


def load_metrics(directory: str | Path | None = None) -> MetricRegistry:
    """Every metric of one metrics folder (default: ``./metrics``, else the shipped ones).

    A metric that fails to define (bad SQL, missing source) or a file that fails to import is
    reported with the file's path; two metrics with one name are an error, not a silent
    override.
    """
    directory = Path(directory) if directory is not None else default_metrics_dir()
    if not directory.is_dir():
        raise MetricDefinitionError(f"metrics directory {directory} does not exist")
    metrics: dict[str, type[Metric]] = {}
    files: dict[str, Path] = {}
    _collect(_import_folder(directory), metrics, files)
    return MetricRegistry(metrics=metrics, origin=str(directory), files=files)


def load_catalogue(directory: str | Path | None, *, shipped: bool = True) -> MetricRegistry:
    """A project's metrics folder (``None``: no folder) plus, with ``shipped``, the metrics
    shipped with xpkit.

    A shipped file that the project holds an identical copy of, at the same place in its
    folder (a checkout's ``metrics/``), is loaded once, from the project. Any other name
    defined in both is an error naming both files.
    """
    folder = Path(directory) if directory is not None else None
    if folder is not None and not folder.is_dir():
        raise MetricDefinitionError(f"metrics directory {folder} does not exist")
    metrics: dict[str, type[Metric]] = {}
    files: dict[str, Path] = {}
    origins = []
    if folder is not None:
        _collect(_import_folder(folder), metrics, files)
        origins.append(str(folder))
    if shipped:
        home = shipped_metrics_dir()
        if folder is None or not _same_folder(folder, home):
            skip = _copied_files(home, folder) if folder is not None else set()
            modules = [(file, module) for file, module in _import_folder(home) if file not in skip]
            _collect(modules, metrics, files, shipped=True)
            origins.append(f"the metrics shipped with xpkit ({home})")
    origin = " and ".join(origins) or "no metrics folder"
    return MetricRegistry(metrics=metrics, origin=origin, files=files)


def _same_folder(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _copied_files(home: Path, project: Path) -> set[Path]:
    """The shipped files whose identical copy sits at the same relative path in ``project``."""
    same = set()
    for file in _metric_files(home):
        copy = project / file.relative_to(home)
        try:
            if copy.is_file() and copy.read_bytes() == file.read_bytes():
                same.add(file)
        except OSError:
            continue
    return same


def _hidden(part: str) -> bool:
    return part.startswith(("_", "."))


def _metric_files(directory: Path) -> list[Path]:
    """The folder's ``*.py`` files searched for metrics, subfolders included, in order."""
    found = []
    for file in directory.rglob("*.py"):
        parts = file.relative_to(directory).parts
        if any(_hidden(p) for p in parts):
            continue
        found.append(file)
    return sorted(found, key=lambda f: f.relative_to(directory).parts)


def _package_for(directory: Path) -> str:
    """The folder's package name: the shipped package's own, else one of its own."""
    if _same_folder(directory, shipped_metrics_dir()):
        return SHIPPED_PACKAGE
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    return f"xpkit_metrics_{digest}"


def _import_folder(directory: Path) -> list[tuple[Path, ModuleType]]:
    """Import the folder as a package and each of its metric files as a module of it."""
    package = _package_for(directory)
    if package == SHIPPED_PACKAGE:
        importlib.import_module(package)
    else:
        _fresh_package(package, directory)
    modules = []
    for file in _metric_files(directory):
        relative = file.relative_to(directory).with_suffix("")
        name = ".".join((package, *relative.parts))
        modules.append((file, _import(name, file, directory)))
    return modules


def _fresh_package(package: str, directory: Path) -> None:
    """The folder as package ``package``, re-read from disk (an edited file is seen anew)."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]
    init = directory / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(
            package, init, submodule_search_locations=[str(directory)]
        )
    else:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(directory)]
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    if spec.loader is not None:
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            del sys.modules[package]
            raise _import_error(init, err, directory) from None


def _import(name: str, file: Path, directory: Path) -> ModuleType:
    try:
        return importlib.import_module(name)
    except MetricDefinitionError as err:
        raise MetricDefinitionError(f"{_culprit(err, file, directory)}: {err}") from None
    except Exception as err:
        raise _import_error(file, err, directory) from None


def _culprit(err: BaseException, file: Path, directory: Path) -> Path:
    """The file of the folder where ``err`` was raised (another file ``file`` imports, say)."""
    root = directory.resolve()
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        path = Path(frame.filename)
        if path.suffix == ".py" and path.resolve().is_relative_to(root):
            return path
    return file


def _import_error(file: Path, err: Exception, directory: Path) -> MetricDefinitionError:
    root = directory.resolve()
    frames = traceback.extract_tb(err.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve().is_relative_to(root)]
    frame = (inside or frames)[-1] if (inside or frames) else None
    where = Path(frame.filename) if inside and frame is not None else file
    line = frame.lineno if frame is not None else None
    if isinstance(err, SyntaxError) and err.filename:  # raised by the parser, not a frame
        where, line = Path(err.filename), err.lineno
    hint = ""
    if isinstance(err, ModuleNotFoundError) and err.name:
        sibling = err.name.split(".")[0]
        if (directory / f"{sibling}.py").is_file() or (directory / sibling).is_dir():
            hint = (
                f"; files of a metrics folder import each other relatively: write "
                f"`from .{err.name} import ...` (or `from ..{err.name} import ...` from a "
                f"subfolder)"
            )
    return MetricDefinitionError(
        f"{where}: could not import ({type(err).__name__}: {err}, line {line}){hint}"
    )


def _collect(
    modules: Iterable[tuple[Path, ModuleType]],
    metrics: dict[str, type[Metric]],
    files: dict[str, Path],
    *,
    shipped: bool = False,
) -> None:
    """Add the Metric classes each module defines (not those it imports) to ``metrics``."""
    for file, module in modules:
        for obj in vars(module).values():
            if not (
                isinstance(obj, type)
                and issubclass(obj, Metric)
                and obj is not Metric
                and obj.__module__ == module.__name__
            ):
                continue
            if obj.name in metrics:
                other = files[obj.name]
                if shipped:
                    raise MetricDefinitionError(
                        f"{other}: metric name {obj.name!r} is also the name of a metric "
                        f"shipped with xpkit ({file}, class {obj.__qualname__}); give yours "
                        f"another `name`, or leave the shipped metrics out with "
                        f"{SHIPPED_SWITCH} in the config"
                    )
                raise MetricDefinitionError(
                    f"{file}: metric name {obj.name!r} is already defined in "
                    f"{other}; give one of them an explicit `name`"
                )
            metrics[obj.name] = obj
            files[obj.name] = file


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
        if metrics.get(obj.name) is obj:  # the same class listed twice is listed once
            continue
        at = f"{obj.__module__}.{obj.__qualname__}"
        if obj.name in metrics:
            raise MetricDefinitionError(
                f"{at}: metric name {obj.name!r} is already defined in {where[obj.name]}; give "
                f"one of them an explicit `name`"
            )
        metrics[obj.name] = obj
        where[obj.name] = at
    return MetricRegistry(metrics=metrics, origin=origin)
