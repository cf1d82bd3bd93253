"""The ``key: value`` dialect parser (contract §2.1): lines, comments, colons, duplicates, key identity."""

from __future__ import annotations

import pytest

from sidecar_gateway.config.dialect import (
    DUPLICATE_KEY,
    MALFORMED_LINE,
    Entry,
    canonical_key,
    parse,
    split_element,
)
from sidecar_gateway.config.problems import Level, Problem


def keys_and_values(text: str) -> list[tuple[str, str]]:
    entries, problems = parse(text)
    assert problems == []
    return [(entry.key, entry.value) for entry in entries]


def test_blank_and_comment_lines_are_ignored() -> None:
    """§2.1 rule 2: blank lines and lines starting with '#' (after whitespace) carry nothing."""
    text = "\n   \n# a comment\n   # indented comment\nregion: eu-west-1\n\t\n"
    assert keys_and_values(text) == [("region", "eu-west-1")]


def test_hash_inside_a_value_is_kept() -> None:
    """§2.1 rule 2: a '#' that does not start the line is part of the value."""
    assert keys_and_values("sidecar-param-colour: #ff0000 # not a comment") == [
        ("sidecar-param-colour", "#ff0000 # not a comment")
    ]


def test_key_ends_at_first_colon_so_values_keep_their_colons() -> None:
    """§2.1 rule 3: ARNs and URLs keep their colons."""
    text = "functionARN: arn:aws:lambda:eu-west-1:123456789012:function:fn:prod\nurl: https://h:8443/x"
    assert keys_and_values(text) == [
        ("functionARN", "arn:aws:lambda:eu-west-1:123456789012:function:fn:prod"),
        ("url", "https://h:8443/x"),
    ]


def test_key_and_value_are_trimmed() -> None:
    """§2.1 rule 3: surrounding whitespace is not part of key or value."""
    assert keys_and_values("   failSafe \t:   true   ") == [("failSafe", "true")]


def test_crlf_line_ends_are_accepted() -> None:
    """§2.1 rule 1: CRLF ends a line like LF; the CR never reaches the value."""
    entries, problems = parse("region: eu-west-1\r\n# c\r\ntimeout: 800\r\n")
    assert problems == []
    assert entries == [Entry(1, "region", "eu-west-1"), Entry(3, "timeout", "800")]


def test_leading_byte_order_mark_is_not_part_of_the_first_key() -> None:
    """A UTF-8 BOM written by an editor does not turn `region` into an unknown key."""
    assert keys_and_values("\ufeffregion: eu-west-1") == [("region", "eu-west-1")]


def test_empty_value_is_kept_as_empty_string() -> None:
    """The parser keeps `key:` with an empty value; whether empty means absent is the processor's rule (§2.1 r8)."""
    assert keys_and_values("sidecar-param-x:\ntimeout:") == [("sidecar-param-x", ""), ("timeout", "")]


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("region eu-west-1", 1),
        ("region: eu-west-1\n\n# c\njust words", 4),
        (": value without key", 1),
        ("a: 1\r\nno colon here\r\n", 2),
    ],
)
def test_line_without_key_and_colon_is_malformed(text: str, line: int) -> None:
    """§2.1 rule 3, §2.2: reported as `line <n>: Malformed line, expected key: value`, 1-based."""
    _, problems = parse(text, where="svc/ep", point="pre")
    assert problems == [Problem(Level.ERROR, f"line {line}", MALFORMED_LINE, where="svc/ep", point="pre")]


