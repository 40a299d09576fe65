"""Loading the profiles catalogue, gating it by group, and re-reading it live.

Why: the catalogue is a mounted ConfigMap that operators edit while the hub
runs.  Loading reports *every* problem at once; ``CatalogueFile`` picks up a
new version without a restart and keeps serving the last good one when an edit
is broken; ``authorize`` is the spawn-time group gate that the REST API cannot
bypass.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import (
    CatalogueError,
    NoProfileAvailable,
    ProfileNotAllowed,
    UnknownProfile,
    format_validation_error,
)
from .schema import Profile
from .yamlsafe import NoAliasLoader

_log = logging.getLogger("apex_hub.profiles")

TOP_LEVEL_FIELDS = ("profiles", "defaults", "allow_security_overrides")
_IDENTITY_FIELDS = ("slug", "display_name", "description", "default")
_NAMED_LISTS = (
    "config_maps",
    "volumes",
    "secret_mounts",
    "init_containers",
    "manifests",
    "conda_environments",
    "role_bindings",
)


class _UniqueKeyLoader(NoAliasLoader):
    """SafeLoader that refuses aliases, and duplicate keys instead of keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (the later value would replace the earlier one); keep only one",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str | None = None) -> Any:
    """Parse YAML, turning syntax errors into a ``CatalogueError`` with line/column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        context = f" ({exc.context})" if exc.context else ""
        raise CatalogueError([f"YAML syntax: {where}{exc.problem}{context}"], source) from None
    except yaml.YAMLError as exc:
        raise CatalogueError([f"YAML syntax: {exc}"], source) from None


def merge_defaults(defaults: Mapping[str, Any], profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile with ``defaults`` underneath.

    Scalars and plain lists: the profile's value wins.  Mappings: merged one level
    (the profile's keys win).  Lists of named items (config maps, volumes, ...):
    the defaults' items first, a profile item replacing a default of the same name.
    """
    merged = copy.deepcopy(dict(defaults))
    for key, value in profile.items():
        base = merged.get(key)
        if isinstance(base, Mapping) and isinstance(value, Mapping):
            merged[key] = {**base, **value}
        elif key in _NAMED_LISTS and isinstance(base, list) and isinstance(value, list):
            names = {i.get("name"): n for n, i in enumerate(base) if isinstance(i, Mapping)}
            combined = list(base)
            for item in value:
                name = item.get("name") if isinstance(item, Mapping) else None
                if name in names:
                    combined[names[name]] = item
                else:
                    combined.append(item)
            merged[key] = combined
        else:
            merged[key] = value
    return merged


def _label(index: int, raw: Any) -> str:
    slug = raw.get("slug") if isinstance(raw, Mapping) else None
    return f"profile {slug!r}" if isinstance(slug, str) and slug else f"profiles[{index}]"


def _validate(raw: Any, label: str, context: dict) -> tuple[Profile | None, list[str]]:
    try:
        return Profile.model_validate(raw, context=context), []
    except ValidationError as exc:
        return None, [f"{label}: {line}" for line in format_validation_error(exc, raw)]


def _check_defaults(defaults: Any, context: dict) -> list[str]:
    if not isinstance(defaults, Mapping):
        return ["defaults: must be a mapping of profile fields"]
    problems = [
        f"defaults: {key}: set this per profile, not in defaults"
        for key in _IDENTITY_FIELDS
        if key in defaults
    ]
    probe = {**defaults, "slug": "defaults", "display_name": "defaults"}
    _, errors = _validate(probe, "defaults", context)
    return problems + errors


def _top_level_problems(data: Any) -> list[str]:
    if not isinstance(data, Mapping):
        return ["the catalogue must be a mapping with a 'profiles' list"]
    problems = [
        f"{key}: unknown top-level field; known: {', '.join(TOP_LEVEL_FIELDS)}"
        for key in data
        if key not in TOP_LEVEL_FIELDS
    ]
    if not isinstance(data.get("profiles"), list):
        problems.append("profiles: required, and must be a list of profiles")
    if not isinstance(data.get("allow_security_overrides", False), bool):
        problems.append("allow_security_overrides: must be true or false")
    return problems


def _cross_profile_problems(indexed: list[tuple[int, Profile]]) -> list[str]:
    problems: list[str] = []
    first: dict[str, int] = {}
    for index, profile in indexed:
        if profile.slug in first:
            problems.append(
                f"profile {profile.slug!r}: slug: profiles[{index}] uses the same slug as"
                f" profiles[{first[profile.slug]}]; slugs must be unique"
            )
        first.setdefault(profile.slug, index)
    defaults = [p.slug for _, p in indexed if p.default]
    if len(defaults) > 1:
        problems.append(
            f"default: more than one profile is marked default ({', '.join(defaults)});"
            " keep 'default: true' on one"
        )
    return problems


