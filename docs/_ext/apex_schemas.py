"""JSON Schemas of the operator-written files, from the models that load them.

Why: editors validate a catalogue or a policy while it is written, and the reference pages list the
same fields, so both come from one place: the pydantic models (catalogue, culling policy) and the
quota loader's constants (the quota file has no model yet). ``model_json_schema()`` describes what a
model *stores*; where a ``BeforeValidator`` accepts more on input (``10`` for a string, ``"500m"``
for a CPU count, ``0644`` for a file mode, ``off`` read by YAML as ``false``), ``InputSchema`` widens
the schema so that a file the loader accepts also validates here (the docs tests check both ways).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: where the site publishes the schemas (an assumption until the docs have a home; one place to change)
BASE_ID = "https://esa-apex.github.io/apex-hub/schemas/"

_DURATION = {
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "description": "a duration such as '90s', '30m', '2h', '1d', '1h30m', or 'never'"},
        {"type": "null"},
    ],
    "default": None,
}
_NO_SCHEDULE = {
    "type": "string",
    "enum": ["never", "none", "off"],
    "description": "no scheduled shutdown in this section",
}


def _input_forms() -> dict:
    """What each of the profile fields' before-validators accepts, by validator function."""
    from apex_hub.profiles import fields, quantities

    return {
        fields._scalar_to_str: {"type": ["string", "number", "boolean"]},
        quantities.check_quantity: {
            "type": ["string", "number"],
            "description": "a Kubernetes quantity such as 1, '10Gi' or '500m'",
        },
        quantities.check_memory: {
            "type": ["string", "integer"],
            "description": "bytes, or a size such as '4G' or '512Mi' (K/M/G/T are powers of 1024)",
        },
        quantities.check_cpu: {
            "anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"type": "string"}],
            "description": "cores, e.g. 0.5, or millicores such as '500m'",
        },
        fields._file_mode: {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 0o777},
                {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$"},
            ],
            "description": "an octal file mode such as 0644",
        },
        fields._session_mode: {
            "enum": ["on-demand", "always-on", "off", False],
            "description": "on-demand, always-on or off (YAML reads a bare off as false)",
        },
    }


def _input_generator():
    """A pydantic schema generator that describes the input forms of ``_input_forms()``."""
    from pydantic.json_schema import GenerateJsonSchema

    forms = _input_forms()

    class InputSchema(GenerateJsonSchema):
        def function_before_schema(self, schema):
            form = forms.get(schema["function"]["function"])
            if form is not None:
                return copy.deepcopy(form)
            return super().function_before_schema(schema)

    return InputSchema


_PYDANTIC_ONLY = {"gt", "ge", "lt", "le"}  # constraint names pydantic leaves beside a replaced schema


def _clean(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _clean(v) for k, v in node.items() if k not in _PYDANTIC_ONLY}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _model_schema(model) -> dict:
    return _clean(
        model.model_json_schema(
            mode="validation", ref_template="#/$defs/{model}", schema_generator=_input_generator()
        )
    )


def _describe(schema: dict, title: str, description: str, file_id: str) -> dict:
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": BASE_ID + file_id,
        "title": title,
        "description": description,
        **schema,
    }


def catalogue_schema() -> dict:
    """The profiles catalogue: ``profiles`` (a list of profiles), ``defaults`` and the security switch."""
    from apex_hub.profiles.catalogue import TOP_LEVEL_FIELDS
    from apex_hub.profiles.schema import Profile

    profile = _model_schema(Profile)
    defs = profile.pop("$defs", {})
    defaults = copy.deepcopy(profile)
    defaults.pop("required", None)
    defaults["title"] = "ProfileDefaults"
    defaults["description"] = (
        "Fields merged into every profile (mappings key by key, named lists by"
        " name, anything else replaced by the profile's own value)."
    )
    defs["Profile"] = profile
    defs["ProfileDefaults"] = defaults
    top = {
        "type": "object",
        "additionalProperties": False,
        "required": ["profiles"],
        "properties": {
            "profiles": {
                "type": "array",
                "items": {"$ref": "#/$defs/Profile"},
                "description": "The profiles, in the order the spawn page shows them.",
            },
            "defaults": {
                "$ref": "#/$defs/ProfileDefaults",
                "description": "Profile fields merged into every profile.",
            },
            "allow_security_overrides": {
                "type": "boolean",
                "default": False,
                "description": "Let profiles set security_context and security-relevant overrides.",
            },
        },
        "$defs": defs,
    }
    assert set(top["properties"]) == set(TOP_LEVEL_FIELDS), "catalogue top-level fields changed"
    return _describe(
        top,
        "apex-hub profiles catalogue",
        "The profiles catalogue read by APExSpawner (profiles_file).",
        "catalogue.schema.json",
    )


