"""The documentation site: it builds with warnings as errors, its internal links and anchors resolve,
and what it generates from the code agrees with the code.

Why: the reference pages are generated from traits, models and parsers, so they can only drift if the
generators break; these tests build the real site (``sphinx-build -W`` into a temporary directory) and
check it offline. External URLs are not fetched (no network in CI): they are only counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

for _module in ("sphinx", "myst_parser", "autodoc_traits", "pydata_sphinx_theme", "jsonschema"):
    pytest.importorskip(
        _module, reason=f'the docs extra is not installed ({_module} missing): pip install -e ".[docs]"'
    )

import jsonschema  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import apex_cli  # noqa: E402
import apex_docs  # noqa: E402
import apex_schemas  # noqa: E402


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built once for this module, warnings as errors, from a clean output directory."""
    out = tmp_path_factory.mktemp("docs-html")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(out / ".doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"sphinx-build -W failed:\n{result.stderr}\n{result.stdout}"
    return out


class _Links(HTMLParser):
    """Collects every href/src and every id of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for key in ("href", "src"):
            if attrs.get(key) and not (
                tag == "link" and key == "href" and "preload" in (attrs.get("rel") or "")
            ):
                self.links.append(attrs[key])


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _internal_link_problems(site: Path) -> tuple[list[str], int]:
    """(broken internal links and anchors, number of external links skipped)."""
    pages = {p: _parse(p) for p in site.rglob("*.html") if "_static" not in p.parts}
    problems, external = [], 0
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme in ("http", "https", "mailto", "data") or link.startswith("//"):
                external += 1  # not fetched: the check must work offline
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            where = f"{page.relative_to(site)}: {link}"
            if not target.exists():
                problems.append(f"{where}: no such file")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: no anchor #{parts.fragment}")
    return problems, external


def test_the_site_builds_with_warnings_as_errors(site):
    for page in (
        "index",
        "tutorials/local-mode",
        "how-to/spawner",
        "how-to/migrate-eoepca",
        "explanation/architecture",
        "explanation/security",
        "explanation/kubesim",
        "explanation/performance",
        "troubleshooting",
        "changelog",
        "reference/spawner",
        "reference/authenticator",
        "reference/catalogue",
        "reference/culling-policy",
        "reference/quotas",
        "reference/cli",
    ):
        assert (site / f"{page}.html").is_file(), page


def test_internal_links_and_anchors_resolve(site):
    problems, external = _internal_link_problems(site)
    assert problems == []
    assert external > 0  # the pages do link out (z2jh, upstream references): skipped, not checked


def test_the_link_check_finds_a_broken_anchor(site, tmp_path):
    """The check above can fail: a page with a missing file and a missing anchor is reported."""
    (tmp_path / "a.html").write_text(
        '<p id="here"></p><a href="a.html#here">ok</a>'
        '<a href="a.html#gone">x</a><a href="b.html">y</a>'
        '<a href="https://example.org/">z</a>'
    )
    problems, external = _internal_link_problems(tmp_path)
    assert problems == ["a.html: a.html#gone: no anchor #gone", "a.html: b.html: no such file"]
    assert external == 1


@pytest.mark.parametrize(
    ("cls_path", "page"),
    [
        ("apex_hub.spawner.APExSpawner", "reference/spawner.html"),
        ("apex_hub.auth.APExOIDCAuthenticator", "reference/authenticator.html"),
    ],
)
def test_every_option_apex_hub_adds_is_in_the_configuration_reference(site, cls_path, page):
    import importlib

    module, _, name = cls_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    own, inherited = apex_docs.own_config_traits(cls)
    assert own, f"{cls_path} defines no config traits?"
    ids = _parse(site / page).ids
    missing = [t for t in own if f"{cls_path}.{t}" not in ids]
    assert missing == []
    text = (site / page).read_text()
    assert all(
        f'<code class="docutils literal notranslate"><span class="pre">{t}</span></code>' in text
        for t in inherited[:20]
    )  # listed by name under "Inherited options"


def test_every_command_line_option_is_in_the_cli_reference(site):
    text = (site / "reference/cli.html").read_text()
    for title, target in apex_cli.COMMANDS:
        parsers = [apex_cli.capture_parser(target)]
        while parsers:
            parser = parsers.pop()
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction):
                    parsers.extend(action.choices.values())
                elif not isinstance(action, argparse._HelpAction):
                    for option in action.option_strings:
                        assert f">{option}<" in text, f"{title}: {option}"


def test_capture_parser_runs_no_command():
    """Capturing the parser of ``apex-hub`` must not start kubesim or local mode."""
    parser = apex_cli.capture_parser("apex_hub.cli:main")
    assert {"kubesim", "local"} <= set(parser._subparsers._group_actions[0].choices)
    assert argparse.ArgumentParser.parse_args.__name__ == "parse_args"  # restored


def test_schemas_are_published_and_valid(site):
    for name, build in apex_schemas.SCHEMAS.items():
        published = json.loads((site / "schemas" / f"{name}.schema.json").read_text())
        assert published == build()
        jsonschema.Draft202012Validator.check_schema(published)
        assert published["$id"].endswith(f"/schemas/{name}.schema.json")


def test_catalogue_reference_lists_every_profile_field(site):
    from apex_hub.profiles.schema import Profile

    text = (site / "reference/catalogue.html").read_text()
    missing = [f for f in Profile.model_fields if f">{f}<" not in text]
    assert missing == []


SHIPPED = [
    ("catalogue", "apex_hub/localdata/profiles.yml"),
    ("catalogue", "examples/profiles.yml"),
    ("culling-policy", "apex_hub/localdata/culling.yaml"),
    ("quotas", "apex_hub/localdata/quotas.yaml"),
]


@pytest.mark.parametrize(("schema", "path"), SHIPPED)
def test_shipped_files_validate_against_their_schema(schema, path):
    data = yaml.safe_load((ROOT / path).read_text())
    errors = [
        f"{list(e.path)}: {e.message}"
        for e in jsonschema.Draft202012Validator(apex_schemas.SCHEMAS[schema]()).iter_errors(data)
    ]
    assert errors == []


def _loader_accepts(schema: str, data) -> bool:
    from apex_hub.profiles import Catalogue
    from apex_hub.profiles.errors import CatalogueError
    from apex_hub.services.accounting.quota import QuotaError, Quotas
    from apex_hub.services.culler.policy import CullingPolicy, PolicyError

    load, error = {
        "catalogue": (Catalogue.from_dict, CatalogueError),
        "culling-policy": (CullingPolicy.from_data, PolicyError),
        "quotas": (Quotas.from_dict, QuotaError),
    }[schema]
    try:
        load(data)
    except error:
        return False
    return True


_PROFILE = {"slug": "lab", "display_name": "Lab"}

# (schema, file content, accepted by the loader): the schema must give the same answer
AGREEMENT = [
    ("catalogue", {"profiles": [_PROFILE]}, True),
    (
        "catalogue",
        {
            "profiles": [
                {
                    **_PROFILE,
                    "cpu_limit": "500m",
                    "mem_limit": "4G",
                    "env": {"N": 8, "DEBUG": True},
                    "session_mode": False,
                }
            ]
        },
        True,
    ),
    (
        "catalogue",
        {"profiles": [_PROFILE], "defaults": {"image": "x"}, "allow_security_overrides": True},
        True,
    ),
    ("catalogue", {"profiles": [_PROFILE], "extra": 1}, False),
    ("catalogue", {"profiles": [{**_PROFILE, "colour": "red"}]}, False),
    ("catalogue", {"profiles": [{"display_name": "no slug"}]}, False),
    ("catalogue", {"profiles": [{**_PROFILE, "session_mode": "sometimes"}]}, False),
    ("catalogue", {}, False),
    ("culling-policy", {"defaults": {"idle_timeout": "2h", "max_age": 3600}}, True),
    ("culling-policy", {"groups": {"ops": {"session_mode": "always-on", "schedule": "never"}}}, True),
    (
        "culling-policy",
        {"profiles": {"gpu": {"schedule": {"cron": "0 20 * * 1-5", "timezone": "UTC"}}}},
        True,
    ),
    ("culling-policy", {"defaults": {"idle_timout": "2h"}}, False),
    ("culling-policy", {"whatever": {}}, False),
    ("quotas", {"period": "week", "groups": {"g": {"cpu_hours": 5}}, "default": {"gpu_hours": 1}}, True),
    ("quotas", {"period": "year"}, False),
    ("quotas", {"users": {"alice": {"cpu_minutes": 5}}}, False),
    ("quotas", {"users": {"alice": {"cpu_hours": -1}}}, False),
    ("quotas", {"users": {"alice": {}}}, False),
    ("quotas", {"budgets": {}}, False),
]


@pytest.mark.parametrize(("schema", "data", "accepted"), AGREEMENT)
def test_schema_and_loader_agree(schema, data, accepted):
    assert _loader_accepts(schema, data) is accepted, "the case table is wrong about the loader"
    valid = jsonschema.Draft202012Validator(apex_schemas.SCHEMAS[schema]()).is_valid(data)
    assert valid is accepted


def test_services_page_lists_every_role_scope_and_metric(site):
    from apex_hub.services import CULLER_SCOPES, restart_scope
    from apex_hub.services.accounting.config import ACCOUNTING_SCOPES, QUOTA_STOP_SCOPE

    text = (site / "reference/services.html").read_text()
    for scope in [
        *CULLER_SCOPES,
        *ACCOUNTING_SCOPES,
        QUOTA_STOP_SCOPE,
        restart_scope(),
        "servers!user=apex-probe",
    ]:
        assert f">{scope}<" in text, scope
    assert '(with <code class="docutils literal notranslate"><span class="pre">quota_stop:' in text
    for metric in (
        "apex_monitoring_status",
        "apex_monitoring_probe_runs_total",
        "apex_monitoring_probe_phase_seconds",
        "apex_monitoring_component_up",
    ):
        assert f">{metric}<" in text, metric


def _hub_rules_table() -> list[tuple[str, list[dict]]]:
    """(what the profile grants, the rules the page says to add) per row of the spawner page's table."""
    text = (DOCS / "how-to" / "spawner.md").read_text()
    section = text[text.index("## Profile roles and the hub's permissions") :]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not line.startswith("| ") or len(cells) != 2 or cells[0].startswith(("a profile Role", "---")):
            continue
        flows = [
            f.replace("…,", 'apiGroups: [""],') for f in __import__("re").findall(r"`(\{[^`]*\})`", cells[1])
        ]
        rows.append((cells[0], [yaml.safe_load(f) for f in flows]))
    return rows


def test_the_rules_the_docs_say_to_add_are_the_ones_the_hub_lacks():
    """The spawner page's "what the hub must also hold" table agrees with the escalation check: each
    advised rule is missing from the default ``hub_rules``, and the "nothing" row really needs nothing."""
    from apex_hub.profiles import Catalogue
    from apex_hub.spawner.escalation import DEFAULT_HUB_RULES, missing

    rows = _hub_rules_table()
    assert len(rows) >= 7, rows
    for grants, advised in rows:
        if not advised:
            assert grants.startswith("`pods`, `pods/log`: get/list/watch"), grants
            continue
        for rule in advised:
            assert missing(DEFAULT_HUB_RULES, [rule]), f"{grants}: the default already holds {rule}"
    example = Catalogue.from_dict(yaml.safe_load((ROOT / "examples/profiles.yml").read_text()))
    pod_reader = [b for p in example.profiles for b in p.role_bindings if b.name == "pod-reader"]
    assert pod_reader, "examples/profiles.yml has no pod-reader any more: update the table"
    rules = [
        {"apiGroups": r.api_groups, "resources": r.resources, "verbs": r.verbs}
        for b in pod_reader
        for r in b.role.rules
    ]
    assert missing(DEFAULT_HUB_RULES, rules) == []
