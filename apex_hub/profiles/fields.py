"""Reusable validated field types for the profile schema.

Why: names, paths, modes and quantities are checked the same way in many
places; each type here fails with a message that says what to write instead.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ..naming import is_dns_label, is_dns_subdomain
from .quantities import check_cpu, check_memory, check_quantity
from .templating import EXAMPLE_VALUES, render

_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_RESOURCE = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)

#: Kubernetes' limit for the data of one ConfigMap.
CONFIGMAP_MAX_BYTES = 1024 * 1024


class StrictModel(BaseModel):
    """Base model: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _dns_label(value: str) -> str:
    if not is_dns_label(value):
        raise ValueError(
            f"{value!r} is not a valid name: use at most 63 lowercase letters, digits"
            " and '-', starting and ending with a letter or digit"
        )
    return value


def _dns_subdomain(value: str) -> str:
    if not is_dns_subdomain(value):
        raise ValueError(
            f"{value!r} is not a valid Kubernetes object name: use lowercase letters,"
            " digits, '-' and '.', starting and ending with a letter or digit"
        )
    return value


def _templated_name(value: str) -> str:
    _dns_subdomain(render(value, EXAMPLE_VALUES))
    return value


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or "\0" in value:
        raise ValueError(f"{value!r} must be an absolute path such as '/home/jovyan/.condarc'")
    if ".." in value.split("/"):
        raise ValueError(f"{value!r} must not contain '..'")
    return value


def _sub_path(value: str) -> str:
    if value.startswith("/") or ".." in value.split("/") or "\0" in value:
        raise ValueError(f"{value!r} must be a relative path inside the volume, without '..'")
    return value


def _config_key(value: str) -> str:
    if len(value) > 253 or not _CONFIG_KEY.match(value):
        raise ValueError(f"{value!r} is not a valid ConfigMap key: use letters, digits, '-', '_' and '.'")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid environment variable name: use letters, digits,"
            " '_', '-' and '.', not starting with a digit"
        )
    return value


def _resource_name(value: str) -> str:
    if not _RESOURCE.match(value):
        raise ValueError(f"{value!r} is not a resource name such as 'nvidia.com/gpu'")
    return value


_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _label_value(value: str) -> str:
    """What the API server accepts as a label value (and so as a node-selector value)."""
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"{value!r} is not a valid label value: at most 63 letters, digits, '-', '_'"
            " and '.', starting and ending with a letter or digit (quotes are not part of it)"
        )
    return value


def _scalar_to_str(value: object) -> object:
    """YAML turns ``true`` and ``10`` into bool/int; Kubernetes wants strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _file_mode(value: object) -> int:
    """Accept ``0644`` (YAML reads it as octal), ``0o644`` or the string ``'0644'``."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not re.fullmatch(r"[0-7]{1,4}", text):
            raise ValueError(f"{value!r} is not an octal file mode such as '0644'")
        value = int(text, 8)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a file mode; write it in octal, e.g. 0644")
    if not 0 <= value <= 0o777:
        raise ValueError(
            f"{value} is not a file mode: write it in octal with a leading 0 (0644)"
            " or quote it ('0644'); a plain 644 is read as a decimal number"
        )
    return value


DNSLabel = Annotated[str, AfterValidator(_dns_label)]
ObjectName = Annotated[str, AfterValidator(_dns_subdomain)]
TemplatedName = Annotated[str, AfterValidator(_templated_name)]
AbsolutePath = Annotated[str, AfterValidator(_absolute_path)]
SubPath = Annotated[str, AfterValidator(_sub_path)]
ConfigKey = Annotated[str, AfterValidator(_config_key)]
EnvName = Annotated[str, AfterValidator(_env_name)]
ResourceName = Annotated[str, AfterValidator(_resource_name)]
LooseStr = Annotated[str, BeforeValidator(_scalar_to_str)]
LabelValue = Annotated[str, BeforeValidator(_scalar_to_str), AfterValidator(_label_value)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
FileMode = Annotated[int, BeforeValidator(_file_mode)]
Quantity = Annotated[str, BeforeValidator(check_quantity)]
Memory = Annotated[str, BeforeValidator(check_memory)]
Cpu = Annotated[float, BeforeValidator(check_cpu), Field(gt=0)]


def _session_mode(value: Any) -> Any:
    # YAML 1.1 reads a bare `off` as False (and `on` as True).
    if value is False:
        return "off"
    if value is True:
        raise ValueError("write 'always-on' or 'on-demand' (a bare 'on' reads as true)")
    return value


#: How a profile's servers live: started on demand, kept always on, or not startable.
SessionMode = Annotated[Literal["on-demand", "always-on", "off"], BeforeValidator(_session_mode)]
