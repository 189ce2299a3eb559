"""The storage contract, run against both engines: SQLite (temp file) and PostgreSQL (the
harness's real server, a fresh database per test): the engine (migrations, verify, pool,
JSON pages) and the chat domain's store on it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dchat_node.chat.models import Channel, Message
from dchat_node.chat.store import ChatStore, SqlChatStore
from dchat_node.config import DatabaseConfig
from dchat_node.storage import (
    Conflict,
    ReferenceMissing,
    Storage,
    StorageUnavailable,
    create_storage,
)
from dchat_node.storage.base import JsonPage, SqlStorage, rfc3339_utc
from dchat_node.storage.migrations import load_migrations
from tests.node.conftest import EDGE_US

ENGINES = [
    pytest.param("sqlite", marks=pytest.mark.unit),
    pytest.param("postgresql", marks=pytest.mark.integration),
]


@pytest.fixture(params=ENGINES)
def db_config(request: pytest.FixtureRequest, tmp_path: Path) -> DatabaseConfig:
    if request.param == "sqlite":
        return DatabaseConfig(url=f"sqlite:///{tmp_path}/sub/dir/dchat.db")
    url = request.getfixturevalue("postgres_url")
    return DatabaseConfig(url=url, max_connections=5, statement_cache_size=10)


@pytest.fixture
async def fresh(db_config: DatabaseConfig) -> AsyncIterator[Storage]:
    st = create_storage(db_config)
    await st.open()
    try:
        yield st
    finally:
        await st.close()


@pytest.fixture
async def db(fresh: Storage) -> Storage:
    await fresh.migrate()
    return fresh


@pytest.fixture
def chat(db: Storage) -> ChatStore:
    """The chat domain's store on the engine under test."""
    return SqlChatStore(db)


async def test_migrate_applies_all_once(fresh: Storage) -> None:
    expected = load_migrations(fresh.engine)
    assert await fresh.schema_version() == 0
    assert [m.version for m in await fresh.pending_migrations()] == [m.version for m in expected]
    applied = await fresh.migrate()
    assert [m.version for m in applied] == [m.version for m in expected]
    assert await fresh.schema_version() == expected[-1].version
    assert await fresh.pending_migrations() == []
    assert await fresh.migrate() == []  # idempotent


async def test_concurrent_migrations_apply_each_version_once(
    db_config: DatabaseConfig, fresh: Storage
) -> None:
    others = [create_storage(db_config) for _ in range(2)]
    for o in others:
        await o.open()
    try:
        results = await asyncio.gather(fresh.migrate(), *(o.migrate() for o in others))
    finally:
        for o in others:
            await o.close()
    applied = sorted(m.version for r in results for m in r)
    assert applied == [m.version for m in load_migrations(fresh.engine)]
    assert await fresh.verify() == []


async def test_verify_clean_then_detects_edited_migration(db: Storage) -> None:
    assert await db.verify() == []
    # simulate a migration file edited after it was applied
    from dchat_node.storage.base import SqlStorage

    assert isinstance(db, SqlStorage)
    await db._execute("UPDATE schema_migrations SET checksum = ? WHERE version = ?", "x", 1)
    await db._execute(
        "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
        99,
        "from_the_future",
        "y",
        0,
    )
    problems = await db.verify()
    assert any("changed after it was applied" in p for p in problems)
    assert any("newer than the code" in p for p in problems)


async def test_verify_reports_pending(fresh: Storage) -> None:
    problems = await fresh.verify()
    assert any("not applied" in p for p in problems)


