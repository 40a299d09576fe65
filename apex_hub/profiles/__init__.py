"""The profiles catalogue: what users can start, validated, group-gated, live.

Why a package of its own: the spawner, the spawn form, the culler and the
accounting service all read profiles; they share one schema and one loader.
Typical use in ``jupyterhub_config.py``::

    from apex_hub.profiles import CatalogueFile
    profiles = CatalogueFile("/etc/apex/profiles.yml")
    profile = profiles.current().authorize(slug, [g.name for g in user.groups])
"""

from .catalogue import Catalogue, CatalogueFile, merge_defaults, parse_yaml
from .eoepca import convert as convert_eoepca
from .errors import (
    CatalogueError,
    NoProfileAvailable,
    ProfileError,
    ProfileNotAllowed,
    UnknownProfile,
)
from .fields import CONFIGMAP_MAX_BYTES
from .items import (
    CondaEnvironment,
    ConfigMapItem,
    EnvReference,
    KeyRef,
    ManifestItem,
    PolicyRule,
    RoleBindingItem,
    RoleItem,
    SecretMount,
    Subject,
    Toleration,
    VolumeItem,
)
from .overrides import ALLOWED_OVERRIDES
from .quantities import memory_bytes
from .schema import Profile
from .templating import PLACEHOLDERS, render

__all__ = [
    "ALLOWED_OVERRIDES",
    "CONFIGMAP_MAX_BYTES",
    "PLACEHOLDERS",
    "Catalogue",
    "CatalogueError",
    "CatalogueFile",
    "CondaEnvironment",
    "ConfigMapItem",
    "EnvReference",
    "KeyRef",
    "ManifestItem",
    "NoProfileAvailable",
    "PolicyRule",
    "Profile",
    "ProfileError",
    "ProfileNotAllowed",
    "RoleBindingItem",
    "RoleItem",
    "SecretMount",
    "Subject",
    "Toleration",
    "UnknownProfile",
    "VolumeItem",
    "convert_eoepca",
    "memory_bytes",
    "merge_defaults",
    "parse_yaml",
    "render",
]
