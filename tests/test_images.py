"""The hub and single-user Dockerfiles: pinned bases, non-root, no secrets, no caches.

No Docker engine is needed: the Dockerfiles are parsed (instructions, line
continuations, comments, ARG substitution in FROM) and checked statically. The
checks are first run against small bad Dockerfiles so that a check that can
never fail is noticed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))
SECRET_NAME = re.compile(r"(^|_)(PASSWORD|PASSWD|PWD|SECRET|TOKEN|KEY|CREDENTIALS?|APIKEY)(_|$)", re.I)
FLOATING_TAGS = {"latest", "stable", "main", "master", "edge", "nightly", "dev", "testing"}
ROOT_USERS = {"0", "root", "0:0", "root:root", "root:0", "0:root"}


@dataclass
class Instruction:
    line: int
    keyword: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions in order; continuation lines joined, comments and blank lines dropped."""
    instructions: list[Instruction] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):  # comment lines inside a continuation are ignored
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, args = buffer.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), args.strip()))
        buffer = ""
    if buffer:
        raise ValueError(f"line {start}: the last instruction ends with a line continuation")
    return instructions


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """The build stages: each starts at a FROM (global ARGs before the first are dropped)."""
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def _substitute(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), value)


def _assignments(args: str) -> list[tuple[str, str | None]]:
    """``ENV``/``ARG`` arguments as (name, value or None); both ``A=b C=d`` and ``A b``."""
    words = shlex.split(args, posix=True)
    if len(words) >= 2 and "=" not in words[0]:  # legacy form: ENV NAME value with spaces
        return [(words[0], " ".join(words[1:]))]
    pairs = []
    for word in words:
        name, sep, value = word.partition("=")
        pairs.append((name, value if sep else None))
    return pairs


def problems(text: str) -> list[str]:
    """Everything wrong with a Dockerfile, one message each (empty: fine)."""
    found: list[str] = []
    instructions = parse(text)
    global_args = {}
    for ins in instructions:
        if ins.keyword == "FROM":
            break
        if ins.keyword == "ARG":
            global_args.update({k: v or "" for k, v in _assignments(ins.args)})
    all_stages = stages(instructions)
    if not all_stages:
        return ["no FROM instruction"]
    names: set[str] = set()
    for stage in all_stages:
        words = [w for w in stage[0].args.split() if not w.startswith("--platform")]
        image = _substitute(words[0], global_args)
        if len(words) >= 3 and words[1].lower() == "as":
            names.add(words[2].lower())
        if image.lower() in names or image == "scratch":
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        if "$" in image:
            found.append(f"line {stage[0].line}: FROM {words[0]}: unresolved variable")
        elif not tag:
            found.append(f"line {stage[0].line}: FROM {image} has no tag (pin an exact version or a digest)")
        elif tag.lower() in FLOATING_TAGS or not re.search(r"\d", tag):
            found.append(f"line {stage[0].line}: FROM {image}: {tag!r} is not an exact version")

    users = [ins for ins in all_stages[-1] if ins.keyword == "USER"]
    if not users:
        found.append("the final stage sets no USER (the base image's user is not visible here)")
    elif users[-1].args.strip().strip('"').lower() in ROOT_USERS:
        found.append(f"line {users[-1].line}: the image runs as root (USER {users[-1].args})")

    for ins in instructions:
        if ins.keyword in ("ENV", "ARG"):
            for name, value in _assignments(ins.args):
                if SECRET_NAME.search(name):
                    found.append(
                        f"line {ins.line}: {ins.keyword} {name}{'=' + value if value else ''}"
                        " looks like a secret; pass secrets at run time (Kubernetes Secrets)"
                    )
        if ins.keyword == "RUN":
            command = ins.args
            if re.search(r"\b(curl|wget)\b[^|;&]*\|\s*(sudo\s+)?(ba|z|da)?sh\b", command):
                found.append(f"line {ins.line}: a downloaded script is piped into a shell")
            for segment in re.split(r"&&|;|\|\|", command):
                if (
                    re.search(r"\bpip3?\s+install\b|\bpython3?\s+-m\s+pip\s+install\b", segment)
                    and "--no-cache-dir" not in segment
                ):
                    found.append(f"line {ins.line}: pip install without --no-cache-dir: {segment.strip()}")
    return found


