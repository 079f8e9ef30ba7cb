"""Package discovery: every package under each source folder ships, so a new subpackage
cannot silently go missing from the wheel. The metadata lives in pyproject.toml.

The metrics repository, the SQL skeletons and the sample-data generator live at the top
of the repository where analysts find them, and ship inside the package as
``xpkit.metrics``, ``xpkit.sql_templates`` and ``xpkit.sample_data``, so an installed
xpkit (``pip install .``) runs the demo and renders SQL without a checkout.
"""

from setuptools import find_packages, setup

ROOTS = {
    "xpkit": "src/xpkit",
    "xpkit.sql_templates": "sql_templates",
    "xpkit.metrics": "metrics",
    "xpkit.sample_data": "sample_data",
}


def discover() -> tuple[list[str], dict[str, str]]:
    packages, package_dir = [], {}
    for name, folder in ROOTS.items():
        package_dir[name] = folder
        packages.append(name)
        for sub in find_packages(folder):
            packages.append(f"{name}.{sub}")
            package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"
    return packages, package_dir


packages, package_dir = discover()
setup(packages=packages, package_dir=package_dir)