def test_malformed_line_renders_as_in_the_contract() -> None:
    """§2.2 example line for a malformed line."""
    text = "\n".join(["# header", "region: eu-west-1", "", "", "", "", "oops"])
    _, problems = parse(text, where="orders-svc/list-orders", point="pre")
    assert [p.render() for p in problems] == [
        "ERROR   orders-svc/list-orders  pre   line 7: Malformed line, expected key: value"
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("failSafe", "failsafe"),
        ("externalIdKey", "externalIDKey"),
        ("Synchronicity", "synchronicity"),
        ("header.X-Api-Key", "HEADER.x-api-key"),
        ("sidecar-param-tier", "SIDECAR-PARAM-tier"),
        ("when-requestHeader(Content-Type)", "WHEN-requestheader(content-type)"),
        ("when-httpVerb", "when-HTTPVERB"),
        ("unless-eav(tier)", "UNLESS-EAV(tier)"),
        ("unless-packageKeyEAV(tier)", "unless-packagekeyeav( tier )"),
    ],
)
def test_same_key_twice_is_a_duplicate(first: str, second: str) -> None:
    """§2.1 rules 4–5: keys, prefixes, header names and element names compare case-insensitively."""
    entries, problems = parse(f"{first}: 1\n{second}: 2", where="s/e", point="post")
    assert entries == [Entry(1, first, "1")]
    assert problems == [Problem(Level.ERROR, second, DUPLICATE_KEY, where="s/e", point="post")]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("sidecar-param-tier", "sidecar-param-Tier"),
        ("when-eav(tier)", "when-eav(Tier)"),
        ("when-packageKeyEAV(tier)", "when-packageKeyEAV(TIER)"),
        ("when-httpVerb", "unless-httpVerb"),
        ("when-requestHeader(a)", "when-requestHeader(b)"),
    ],
)
def test_parameter_and_eav_names_are_distinct_by_case(first: str, second: str) -> None:
    """§2.1 rule 5: parameter and EAV names compare exactly; when- and unless- are different keys."""
    entries, problems = parse(f"{first}: 1\n{second}: 2")
    assert problems == []
    assert [e.key for e in entries] == [first, second]


def test_every_duplicate_is_reported() -> None:
    """§2.2: all problems, not only the first; the first occurrence is kept."""
    entries, problems = parse("timeout: 1\nTimeout: 2\nTIMEOUT: 3\nregion: a\nRegion: b")
    assert [e.value for e in entries] == ["1", "a"]
    assert [(p.key, p.message) for p in problems] == [
        ("Timeout", DUPLICATE_KEY),
        ("TIMEOUT", DUPLICATE_KEY),
        ("Region", DUPLICATE_KEY),
    ]


@pytest.mark.parametrize(
    ("key", "canonical"),
    [
        ("failSafe", "failsafe"),
        ("sidecar-param-MaxItems", "sidecar-param-MaxItems"),
        ("Sidecar-Param-MaxItems", "sidecar-param-MaxItems"),
        ("Header.X-Api-Key", "header.x-api-key"),
        ("When-RequestHeader(X-Trace)", "when-requestheader(x-trace)"),
        ("Unless-EAV(Partner_Tier)", "unless-eav(Partner_Tier)"),
        ("unless-PackageKeyEav(Partner_Tier)", "unless-packagekeyeav(Partner_Tier)"),
        ("when-resourcePath", "when-resourcepath"),
        ("when-broken(", "when-broken("),
    ],
)
def test_canonical_key(key: str, canonical: str) -> None:
    """§2.1 rules 4–5: the fixed part is lower-cased; the variable part only where it compares caselessly."""
    assert canonical_key(key) == canonical


@pytest.mark.parametrize(
    ("spec", "parts"),
    [
        ("httpVerb", ("httpVerb", None)),
        ("requestHeader(Content-Type)", ("requestHeader", "Content-Type")),
        ("eav( tier )", ("eav", "tier")),
        ("eav()", ("eav", "")),
        ("eav(a)(b)", None),
        ("eav(a", None),
        ("eav(a)x", None),
    ],
)
def test_split_element(spec: str, parts: tuple[str, str | None] | None) -> None:
    """§9.2: `element` or `element(argument)`; anything else has no shape."""
    assert split_element(spec) == parts
