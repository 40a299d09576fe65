"""Command line: check a catalogue, or convert an EOEPCA ApplicationHub config.

Why: operators validate a catalogue in CI or before ``kubectl apply`` of the
ConfigMap, and migrate in one step::

    python -m apex_hub.profiles check profiles.yml
    python -m apex_hub.profiles convert-eoepca config.yml profiles.yml

Exit status: 0 on success, 1 when the catalogue (or the converted one) is
invalid, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .catalogue import Catalogue, parse_yaml
from .eoepca import DEFAULT_MANIFEST_KINDS, convert, dump_yaml
from .errors import CatalogueError


def _print_errors(exc: CatalogueError) -> None:
    print(str(exc), file=sys.stderr)


def check(path: str) -> int:
    """Validate ``path``; print OK and the profiles, or every problem."""
    try:
        catalogue = Catalogue.from_file(path)
    except CatalogueError as exc:
        _print_errors(exc)
        return 1
    print(f"OK: {path}: {len(catalogue)} profile{'s' * (len(catalogue) != 1)}")
    for profile in catalogue:
        groups = ", ".join(profile.groups) if profile.groups else "everyone"
        marker = " (default)" if profile.default else ""
        print(f"  {profile.slug}{marker}: {profile.display_name} [groups: {groups}]")
    _print_notes(catalogue)
    return 0


def _print_notes(catalogue: Catalogue) -> None:
    """What the cluster must allow for these profiles: manifest kinds, rules for the hub."""
    for line in kinds_to_allow(catalogue) + rules_to_grant_lines(catalogue):
        print(line)


def kinds_to_allow(catalogue: Catalogue) -> list[str]:
    """One line per profile whose manifests need kinds outside the default ``manifest_kinds``."""
    lines = []
    for profile in catalogue:
        kinds = sorted({kind for m in profile.manifests for kind in m.kinds} - set(DEFAULT_MANIFEST_KINDS))
        if kinds:
            lines.append(
                f"NOTE: profile {profile.slug!r}: manifests of kind {', '.join(kinds)} are not in"
                " the spawner's default manifest_kinds; allow them"
                f" (c.APExSpawner.manifest_kinds) or every spawn of it is refused"
            )
    return lines


def rules_to_grant_lines(catalogue: Catalogue) -> list[str]:
    """Per profile whose Roles grant more than the default hub ClusterRole: the rules to add."""
    from ..spawner.escalation import rules_to_grant  # the spawner's own check, lazily

    lines = []
    for slug, rules in rules_to_grant(catalogue).items():
        lines.append(
            f"NOTE: profile {slug!r}: its Roles grant what the hub's default ClusterRole"
            " (helm-values/rbac.yaml) does not hold, so Kubernetes would refuse to let the"
            " hub create them and the profile is not offered. Add these rules to the"
            " hub's ClusterRole and to c.APExSpawner.hub_rules:"
        )
        lines += [f"    - {json.dumps(rule)}" for rule in rules]
    return lines


def convert_eoepca(source: str, target: str) -> int:
    """Convert ``source`` (EOEPCA format) to ``target``, validate it, print the report."""
    try:
        with open(source, encoding="utf-8") as f:
            data = parse_yaml(f.read(), source)
        converted, report = convert(data)
    except OSError as exc:
        print(f"cannot read {source}: {exc}", file=sys.stderr)
        return 1
    except CatalogueError as exc:
        _print_errors(exc)
        return 1
    text = dump_yaml(converted)
    with open(target, "w", encoding="utf-8") as f:
        f.write(f"# Converted from {source} by `python -m apex_hub.profiles convert-eoepca`.\n")
        f.write(text)
    count = len(converted["profiles"])
    print(f"converted {count} profile{'s' * (count != 1)} from {source} to {target}")
    if report:
        print(f"{len(report)} item{'s' * (len(report) != 1)} not carried over as is:")
        for line in report:
            print(f"  - {line}")
    else:
        print("every field was mapped")
    try:
        catalogue = Catalogue.from_yaml(text, target)
    except CatalogueError as exc:
        print(f"{target} was written but does not validate; fix it by hand:", file=sys.stderr)
        _print_errors(exc)
        return 1
    print(f"OK: {target} validates")
    _print_notes(catalogue)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apex_hub.profiles", description="APEx profiles catalogue tools"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check_cmd = commands.add_parser("check", help="validate a profiles catalogue")
    check_cmd.add_argument("file")
    conv = commands.add_parser(
        "convert-eoepca", help="convert an EOEPCA ApplicationHub config.yml to a catalogue"
    )
    conv.add_argument("source", help="the EOEPCA config.yml")
    conv.add_argument("target", help="where to write the apex-hub catalogue")
    args = parser.parse_args(argv)
    if args.command == "check":
        return check(args.file)
    return convert_eoepca(args.source, args.target)


if __name__ == "__main__":
    sys.exit(main())
