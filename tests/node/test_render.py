"""The page renderers (``message_page_json``, ``channel_page_json``) write exactly what the
documented pydantic models would: same bytes as validating the page and serialising it."""

from __future__ import annotations

import random

import pytest

from dchat_node.api.models import (
    Channel,
    ChannelPage,
    Message,
    MessagePage,
    channel_page_json,
    encode_cursor,
    iso_utc,
    message_page_json,
)
from dchat_node.storage.base import ChannelRecord, MessageRecord

pytestmark = pytest.mark.unit

EDGE_US = [
    0,
    1,
    -1,
    999_999,
    1_000_000,
    86_399_999_999,
    86_400_000_000,
    951_782_400_000_000,  # 2000-02-29
    1_764_193_899_000_000,  # whole second: no fraction
    1_764_193_899_120_000,  # trailing zeros kept
    1_764_193_899_123_456,
]


def _model_bytes(us: int) -> bytes:
    page = MessagePage.model_validate(
        {
            "items": [Message.fields_of(MessageRecord(1, 2, "a", "b", us))],
            "next_cursor": None,
        }
    )
    return page.__pydantic_serializer__.to_json(page)


@pytest.mark.parametrize("us", EDGE_US)
def test_iso_utc_matches_pydantic(us: int) -> None:
    assert message_page_json([MessageRecord(1, 2, "a", "b", us)], None) == _model_bytes(us)


def test_iso_utc_matches_pydantic_for_random_timestamps() -> None:
    rng = random.Random(7)
    # 1970..2100: the float in _ts is exact to the microsecond in this range
    for _ in range(20_000):
        us = rng.randrange(0, 4_102_444_800_000_000)
        assert message_page_json([MessageRecord(1, 2, "a", "b", us)], None) == _model_bytes(us)


def test_iso_utc_is_exact_far_from_the_epoch() -> None:
    # where the float path would be off by microseconds, the integer path is exact
    assert iso_utc(158_881_924_915_256_145) == "7004-10-08T04:01:55.256145Z"
    assert iso_utc(-62_135_596_800_000_000) == "0001-01-01T00:00:00Z"


def test_message_page_bytes_equal_the_model() -> None:
    recs = [
        MessageRecord(
            i,
            3,
            f"user-{i}",
            f'body "{i}" \u00e9\u2603 </script>\n\t\x01',
            1_764_193_899_000_000 + i * 7,
        )
        for i in range(1, 21)
    ]
    for cursor in (encode_cursor(20), None):
        model = MessagePage.model_validate(
            {"items": [Message.fields_of(r) for r in recs], "next_cursor": cursor}
        )
        assert message_page_json(recs, cursor) == model.__pydantic_serializer__.to_json(model)
    assert message_page_json([], None) == b'{"items":[],"next_cursor":null}'


def test_channel_page_bytes_equal_the_model() -> None:
    recs = [
        ChannelRecord(i, f"chan-{i}", 't\u00f6pic "q"', "alice", 1_764_193_899_123_000 + i)
        for i in range(1, 6)
    ]
    for cursor in (encode_cursor(5), None):
        model = ChannelPage.model_validate(
            {"items": [Channel.fields_of(r) for r in recs], "next_cursor": cursor}
        )
        assert channel_page_json(recs, cursor) == model.__pydantic_serializer__.to_json(model)