async def test_channels(db: Storage, chat: ChatStore) -> None:
    await chat.ensure_user("alice")
    await chat.ensure_user("alice")  # idempotent
    ch = await chat.create_channel("general", "talk", "alice")
    assert ch.id > 0
    assert ch.name == "general"
    assert ch.topic == "talk"
    assert ch.created_by == "alice"
    assert await chat.get_channel(ch.id) == ch
    assert await chat.get_channel(ch.id + 1000) is None
    with pytest.raises(Conflict):
        await chat.create_channel("general", "", "alice")
    with pytest.raises(ReferenceMissing):
        await chat.create_channel("orphan", "", "nobody")
    second = await chat.create_channel("random", "", "alice")
    assert [c.id for c in await chat.list_channels(0, 10)] == [ch.id, second.id]
    assert [c.id for c in await chat.list_channels(ch.id, 10)] == [second.id]


async def test_messages_order_and_pagination(db: Storage, chat: ChatStore) -> None:
    await chat.ensure_user("bob")
    ch = await chat.create_channel("c1", "", "bob")
    other = await chat.create_channel("c2", "", "bob")
    posted = [await chat.create_message(ch.id, "bob", f"m{i}") for i in range(7)]
    await chat.create_message(other.id, "bob", "elsewhere")
    assert [m.body for m in posted] == [f"m{i}" for i in range(7)]
    assert posted[0].created_at_us <= posted[-1].created_at_us
    page1 = await chat.list_messages(ch.id, 0, 3)
    page2 = await chat.list_messages(ch.id, page1[-1].id, 3)
    page3 = await chat.list_messages(ch.id, page2[-1].id, 3)
    assert [m.body for m in page1 + page2 + page3] == [f"m{i}" for i in range(7)]
    assert await chat.get_message(ch.id, posted[2].id) == posted[2]
    assert await chat.get_message(other.id, posted[2].id) is None
    with pytest.raises(ReferenceMissing):
        await chat.create_message(999_999, "bob", "nowhere")


async def test_unicode_and_large_ids(db: Storage, chat: ChatStore) -> None:
    await chat.ensure_user("ünï")
    ch = await chat.create_channel("emoji", "🎉 topic", "ünï")
    m = await chat.create_message(ch.id, "ünï", "héllo 👋 ünïcødé")
    assert (await chat.get_message(ch.id, m.id)) == m
    assert await chat.get_channel(2**63 - 1) is None


async def test_pool_stats_and_ping(db: Storage) -> None:
    await db.ping()
    stats = db.pool_stats()
    assert stats.size >= 1
    assert stats.max_size >= 1
    assert 0 <= stats.active <= stats.size


async def test_closed_storage_is_unavailable(db_config: DatabaseConfig) -> None:
    st = create_storage(db_config)
    with pytest.raises(StorageUnavailable):
        await st.ping()
    assert st.pool_stats().active == 0


# -- JSON documents (list reads of the API) ------------------------------------------------

AWKWARD = [
    "plain",
    'quotes " and \\ backslash',
    "unicode \u00e9\u2603 emoji \U0001f680 </script>",
    "controls \n\t\r\b\f \x01 \x1f del \x7f",
    "x" * 4000,
]
# the node's clock writes times >= 0 (1970 on); the SQL fallback formatting covers those
STORED_EDGE_US = [us for us in EDGE_US if us >= 0]


async def _set_created_at(db: Storage, table: str, row_id: int, us: int, *, text: bool) -> None:
    """Give a row ``us`` as its time, with the stored RFC 3339 text (what the node writes)
    or without it (a row from before migration 0003: the database formats it on read)."""
    assert isinstance(db, SqlStorage)
    await db._execute(
        f"UPDATE {table} SET created_at = ?, created_at_text = ? WHERE id = ?",  # noqa: S608
        us,
        rfc3339_utc(us) if text else None,
        row_id,
    )


