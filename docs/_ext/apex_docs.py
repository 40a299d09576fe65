"""Sphinx extension: reference tables generated from the code at build time.

Why: option tables kept by hand drift from the code. ``{apex-schema} NAME`` renders the fields of a
file format from its JSON Schema and links the schema file; ``{apex-cli}`` renders every command's
options from its argparse parser. The schema files are written next to the built pages, under
``schemas/``, where editors can fetch them.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import ClassVar

import apex_cli
import apex_schemas
import apex_services
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

SCHEMA_DIR = "schemas"


class _MarkdownDirective(SphinxDirective):
    """Parse generated MyST markdown in place of the directive."""

    def render(self, text: str) -> list[nodes.Node]:
        container = nodes.container()
        self.state.nested_parse(
            StringList(text.splitlines()), self.content_offset, container, match_titles=True
        )
        return container.children


class SchemaDirective(_MarkdownDirective):
    required_arguments = 1
    option_spec: ClassVar = {"tables": directives.flag}

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        if name not in apex_schemas.SCHEMAS:
            raise self.error(f"unknown schema {name!r}; known: {', '.join(apex_schemas.SCHEMAS)}")
        schema = apex_schemas.SCHEMAS[name]()
        file_name = f"{name}.schema.json"
        uri = posixpath.relpath(f"{SCHEMA_DIR}/{file_name}", posixpath.dirname(self.env.docname) or ".")
        para = nodes.paragraph()
        para += nodes.Text("The JSON Schema of this file, for editors and CI: ")
        para += nodes.reference("", file_name, refuri=uri)
        para += nodes.Text(f" (its $id is {schema['$id']}).")
        return [para, *self.render(apex_schemas.schema_markdown(schema))]


class CliDirective(_MarkdownDirective):
    def run(self) -> list[nodes.Node]:
        return self.render(apex_cli.cli_markdown())


class RolesDirective(_MarkdownDirective):
    def run(self) -> list[nodes.Node]:
        return self.render(apex_services.roles_markdown())


class MetricsDirective(_MarkdownDirective):
    def run(self) -> list[nodes.Node]:
        return self.render(apex_services.metrics_markdown())


class ServiceOptionsDirective(_MarkdownDirective):
    """``{apex-service-options} culler``: a service's options, from its traits."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        if self.arguments[0] not in apex_services.SERVICES:
            raise self.error(
                f"unknown service {self.arguments[0]!r}; known: {', '.join(apex_services.SERVICES)}"
            )
        return self.render(apex_services.options_markdown(self.arguments[0]))


def own_config_traits(cls: type) -> tuple[list[str], list[str]]:
    """(traits apex-hub defines or redefines, traits inherited unchanged from upstream)."""
    own, inherited = [], []
    for name in sorted(cls.class_traits(config=True)):
        defined_in = next(k for k in cls.__mro__ if name in vars(k))
        (own if defined_in.__module__.startswith("apex_hub") else inherited).append(name)
    return own, inherited


class ConfigDirective(_MarkdownDirective):
    """``{apex-config} module.Class``: autodoc-traits for the options apex-hub adds or changes, and
    the names of the upstream options it inherits unchanged (documented by their projects; their
    docstrings use cross-references that only resolve in those projects' docs)."""

    required_arguments = 1
    option_spec: ClassVar = {"upstream": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        import importlib

        module, _, name = self.arguments[0].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        _own, inherited = own_config_traits(cls)
        rst = [f".. autoconfigurable:: {self.arguments[0]}"]
        if inherited:
            rst.append(f"   :exclude-members: {', '.join(inherited)}")
        upstream = self.options.get("upstream", "its base classes")
        text = "\n".join(
            [
                "```{eval-rst}",
                *rst,
                "```",
                "",
                "(inherited-options)=",
                "## Inherited options",
                "",
                f"Options inherited unchanged from {upstream}; they are documented there:",
                "",
                ", ".join(f"`{n}`" for n in inherited) + ".",
            ]
        )
        return self.render(text)


def _write_schemas(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        apex_schemas.write_schemas(Path(app.outdir) / SCHEMA_DIR)


def setup(app: Sphinx) -> dict:
    app.add_directive("apex-schema", SchemaDirective)
    app.add_directive("apex-cli", CliDirective)
    app.add_directive("apex-config", ConfigDirective)
    app.add_directive("apex-roles", RolesDirective)
    app.add_directive("apex-metrics", MetricsDirective)
    app.add_directive("apex-service-options", ServiceOptionsDirective)
    app.connect("build-finished", _write_schemas)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
