"""CatalogueFile: re-read on change, keep the last good version on a broken edit."""

import logging
import os

import pytest

from apex_hub.profiles import CatalogueError, CatalogueFile

V1 = "profiles:\n  - slug: one\n    display_name: One\n"
V2 = V1 + "  - slug: two\n    display_name: Two\n"
BROKEN = "profiles:\n  - slug: one\n    display_name: One\n    cpu_limit: lots\n"


def write(path, text):
    """Write in place and move mtime forward so the change is seen on any filesystem."""
    path.write_text(text)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def configmap_swap(directory, text, version):
    """Update like a mounted ConfigMap: new ..data target, swapped with a rename."""
    target = directory / f"..{version}"
    target.mkdir()
    (target / "profiles.yml").write_text(text)
    link = directory / "..data_tmp"
    link.symlink_to(target.name)
    os.replace(link, directory / "..data")


def test_reload_on_change(tmp_path):
    path = tmp_path / "profiles.yml"
    write(path, V1)
    live = CatalogueFile(path)
    first = live.current()
    assert first.slugs == ["one"]
    assert live.current() is first  # unchanged file: same object, no re-read
    write(path, V2)
    assert live.current().slugs == ["one", "two"]


def test_broken_edit_keeps_last_good(tmp_path, caplog):
    path = tmp_path / "profiles.yml"
    write(path, V2)
    live = CatalogueFile(path)
    good = live.current()
    with caplog.at_level(logging.ERROR, logger="apex_hub.profiles"):
        write(path, BROKEN)
        assert live.current() is good
        assert live.current() is good
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once per change, not on every call
    assert "cpu_limit" in errors[0].getMessage()
    assert "keeping the previous version" in errors[0].getMessage()
    assert live.errors and live.errors[0].startswith("profile 'one': cpu_limit")
    write(path, V1)
    assert live.current().slugs == ["one"]
    assert live.errors == []


def test_deleted_file_keeps_last_good(tmp_path):
    path = tmp_path / "profiles.yml"
    write(path, V1)
    live = CatalogueFile(path)
    good = live.current()
    path.unlink()
    assert live.current() is good
    assert "cannot read the file" in live.errors[0]


def test_invalid_from_the_start_raises(tmp_path):
    path = tmp_path / "profiles.yml"
    write(path, BROKEN)
    live = CatalogueFile(path)
    with pytest.raises(CatalogueError) as info:
        live.current()
    assert info.value.problems[0].startswith("profile 'one': cpu_limit")
    with pytest.raises(CatalogueError):
        live.current()
    write(path, V1)
    assert live.current().slugs == ["one"]


def test_configmap_symlink_swap(tmp_path):
    configmap_swap(tmp_path, V1, 1)
    (tmp_path / "profiles.yml").symlink_to("..data/profiles.yml")
    live = CatalogueFile(tmp_path / "profiles.yml")
    assert live.current().slugs == ["one"]
    configmap_swap(tmp_path, V2, 2)  # same size or mtime would not matter: new inode
    assert live.current().slugs == ["one", "two"]
    configmap_swap(tmp_path, BROKEN, 3)
    assert live.current().slugs == ["one", "two"]


def test_custom_logger(tmp_path):
    messages = []

    class Recorder(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    log = logging.getLogger("test-profiles-reload")
    log.addHandler(Recorder())
    log.propagate = False
    path = tmp_path / "profiles.yml"
    write(path, V1)
    live = CatalogueFile(path, log=log)
    live.current()
    write(path, "profiles: [")
    live.current()
    assert any("YAML syntax" in m for m in messages)