# -- the checker itself ---------------------------------------------------------------------

BAD = {
    "no tag": ("FROM python\nUSER 1000\n", "has no tag"),
    "latest": ("FROM quay.io/jupyter/base-notebook:latest\nUSER 1000\n", "not an exact version"),
    "root": ("FROM python:3.12.7\nUSER root\n", "runs as root"),
    "uid 0": ("FROM python:3.12.7\nUSER 1000\nRUN true\nUSER 0\n", "runs as root"),
    "no user": ("FROM python:3.12.7\nRUN true\n", "sets no USER"),
    "secret env": ("FROM python:3.12.7\nENV API_TOKEN=abc\nUSER 1000\n", "looks like a secret"),
    "secret env legacy": ("FROM python:3.12.7\nENV DB_PASSWORD hunter2\nUSER 1000\n", "looks like a secret"),
    "secret arg": ("FROM python:3.12.7\nARG AWS_SECRET_ACCESS_KEY\nUSER 1000\n", "looks like a secret"),
    "curl sh": (
        "FROM python:3.12.7\nRUN curl -fsSL https://x.example/i.sh \\\n  | bash\nUSER 1000\n",
        "piped into a shell",
    ),
    "pip cache": (
        "FROM python:3.12.7\nRUN apt-get update && \\\n    pip install apex-hub\nUSER 1000\n",
        "without --no-cache-dir",
    ),
    "arg in from": ("ARG BASE=python:latest\nFROM ${BASE}\nUSER 1000\n", "not an exact version"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_checker_catches(case):
    text, message = BAD[case]
    assert any(message in p for p in problems(text)), problems(text)


def test_the_checker_accepts_good_forms():
    text = (
        "# syntax=docker/dockerfile:1\nARG BASE=python:3.12.7-slim\nFROM ${BASE} AS build\n"
        "RUN python -m pip install --no-cache-dir \\\n    # a comment inside\n    wheel\n"
        "FROM quay.io/x/y@sha256:" + "a" * 64 + "\nCOPY --from=build /x /x\n"
        "ENV KEYRING_BACKEND_NAME_IS_NOT=a PIP_NO_COLOR=1\nUSER 1000:100\n"
    )
    assert problems(text) == []
    assert [i.keyword for i in parse(text)] == ["ARG", "FROM", "RUN", "FROM", "COPY", "ENV", "USER"]


# -- the images ----------------------------------------------------------------------------


def test_both_images_exist():
    assert {p.parent.name for p in DOCKERFILES} >= {"hub", "singleuser"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_is_pinned_non_root_and_secret_free(path):
    assert problems(path.read_text()) == []


def test_hub_image_builds_on_the_z2jh_hub_image_and_installs_the_package():
    instructions = parse((ROOT / "images/hub/Dockerfile").read_text())
    base = next(i.args for i in instructions if i.keyword == "FROM")
    assert re.fullmatch(r"quay\.io/jupyterhub/k8s-hub:4\.\d+\.\d+", base), base
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert re.search(r"pip install --no-cache-dir \S*apex-hub", runs)
    copies = [i.args for i in instructions if i.keyword == "COPY"]
    assert any(c.startswith("apex_hub ") for c in copies) and any(
        "pyproject.toml" in c and "LICENSE" in c for c in copies
    )
    assert [i.args for i in instructions if i.keyword == "USER"][-1] == "jovyan"  # the base's user


def test_singleuser_image_has_conda_and_runs_as_uid_1000():
    instructions = parse((ROOT / "images/singleuser/Dockerfile").read_text())
    base = next(i.args for i in instructions if i.keyword == "FROM")
    assert re.fullmatch(r"quay\.io/jupyter/minimal-notebook:\d{4}-\d{2}-\d{2}", base), base
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert "mamba install" in runs and "ipykernel" in runs
    assert [i.args for i in instructions if i.keyword == "USER"][-1] in ("1000", "${NB_UID}")
