"""PII masking at post-processing.

Masks e-mail addresses and payment card numbers in the backend's answer before it reaches the client:

* ``alice.smith@example.com``  -> ``a**********@example.com`` (first character of the local part kept,
  unless it is the only one)
* ``4111 1111 1111 1111``      -> ``**** **** **** 1111`` (last four digits kept, separators kept); a card
  number is 13-19 digits, optionally grouped by single spaces or dashes, that passes the Luhn check — so
  order numbers, timestamps and phone numbers are left alone.  A JSON *number* that is a card number becomes
  the masked string.

JSON bodies (``application/json``, ``application/*+json``) are parsed and every string (and number) is masked,
object keys included; the masked document is returned as ``modify.json``.  ``text/*`` bodies are masked as
text and returned as ``modify.payload``.  Anything else — binary bodies (sent base64-encoded), JSON that does
not parse, other media types — passes unchanged, as does a body with nothing to mask (output ``{}``).
``completeWithCode`` is never set: the backend's status stands.
"""

import json
import re

EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~-])([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*)"
                   r"(@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)")
# 13-19 digits, single spaces or dashes allowed between digits, not glued to other digits.
CARD = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")


def luhn_valid(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _mask_card(match):
    text = match.group(0)
    digits = [c for c in text if c.isdigit()]
    if not luhn_valid(digits):
        return text
    keep_from = len(digits) - 4
    out, seen = [], 0
    for c in text:
        if c.isdigit():
            out.append(c if seen >= keep_from else "*")
            seen += 1
        else:
            out.append(c)
    return "".join(out)


def _mask_email(match):
    first, rest, domain = match.groups()
    if not rest:  # a one-character local part is masked entirely
        return "*" + domain
    return first + "*" * len(rest) + domain


def mask_text(text):
    return CARD.sub(_mask_card, EMAIL.sub(_mask_email, text))


def mask_json(value):
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        text = str(value)
        masked = mask_text(text)
        return value if masked == text else masked
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    if isinstance(value, dict):
        return {mask_text(k): mask_json(v) for k, v in value.items()}
    return value


def _media_type(headers):
    return (headers.get("content-type") or "").split(";", 1)[0].strip().lower()


def handler(event, context):
    response = event.get("response") or {}
    payload = response.get("payload")
    if not payload or response.get("payloadBase64Encoded"):
        return {}  # no body, or a binary one: nothing we can read, nothing to mask
    media = _media_type(response.get("headers") or {})
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        try:
            document = json.loads(payload)
        except ValueError:
            return {}
        masked = mask_json(document)
        return {} if masked == document else {"modify": {"json": masked}}
    if media.startswith("text/"):
        masked = mask_text(payload)
        return {} if masked == payload else {"modify": {"payload": masked}}
    return {}
