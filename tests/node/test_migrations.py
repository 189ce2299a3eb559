"""Migration layout rules (one version sequence, shared or per-engine files)."""

from __future__ import annotations

import pytest

from dchat_node.storage.migrations import MigrationLayoutError, load_migrations
from dchat_node.storage.sqlite import split_statements

pytestmark = pytest.mark.unit


def test_packaged_migrations_form_one_sequence_for_both_engines() -> None:
    lite = load_migrations("sqlite")
    pg = load_migrations("postgresql")
    versions = [m.version for m in lite]
    assert versions == [m.version for m in pg] == sorted(set(versions))
    assert versions[0] == 1
    assert "AUTOINCREMENT" in lite[0].sql
    assert "IDENTITY" in pg[0].sql
    assert lite[1].sql == pg[1].sql  # 0002 is shared


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0000_a.sql": ""}, "start at 0001"),
        ({"0001_a.sql": "", "0001_a.sqlite.sql": ""}, "both shared"),
        ({"0001_a.sqlite.sql": ""}, "no postgresql migration"),
        ({"1_a.sql": ""}, "expected NNNN_name.sql"),
        ({"0001_a.sql": "", "0001_b.sql": ""}, "appears twice"),
    ],
)
def test_bad_layouts_are_rejected(files: dict[str, str], message: str) -> None:
    with pytest.raises(MigrationLayoutError, match=message):
        load_migrations("sqlite", files)


def test_split_statements_respects_strings_and_comments() -> None:
    sql = (
        "-- c\nCREATE TABLE t (a TEXT DEFAULT ';');\n\n"
        "-- only a comment\nINSERT INTO t VALUES ('x;y');\n"
    )
    assert split_statements(sql) == [
        "-- c\nCREATE TABLE t (a TEXT DEFAULT ';');",
        "-- only a comment\nINSERT INTO t VALUES ('x;y');",
    ]


def test_reserved_version_ranges_may_leave_gaps() -> None:
    # domains reserve version ranges; a gap is filled later and applied then
    out = load_migrations("sqlite", {"0003_c.sql": "", "0001_a.sql": "", "0011_b.sql": ""})
    assert [m.version for m in out] == [1, 3, 11]
