"""Atomic writes: the file appears whole, with the permissions a plain open() would give."""

import os

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
