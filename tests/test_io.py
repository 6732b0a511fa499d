"""Atomic writes: the file appears whole, with the permissions a plain open() would give."""

import os

import pytest

from sosp import io
from sosp.io import atomic_write_csv, atomic_write_text


def test_atomic_write_has_umask_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.json").read_text() == "{}"
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary file left


def test_atomic_write_csv_writes_the_header_and_the_rows_in_column_order(tmp_path):
    """The header is `columns` (else the first row's keys), each row follows it, and a key a
    row lacks is an empty cell; no temporary file is left."""
    rows = [{"b": 2, "a": 1}, {"a": 3}]
    atomic_write_csv(tmp_path / "t.csv", rows, ["a", "b"])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,2\n3,\n"
    atomic_write_csv(tmp_path / "u.csv", rows[:1])
    assert (tmp_path / "u.csv").read_text() == "b,a\n2,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "u.csv"]


def test_a_stop_while_claiming_is_raised_once_the_claim_is_recorded(tmp_path, monkeypatch):
    """SIGTERM arriving after the lock file exists but before the claim is recorded waits for
    the record: then `Stopped` is raised, the folder is named as claimed, and releasing it
    removes the lock file (a stop inside that window used to leave the file and name no
    folder)."""
    import fcntl
    import os
    import signal

    from sosp.signals import Stopped

    def stop(signum, _frame):
        raise Stopped(signum)

    real_flock = fcntl.flock

    def flock_then_stopped(fd, how):
        os.kill(os.getpid(), signal.SIGTERM)
        return real_flock(fd, how)

    previous = signal.signal(signal.SIGTERM, stop)
    monkeypatch.setattr(fcntl, "flock", flock_then_stopped)
    out = tmp_path / "out"
    try:
        with pytest.raises(Stopped):
            io.claim_folder(out)
        assert io.claimed_folders() == [out]
    finally:
        signal.signal(signal.SIGTERM, previous)
        io.release_folders()
    assert not (out / io.LOCK).exists()