async def test_message_docs_are_the_models_json(db: Storage, chat: ChatStore) -> None:
    """The page the database writes is, byte for byte, what pydantic writes for the API's
    ``Message`` of each record, joined with commas: awkward strings, edge timestamps."""
    await chat.ensure_user("u\u00e9")
    ch = await chat.create_channel("docs", "", "u\u00e9")
    ids = []
    for i, us in enumerate(STORED_EDGE_US):
        for text in (True, False):
            msg = await chat.create_message(ch.id, "u\u00e9", AWKWARD[i % len(AWKWARD)])
            await _set_created_at(db, "messages", msg.id, us, text=text)
            ids.append(msg.id)
    page = await chat.message_page_json(ch.id, 0, 100)
    expected = []
    for msg_id in ids:
        rec = await chat.get_message(ch.id, msg_id)
        assert rec is not None
        expected.append(Message.of(rec).model_dump_json())
    assert page.items_json == ",".join(expected)
    assert (page.count, page.last_id, page.more) == (len(ids), ids[-1], False)
    items = json.loads(f"[{page.items_json}]")
    assert [m["id"] for m in items] == ids
    assert all(m["created_at"].endswith("Z") for m in items)


async def test_channel_docs_are_the_models_json(db: Storage, chat: ChatStore) -> None:
    await chat.ensure_user("alice")
    expected = []
    for i, us in enumerate(STORED_EDGE_US):
        for text in (True, False):
            ch = await chat.create_channel(f"c{i}-{text}", AWKWARD[i % len(AWKWARD)][:256], "alice")
            await _set_created_at(db, "channels", ch.id, us, text=text)
            rec = await chat.get_channel(ch.id)
            assert rec is not None
            expected.append(Channel.of(rec).model_dump_json())
    page = await chat.channel_page_json(0, 100)
    assert page.count == 2 * len(STORED_EDGE_US)
    assert page.items_json == ",".join(expected)


async def test_rows_are_written_with_their_rfc3339_text(db: Storage, chat: ChatStore) -> None:
    assert isinstance(db, SqlStorage)
    await chat.ensure_user("u")
    ch = await chat.create_channel("stamped", "", "u")
    msg = await chat.create_message(ch.id, "u", "hello")
    for table, row_id in (("channels", ch.id), ("messages", msg.id)):
        row = await db._fetchrow(
            f"SELECT created_at, created_at_text FROM {table} WHERE id = ?",  # noqa: S608
            row_id,
        )
        assert row is not None
        assert row[1] == rfc3339_utc(row[0])


async def test_doc_pages_follow_the_record_pages(db: Storage, chat: ChatStore) -> None:
    """Pages of documents select, order and continue exactly like the record reads: for
    every cursor position, and walking a whole channel whose ids interleave with another
    channel's, page by page."""
    await chat.ensure_user("u")
    ch = await chat.create_channel("pages", "", "u")
    other = await chat.create_channel("other", "", "u")
    for i in range(7):
        await chat.create_message(ch.id, "u", f"m{i}")
        await chat.create_message(other.id, "u", f"o{i}")
    every = [r.id for r in await chat.list_messages(ch.id, 0, 100)]
    for after in (0, *every, 10_000):
        recs = [r.id for r in await chat.list_messages(ch.id, after, 3)]
        page = await chat.message_page_json(ch.id, after, 3)
        assert [m["id"] for m in json.loads(f"[{page.items_json}]")] == recs
        assert page.count == len(recs)
        assert page.last_id == (recs[-1] if recs else None)
        more_follow = bool(recs) and recs[-1] != every[-1]
        assert page.more == more_follow
    walked: list[int] = []
    after = 0
    while True:
        page = await chat.message_page_json(ch.id, after, 2)
        walked += [m["id"] for m in json.loads(f"[{page.items_json}]")]
        if not page.more:
            break
        assert page.last_id is not None
        after = page.last_id
    assert walked == every
    assert await chat.message_page_json(999_999, 0, 10) == JsonPage("", 0, None, False)
    chans = [c.id for c in await chat.list_channels(0, 1)]
    first = await chat.channel_page_json(0, 1)
    assert [c["id"] for c in json.loads(f"[{first.items_json}]")] == chans
    assert first.more
    assert not (await chat.channel_page_json(0, 100)).more
