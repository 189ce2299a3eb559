"""Response bodies built outside pydantic are what the documented models would write:
``page_json`` (a page from the database's JSON documents), the stored RFC 3339 text of
timestamps (``rfc3339_utc``) and the record -> model timestamp conversion. That the
documents themselves are the models' JSON is checked on both engines in
``test_storage_contract``."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dchat_node.chat.models import (
    Channel,
    ChannelPage,
    Message,
    MessagePage,
    encode_cursor,
    page_json,
)
from dchat_node.chat.store import ChannelRecord, MessageRecord
from dchat_node.storage.base import JsonPage, rfc3339_utc
from tests.node.conftest import EDGE_US

pytestmark = pytest.mark.unit


def _stamp(us: int) -> str:
    return Message.of(MessageRecord(1, 2, "a", "b", us)).model_dump_json()


def test_record_timestamps_are_exact() -> None:
    rng = random.Random(7)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for _ in range(5_000):
        us = rng.randrange(-62_135_596_800_000_000, 253_402_300_799_999_999)
        got = Message.of(MessageRecord(1, 2, "a", "b", us)).created_at
        assert got == epoch + timedelta(microseconds=us)
    # far from the epoch, where a float of seconds would be microseconds off
    assert '"7004-10-08T04:01:55.256145Z"' in _stamp(158_881_924_915_256_145)
    assert '"0001-01-01T00:00:00Z"' in _stamp(-62_135_596_800_000_000)


@pytest.mark.parametrize("us", EDGE_US)
def test_stored_timestamp_text_is_what_pydantic_writes(us: int) -> None:
    assert f'"created_at":"{rfc3339_utc(us)}"' in _stamp(us)


def test_stored_timestamp_text_for_random_times() -> None:
    rng = random.Random(11)
    for _ in range(20_000):
        us = rng.randrange(-62_135_596_800_000_000, 253_402_300_799_999_999)
        assert f'"created_at":"{rfc3339_utc(us)}"' in _stamp(us)


MESSAGES = [
    MessageRecord(i, 3, f"user-{i}", f'body "{i}" \u00e9\u2603 </script>\n\t\x01', i * 7)
    for i in range(1, 21)
]
CHANNELS = [
    ChannelRecord(i, f"chan-{i}", 't\u00f6pic "q"', "alice", 1_764_193_899_123_000 + i)
    for i in range(1, 6)
]


@pytest.mark.parametrize(
    ("item", "page", "recs"),
    [(Message, MessagePage, MESSAGES), (Channel, ChannelPage, CHANNELS)],
    ids=["messages", "channels"],
)
def test_page_bytes_equal_the_model(item: Any, page: Any, recs: list[Any]) -> None:
    docs = ",".join(item.of(r).model_dump_json() for r in recs)
    for more in (True, False):
        cursor = encode_cursor(recs[-1].id) if more else None
        model = page.model_validate(
            {"items": [item.fields_of(r) for r in recs], "next_cursor": cursor}
        )
        body = page_json(JsonPage(docs, len(recs), recs[-1].id, more))
        assert body == model.__pydantic_serializer__.to_json(model)
    empty = page_json(JsonPage("", 0, None, False))
    assert empty == b'{"items":[],"next_cursor":null}'
