"""Sans-IO parser of the Mashery ``key: value`` processor configuration language (contract §2.1).

Rules of this file:

* Syntax only.  This module knows how a line is cut into key and value, what a comment is, and when two keys
  are "the same key" (§2.1 rule 5).  It does not know which keys exist or what their values mean: that is
  ``config/processor.py``.
* No I/O: the caller passes the text and gets back a list of entries and a list of problems (style rule 2).
  Nothing here reads a file, the environment or the clock.
* Every problem is reported; parsing never stops at the first one (§2.2).

Theory of operation:

``parse`` splits the text on LF (a CR before the LF is dropped, §2.1 rule 1), skips blank and comment lines
(rule 2), and cuts every other line at its *first* colon (rule 3).  A line without a colon, or with nothing
before the colon, is reported as ``line <n>: Malformed line, expected key: value``.  Each key is reduced to a
*canonical* form (``canonical_key``) in which the fixed part is lower-cased and the variable part is
lower-cased only where rule 5 says it compares case-insensitively (header names and scope element names; not
parameter or EAV names).  The second and later occurrences of a canonical key are reported as
``Duplicate key`` and left out of the entries, so the entries hold each key once, in text order.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from .problems import Level, Problem

__all__ = [
    "DUPLICATE_KEY",
    "EXACT_ARGUMENT_ELEMENTS",
    "HEADER_PREFIX",
    "MALFORMED_LINE",
    "PARAM_PREFIX",
    "UNLESS_PREFIX",
    "WHEN_PREFIX",
    "Entry",
    "canonical_key",
    "parse",
    "split_element",
]

# §2.1 rule 2: a line whose first non-whitespace character is '#' is a comment; a '#' elsewhere is value text.
COMMENT_MARK = "#"
# §2.1 rule 3: the key ends at the *first* colon, so values may contain colons (ARNs, URLs).
KEY_VALUE_SEPARATOR = ":"
# §2.1 rule 1: lines end with LF or CRLF.  We split on LF only (not str.splitlines, which would also split
# on VT, FF, NEL, U+2028 …) and drop one CR before the LF.
LINE_END = "\n"
CARRIAGE_RETURN = "\r"
# A UTF-8 byte-order mark, as Windows editors write it, decoded: not part of the first key.
BYTE_ORDER_MARK = "\ufeff"

# §2.2 messages owned by the syntax layer (verbatim).
MALFORMED_LINE = "Malformed line, expected key: value"
DUPLICATE_KEY = "Duplicate key"

# §2.1 rule 4: keys with a variable part.  The prefix is matched case-insensitively.
PARAM_PREFIX = "sidecar-param-"  # §2.4; the name compares exactly (rule 5)
HEADER_PREFIX = "header."  # §2.5; the header name compares case-insensitively (rule 5)
WHEN_PREFIX = "when-"  # §9.2 scope filters; element names compare case-insensitively
UNLESS_PREFIX = "unless-"
# §9.2: the arguments of these elements are EAV names, which compare exactly (§1, §2.1 rule 5); every other
# element argument is a header name and compares case-insensitively.  Lower-cased element names.
EXACT_ARGUMENT_ELEMENTS = frozenset({"eav", "packagekeyeav"})

# ``element`` or ``element(argument)`` of a ``when-``/``unless-`` key (§9.2).
_ELEMENT_RE = re.compile(r"(?P<element>[^()]*?)\s*(?:\((?P<argument>[^()]*)\))?")


class Entry(NamedTuple):
    """One ``key: value`` line: 1-based line number, key as written (trimmed), value (trimmed)."""

    line_no: int
    key: str
    value: str


def split_element(spec: str) -> tuple[str, str | None] | None:
    """Split the part of a scope key after ``when-``/``unless-`` into (element as written, argument or None).

    ``requestHeader(Content-Type)`` → ``("requestHeader", "Content-Type")``; ``httpVerb`` → ``("httpVerb", None)``.
    The argument is trimmed.  Returns None when the text is not of that shape (unbalanced or nested parentheses,
    text after the closing parenthesis).  Whether the element exists is the caller's question (§9.2).
    """
    match = _ELEMENT_RE.fullmatch(spec)
    if match is None:
        return None
    argument = match.group("argument")
    return match.group("element"), (argument.strip() if argument is not None else None)


def canonical_key(key: str) -> str:
    """The form in which two keys are "the same key" (§2.1 rules 4 and 5).

    Fixed keys and fixed prefixes are lower-cased.  The variable part keeps its spelling for
    ``sidecar-param-<name>`` and for EAV arguments of scope elements, and is lower-cased for ``header.<name>``,
    scope element names and ``requestHeader(<name>)``.
    """
    lowered = key.lower()
    if lowered.startswith(PARAM_PREFIX):
        return PARAM_PREFIX + key[len(PARAM_PREFIX):]
    for prefix in (WHEN_PREFIX, UNLESS_PREFIX):
        if lowered.startswith(prefix):
            parts = split_element(key[len(prefix):])
            if parts is None:
                return lowered
            element, argument = parts
            element = element.lower()
            if argument is None:
                return prefix + element
            if element not in EXACT_ARGUMENT_ELEMENTS:
                argument = argument.lower()
            return f"{prefix}{element}({argument})"
    return lowered  # fixed keys and header.<name>: case-insensitive throughout


def _lines(text: str) -> list[str]:
    """§2.1 rule 1: LF or CRLF line ends; a leading byte-order mark is not content."""
    if text.startswith(BYTE_ORDER_MARK):
        text = text[len(BYTE_ORDER_MARK):]
    lines = text.split(LINE_END)
    return [line[:-1] if line.endswith(CARRIAGE_RETURN) else line for line in lines]


def parse(text: str, *, where: str = "", point: str = "") -> tuple[list[Entry], list[Problem]]:
    """Parse one processor configuration text (§2.1).

    Returns the entries in text order, each canonical key once (the first occurrence), and the problems found:
    ``line <n>: Malformed line, expected key: value`` and ``<key as written>: Duplicate key`` (§2.2).
    ``where`` and ``point`` are copied into the problems (``serviceId/endpointId`` and ``pre``/``post``).
    """
    entries: list[Entry] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for line_no, line in enumerate(_lines(text), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith(COMMENT_MARK):
            continue  # §2.1 rule 2
        key, separator, value = stripped.partition(KEY_VALUE_SEPARATOR)
        key = key.strip()
        if not separator or not key:  # §2.1 rule 3
            problems.append(Problem(Level.ERROR, f"line {line_no}", MALFORMED_LINE, where=where, point=point))
            continue
        canonical = canonical_key(key)
        if canonical in seen:  # §2.1 rule 5
            problems.append(Problem(Level.ERROR, key, DUPLICATE_KEY, where=where, point=point))
            continue
        seen.add(canonical)
        entries.append(Entry(line_no, key, value.strip()))
    return entries, problems
