"""``new_message_id``: the X-Mashery-Message-ID value is a random RFC 9562 version-4 UUID string."""

from __future__ import annotations

import re
import uuid
from collections import Counter

from sidecar_gateway.gateway.app import new_message_id

UUID4_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
SAMPLES = 20_000


def test_every_id_is_a_canonical_version_4_uuid_string() -> None:
    for _ in range(SAMPLES):
        text = new_message_id()
        assert UUID4_TEXT.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == text  # lower case, canonical grouping


def test_ids_are_distinct_and_every_random_digit_varies() -> None:
    ids = [new_message_id().replace("-", "") for _ in range(SAMPLES)]
    assert len(set(ids)) == SAMPLES
    for position in range(32):
        seen = Counter(text[position] for text in ids)
        if position == 12:
            assert set(seen) == {"4"}  # the version
        elif position == 16:
            assert set(seen) == set("89ab")  # the variant keeps two random bits
            assert min(seen.values()) > SAMPLES / 4 * 0.8
        else:
            assert set(seen) == set("0123456789abcdef"), position  # no stuck bits
            assert min(seen.values()) > SAMPLES / 16 * 0.7, position