def culling_policy_schema() -> dict:
    """The culler's policy file, widened to the input forms the loader accepts."""
    from apex_hub.services.culler.policy import CullingPolicy

    schema = _model_schema(CullingPolicy)
    rule = schema["$defs"]["Rule"]
    for name in ("idle_timeout", "max_age"):
        rule["properties"][name] = {**_DURATION, "title": rule["properties"][name].get("title", name)}
    schedule = rule["properties"]["schedule"]
    schedule["anyOf"] = [*schedule["anyOf"], _NO_SCHEDULE]
    return _describe(
        schema,
        "apex-hub culling and session policy",
        "The policy file of the culling service (apex_hub.services.culler).",
        "culling-policy.schema.json",
    )


def quotas_schema() -> dict:
    """The accounting service's quota file, from the loader's metric and period names."""
    from apex_hub.services.accounting.quota import METRICS, PERIODS

    budget = {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "properties": {
            metric: {"type": "number", "minimum": 0, "description": f"budget in {unit}"}
            for metric, unit in METRICS.items()
        },
        "description": "Budgets per metric, e.g. {cpu_hours: 500}.",
    }
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "period": {
                "enum": list(PERIODS),
                "default": "month",
                "description": "UTC calendar period the budgets apply to (week: from Monday).",
            },
            "groups": {
                "type": "object",
                "additionalProperties": {"$ref": "#/$defs/Budget"},
                "description": "Budgets of the sessions charged to each group (all members together).",
            },
            "users": {
                "type": "object",
                "additionalProperties": {"$ref": "#/$defs/Budget"},
                "description": "Budgets of each user's own sessions.",
            },
            "default": {
                "$ref": "#/$defs/Budget",
                "description": "Budget of users with no budget of their own.",
            },
        },
        "$defs": {"Budget": budget},
    }
    return _describe(
        schema,
        "apex-hub quotas",
        "The quota file of the accounting service (apex_hub.services.accounting).",
        "quotas.schema.json",
    )


SCHEMAS = {
    "catalogue": catalogue_schema,
    "culling-policy": culling_policy_schema,
    "quotas": quotas_schema,
}


def write_schemas(directory: Path) -> dict[str, Path]:
    """Write ``<name>.schema.json`` for every schema; returns name -> path."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, build in SCHEMAS.items():
        path = directory / f"{name}.schema.json"
        text = json.dumps(build(), indent=2, sort_keys=False) + "\n"
        if not path.exists() or path.read_text() != text:  # unchanged files keep Sphinx's cache valid
            path.write_text(text)
        written[name] = path
    return written


def _type_of(prop: dict[str, Any], prefix: str) -> str:
    if "$ref" in prop:
        name = prop["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{prefix}-{name.lower()})"
    if "anyOf" in prop:
        return " or ".join(_type_of(p, prefix) for p in prop["anyOf"])
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    kind = prop.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type_of(prop.get('items', {}), prefix)}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"mapping of {_type_of(prop['additionalProperties'], prefix)}"
    return f"{kind}" + (f" ({prop['pattern']})" if "pattern" in prop and len(prop["pattern"]) < 30 else "")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(prop: dict) -> str:
    if "default" not in prop:
        return ""
    return f"`{json.dumps(prop['default'])}`"


def _object_table(name: str, obj: dict, prefix: str) -> list[str]:
    lines = [f"({prefix}-{name.lower()})=", f"## {name}", ""]
    if obj.get("description"):
        lines += [_cell(obj["description"]), ""]
    props = obj.get("properties")
    if not props:
        lines += [f"Type: {_type_of(obj, prefix)}", ""]
        return lines
    required = set(obj.get("required", []))
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for field, prop in props.items():
        req = " (required)" if field in required else ""
        lines.append(
            f"| `{field}`{req} | {_cell(_type_of(prop, prefix))} | {_cell(_default(prop))} "
            f"| {_cell(prop.get('description', ''))} |"
        )
    return lines + [""]


def schema_markdown(schema: dict) -> str:
    """Field tables, the file's top level first, then every definition in name order."""
    prefix = "schema-" + schema["$id"].rsplit("/", 1)[-1].removesuffix(".schema.json")
    lines = _object_table("file", {**schema, "description": ""}, prefix)
    lines[1] = "## The file"
    for name in sorted(schema.get("$defs", {})):
        lines += _object_table(name, schema["$defs"][name], prefix)
    return "\n".join(lines)