@dataclass(frozen=True)
class Catalogue:
    """A validated list of profiles, in file order."""

    profiles: tuple[Profile, ...]
    allow_security_overrides: bool = False
    source: str | None = None

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None) -> Catalogue:
        """Validate parsed YAML; raise ``CatalogueError`` listing every problem."""
        problems = _top_level_problems(data)
        if problems:
            raise CatalogueError(problems, source)
        context = {"allow_security_overrides": data.get("allow_security_overrides", False)}
        defaults = data.get("defaults") or {}
        default_problems = _check_defaults(defaults, context) if defaults else []
        if default_problems:
            defaults = {}
        profiles, problems = [], list(default_problems)
        for index, raw in enumerate(data["profiles"]):
            if not isinstance(raw, Mapping):
                problems.append(f"profiles[{index}]: must be a mapping of profile fields")
                continue
            profile, errors = _validate(merge_defaults(defaults, raw), _label(index, raw), context)
            problems.extend(errors)
            if profile is not None:
                profiles.append((index, profile))
        problems.extend(_cross_profile_problems(profiles))
        if problems:
            raise CatalogueError(problems, source)
        return cls(tuple(p for _, p in profiles), context["allow_security_overrides"], source)

    @classmethod
    def from_yaml(cls, text: str, source: str | None = None) -> Catalogue:
        data = parse_yaml(text, source)
        return cls.from_dict({} if data is None else data, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Catalogue:
        source = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogueError([f"cannot read the file: {exc}"], source) from None
        return cls.from_yaml(text, source)

    # ---- lookup and the group gate ------------------------------------------------

    @property
    def slugs(self) -> list[str]:
        return [p.slug for p in self.profiles]

    def __iter__(self):
        return iter(self.profiles)

    def __len__(self) -> int:
        return len(self.profiles)

    def get(self, slug: str) -> Profile:
        """The profile with ``slug``, or ``UnknownProfile``."""
        for profile in self.profiles:
            if profile.slug == slug:
                return profile
        raise UnknownProfile(slug)

    def for_groups(self, groups: Iterable[str]) -> list[Profile]:
        """Profiles open to everyone or to one of ``groups``, in file order."""
        names = set(groups)
        return [p for p in self.profiles if p.allows(names)]

    def default_for(self, groups: Iterable[str]) -> Profile | None:
        """The user's default: the visible profile marked default, else the first."""
        visible = self.for_groups(groups)
        return next((p for p in visible if p.default), visible[0] if visible else None)

    def authorize(self, slug: str | None, groups: Iterable[str]) -> Profile:
        """The profile ``slug`` if the user's ``groups`` may use it (spawn-time gate).

        An empty slug means the user's default.  Raises ``UnknownProfile``,
        ``ProfileNotAllowed`` or ``NoProfileAvailable``; messages mention only
        profiles the user may use.
        """
        names = set(groups)
        if not slug:
            profile = self.default_for(names)
            if profile is None:
                raise NoProfileAvailable(names)
            return profile
        visible = [p.slug for p in self.for_groups(names)]
        try:
            profile = self.get(slug)
        except UnknownProfile:
            raise UnknownProfile(slug, visible) from None
        if not profile.allows(names):
            raise ProfileNotAllowed(slug, profile.groups, names)
        return profile


_UNREAD = object()


class CatalogueFile:
    """A catalogue file re-read whenever it changes (mtime, size, inode).

    ``os.stat`` follows symlinks, so the symlink swap by which Kubernetes updates
    a mounted ConfigMap is seen.  An invalid new version is logged and the last
    good catalogue stays in service; ``errors`` holds the problems meanwhile.
    """

    def __init__(self, path: str | os.PathLike, log: logging.Logger | None = None):
        self.path = os.fspath(path)
        self.log = log or _log
        self.errors: list[str] = []
        self._catalogue: Catalogue | None = None
        self._signature: object = _UNREAD

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def current(self) -> Catalogue:
        """The catalogue, re-read first if the file changed.

        Raises ``CatalogueError`` only when no valid version was ever loaded.
        """
        signature = self._stat()
        if signature != self._signature:
            self._signature = signature
            self._load()
        if self._catalogue is None:
            raise CatalogueError(self.errors, self.path)
        return self._catalogue

    def _load(self) -> None:
        try:
            catalogue = Catalogue.from_file(self.path)
        except CatalogueError as exc:
            self.errors = exc.problems
            keeping = "keeping the previous version" if self._catalogue else "no profiles yet"
            self.log.error("%s; %s", exc, keeping)
            return
        if self._catalogue is not None:
            self.log.info("profiles catalogue %s reloaded: %s", self.path, ", ".join(catalogue.slugs))
        self.errors = []
        self._catalogue = catalogue
