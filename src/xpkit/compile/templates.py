"""The Jinja skeletons in ``sql_templates/``, loaded once per process."""

from __future__ import annotations

import importlib.resources
from functools import cache

import jinja2


@cache
def _templates() -> jinja2.Environment:
    root = importlib.resources.files("xpkit.sql_templates")
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: root.joinpath(name).read_text()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # SQL, not HTML: values are escaped by sqlglot before splicing
        keep_trailing_newline=True,
    )


def render_template(name: str, **context: object) -> str:
    return _templates().get_template(name).render(**context)
