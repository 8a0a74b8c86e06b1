"""Sphinx configuration of rlpipe's plug-in API reference: `sphinx-build docs/api docs/_build/api`
(`pip install 'rlpipe[docs]'`).

The pages are autodoc over the checkout's `rlpipe`, plus the `rlpipe-config` directive below for the pydantic
config models (autodoc would list their fields as constructor parameters, without the field descriptions).
"""

from __future__ import annotations

import importlib
import re
import sys
import typing
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from pydantic import BaseModel
from pydantic_core import PydanticUndefined
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout's rlpipe, installed or not

from rlpipe.config.docs import field_type  # after the sys.path line above

project = "rlpipe plug-in API"
author = "rlpipe"
extensions = ["sphinx.ext.autodoc"]
autodoc_typehints = "description"
autodoc_member_order = "bysource"
default_role = "literal"  # docstrings use Markdown-style `code`
html_theme = "alabaster"
html_theme_options = {"description": "Plug-in API reference", "fixed_sidebar": True}
exclude_patterns = ["_build"]


def _inline(text: str) -> str:
    """Plain prose with `code` spans as reStructuredText: the spans literal, markup characters elsewhere escaped."""
    parts = re.split(r"(`[^`]+`)", text)
    return "".join(f"``{p[1:-1]}``" if i % 2 else re.sub(r"([\\*|_`<>])", r"\\\1", p) for i, p in enumerate(parts))


def _nested_models(annotation: object) -> list[type[BaseModel]]:
    """The pydantic models an annotation names: `RolloutConfig`, `WarmupConfig | None`, `dict[str, EvalDataset]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def _walk(model: type[BaseModel], seen: list[type[BaseModel]]) -> list[type[BaseModel]]:
    """`model` and every model nested in its fields, depth first, each once."""
    if model not in seen:
        seen.append(model)
        for info in model.model_fields.values():
            for sub in _nested_models(info.annotation):
                _walk(sub, seen)
    return seen


def _model_rst(model: type[BaseModel]) -> list[str]:
    """One model as a py:class with a py:attribute per field and a py:property per documented property."""
    lines = [f".. py:class:: {model.__name__}", f"   :module: {model.__module__}", ""]
    lines += [f"   {_inline(line.strip())}" for line in (model.__doc__ or "").strip().splitlines()] + [""]
    for name, info in model.model_fields.items():
        nested = _nested_models(info.annotation)
        lines += [f"   .. py:attribute:: {name}", f"      :type: {field_type(info)}"]
        if info.default is not PydanticUndefined and not nested:
            lines.append(f"      :value: {info.default!r}")
        text = _inline(info.description) if info.description else f"The :class:`{nested[0].__name__}` group."
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("miles"):
            text += f" Miles: ``{extra['miles']}``."
        lines += ["", f"      {text}", ""]
    for name, member in vars(model).items():
        if isinstance(member, property) and member.__doc__:
            returns = typing.get_type_hints(member.fget).get("return")
            lines += [f"   .. py:property:: {name}"]
            lines += [f"      :type: {returns.__name__}"] if isinstance(returns, type) else []
            lines += ["", f"      {_inline(' '.join(member.__doc__.split()))}", ""]
    return lines


_FIELD_LINE = re.compile(r"^[A-Za-z_]\w*:\s+\S")


def listings_as_literal(app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]) -> None:
    """Show a docstring's aligned `name:  text` listing (RewardContext's fields), whose wrapped lines are indented
    to the text column, as preformatted text: as prose, reStructuredText rejects the indentation."""
    i = 0
    while i < len(lines):
        if _FIELD_LINE.match(lines[i]) and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and lines[end].strip() and (_FIELD_LINE.match(lines[end]) or lines[end][0] == " "):
                end += 1
            if end - i > 1 and any(line[0] == " " for line in lines[i:end]):
                lines[i:end] = ["::", "", *(f"   {line}" for line in lines[i:end])]
                end += 2
            i = end
        i += 1


class ConfigModels(SphinxDirective):
    """`.. rlpipe-config:: package.module.Model`: that pydantic model and every model nested in it."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module_name, _, name = self.arguments[0].rpartition(".")
        root = getattr(importlib.import_module(module_name), name)
        lines = [line for model in _walk(root, []) for line in _model_rst(model)]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"rlpipe-config {self.arguments[0]}"), 0, container)
        return container.children


def setup(app: Sphinx) -> dict[str, bool]:
    app.add_directive("rlpipe-config", ConfigModels)
    app.connect("autodoc-process-docstring", listings_as_literal)
    return {"parallel_read_safe": True}
