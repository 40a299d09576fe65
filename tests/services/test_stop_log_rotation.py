"""The culler's stop log is bounded (rotated) and the accounting service's reader follows it:
every stop record is read once, in order, across rotations, truncation and restarts."""

from __future__ import annotations

import json

from apex_hub.services.accounting.ingest import StopReasonsFile
from apex_hub.services.culler.service import StopLog


def stop(n: int, **extra) -> dict:
    return {
        "time": f"2026-12-02T10:{n // 60:02d}:{n % 60:02d}+00:00",
        "user": f"u{n}",
        "server": "",
        "reason": "idle",
        "dry_run": False,
        "started": f"2026-12-02T09:00:{n % 60:02d}+00:00",
        **extra,
    }


def test_the_log_rotates_past_max_bytes_and_remembers_both_files(tmp_path):
    log = StopLog(tmp_path, max_bytes=1000)
    for n in range(30):
        log.append(stop(n))
    current = [json.loads(line) for line in log.path.read_text().splitlines()]
    rotated = [json.loads(line) for line in log.rotated.read_text().splitlines()]
    assert log.path.stat().st_size <= 1000 and log.rotated.stat().st_size <= 1000
    assert [r["user"] for r in rotated + current] == [f"u{n}" for n in range(30)][-len(rotated + current) :]
    # a record of either file is not written again, before or after a restart
    for again in (log, StopLog(tmp_path, max_bytes=1000)):
        before = log.path.read_bytes()
        again.append(stop(30 - len(current) - 1))  # in the rotated file
        again.append(stop(29))  # in the current one
        assert log.path.read_bytes() == before
        assert again.seen(f"u{29}", "", stop(29)["started"], False)


def test_the_reader_follows_rotation_and_truncation(tmp_path, caplog):
    caplog.set_level("INFO")
    log = StopLog(tmp_path, max_bytes=1500)
    reader = StopReasonsFile(log.path)
    seen = []
    for n in range(200):
        log.append(stop(n))
        if n % 7 == 0:  # reads now and then: several rotations happen between some of them
            seen += [r.user for r in reader.read_new()]
    seen += [r.user for r in reader.read_new()]
    assert caplog.text.count("stop log rotated") >= 20
    # at most one rotation between two reads is followed completely (documented); here every one is
    assert seen == [f"u{n}" for n in range(200)]
    assert reader.read_new() == []

    # an operator empties the file: read again from its start
    log.path.write_text(json.dumps({"event": "stop", **stop(500)}) + "\n")
    assert [r.user for r in reader.read_new()] == ["u500"]


def test_a_line_being_written_waits_and_dry_runs_are_skipped(tmp_path):
    path = tmp_path / "stop-reasons.jsonl"
    reader = StopReasonsFile(path)
    assert reader.read_new() == []  # no file yet
    with open(path, "w") as f:
        f.write(json.dumps(stop(1, dry_run=True)) + "\n" + json.dumps(stop(2)) + "\n" + '{"user": "u3", ')
    assert [r.user for r in reader.read_new()] == ["u2"]
    with open(path, "a") as f:
        f.write('"server": "", "time": "2026-12-02T10:00:03+00:00", "reason": "idle"}\n')
    assert [r.user for r in reader.read_new()] == ["u3"]


def test_the_remembered_keys_are_bounded_to_the_latest_records(tmp_path):
    log = StopLog(tmp_path, max_keys=50)
    for n in range(120):
        log.append(stop(n))
    assert len(log) == 50  # a month of stops does not grow the culler's memory
    assert log.seen("u119", "", stop(119)["started"], False)
    assert log.seen("u70", "", stop(70)["started"], False)
    assert not log.seen("u69", "", stop(69)["started"], False)  # forgotten: 50 records ago
    assert len(log.path.read_text().splitlines()) == 120  # the file keeps every record
    log.append(stop(119))  # a repeat of a recent stop is still not written again
    assert len(log.path.read_text().splitlines()) == 120
    again = StopLog(tmp_path, max_keys=50)  # after a restart: the newest 50, read back from the files
    assert len(again) == 50 and again.seen("u70", "", stop(70)["started"], False)
    assert not again.seen("u69", "", stop(69)["started"], False)
