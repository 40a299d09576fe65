"""``python -m apex_hub.profiles``: exit codes and output, run as a real process."""

import subprocess
import sys
from pathlib import Path

import yaml

from apex_hub.profiles import Catalogue

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "apex_hub.profiles", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,  # a hang guard only: convert-eoepca took 11 s here on a loaded machine
    )


def test_check_ok():
    result = run("check", ROOT / "examples" / "profiles.yml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK: ")
    for slug in (
        "jupyterlab (default)",
        "conda-sentinel",
        "vscode-small",
        "processing-large",
        "gpu",
        "desktop",
    ):
        assert f"  {slug}" in result.stdout
    assert "[groups: apex-large]" in result.stdout


def test_check_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "profiles:\n  - slug: gpu-large\n    display_name: GPU\n    cpu_limit: lots\n    colour: red\n"
    )
    result = run("check", bad)
    assert result.returncode == 1
    assert "2 problems" in result.stderr
    assert "profile 'gpu-large': cpu_limit: Input should be a valid number" in result.stderr
    assert "profile 'gpu-large': colour: unknown field" in result.stderr
    assert "OK" not in result.stdout


def test_check_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("profiles: [\n")
    result = run("check", bad)
    assert result.returncode == 1 and "YAML syntax: line 2" in result.stderr
    result = run("check", tmp_path / "missing.yml")
    assert result.returncode == 1 and "cannot read the file" in result.stderr


def test_usage_errors():
    assert run().returncode == 2
    assert run("frobnicate").returncode == 2
    assert run("check").returncode == 2


def test_convert_eoepca(tmp_path):
    out = tmp_path / "profiles.yml"
    result = run("convert-eoepca", ROOT / "examples" / "eoepca-config.yml", out)
    assert result.returncode == 0, result.stderr
    assert "converted 1 profile" in result.stdout
    assert "image_pull_secrets[0] ('cr-config'): the inline credentials in 'data' were NOT" in result.stdout
    assert f"OK: {out} validates" in result.stdout
    assert Catalogue.from_file(out).slugs == ["apex-coder-medium"]
    assert run("check", out).returncode == 0


def test_convert_eoepca_invalid_result(tmp_path):
    source = tmp_path / "config.yml"
    source.write_text(
        yaml.safe_dump(
            {
                "profiles": [
                    {
                        "id": "p",
                        "groups": [],
                        "node_selector": {},
                        "definition": {
                            "display_name": "P",
                            "slug": "p",
                            "kubespawner_override": {"cpu_limit": "lots", "mem_limit": "1G", "image": "x"},
                        },
                    }
                ]
            }
        )
    )
    out = tmp_path / "out.yml"
    result = run("convert-eoepca", source, out)
    assert result.returncode == 1
    assert "was written but does not validate" in result.stderr
    assert "profile 'p': cpu_limit" in result.stderr
    assert out.exists()


def test_convert_eoepca_not_eoepca(tmp_path):
    source = tmp_path / "config.yml"
    source.write_text("hub: {}\n")
    result = run("convert-eoepca", source, tmp_path / "out.yml")
    assert result.returncode == 1 and "no 'profiles' list" in result.stderr
    result = run("convert-eoepca", tmp_path / "missing.yml", tmp_path / "out.yml")
    assert result.returncode == 1 and "cannot read" in result.stderr


def test_main_function(capsys):
    from apex_hub.profiles.__main__ import main

    assert main(["check", str(ROOT / "examples" / "profiles.yml")]) == 0
    assert "OK:" in capsys.readouterr().out
