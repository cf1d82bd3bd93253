"""Regenerate the sidecar input/output JSON Schemas (run: python schemas/generate.py from the repository root).

Writes both the published copy (schemas/) and the packaged copy (src/sidecar_gateway/sdk/schemas/), which
tests/unit/test_schemas.py requires to be identical and tests against the gateway's build_input and
interpret_output.  The forbidden header names come from the SDK (contract §4.3 rule 4).
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from sidecar_gateway.sdk._validate import FORBIDDEN_HEADERS  # noqa: E402

S = "https://json-schema.org/draft/2020-12/schema"
TCHAR_CLASS = "[^!#$%&'*+.^_`|~0-9A-Za-z-]"  # a character that is NOT a tchar


def ci(word):
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else ("\\-" if c == "-" else c) for c in word)


forbidden = "^(?:" + "|".join(ci(w) for w in sorted(FORBIDDEN_HEADERS)) + ")$"
B64 = "[A-Za-z0-9+/]"
base64_pattern = f"^(?:(?:{B64}{{4}})*(?:{B64}{{2}}==|{B64}{{3}}=)?|(?:{B64}{{4}})+=+)$"

UNEXPRESSED = (
    "Rules of §4.3 that JSON Schema cannot express (sidecar-gateway invoke also runs the gateway's own "
    "interpreter): rule 1 size (> 6 MB), UTF-8 validity, JSON syntax and nesting depth (they precede any "
    "schema); rule 3 numbers with a zero fraction such as 200.0 (JSON Schema's integer includes them, the "
    "contract does not); rule 4 a header name repeated case-insensitively in one map; rule 6 the changeRoute "
    "host permission (it depends on the endpoint's backend and route_hosts) and the URL's port and host "
    "syntax beyond the shape http(s)://authority. Everything else of §4.3 is expressed, including base64 "
    "validity (strict RFC 4648 as the gateway decodes it), forbidden and non-token header names, and control "
    "characters in header values."
)


def point_output(modify_def):
    """§4.4 precedence: a terminate with a non-null code wins and modify is then not validated."""
    return {
        "$ref": "#/$defs/outputBase",
        "if": {"$ref": "#/$defs/terminateWins"},
        "then": {"properties": {"terminate": {"$ref": "#/$defs/terminate"}}},
        "else": {"properties": {"modify": {"$ref": f"#/$defs/{modify_def}"}}},
    }


output = {
    "$schema": S,
    "$id": "urn:sidecar-gateway:schema:sidecar-output",
    "title": "sidecar-gateway function output (sidecar contract §4)",
    "description": (
        "The JSON object a function returns. The root accepts an output valid at some point; validate against "
        "#/$defs/preOutput, #/$defs/postOutput or #/$defs/preflightOutput for the input's point. Members whose "
        "value is null are absent (§4.1); ignored members are not validated (§4.3). " + UNEXPRESSED
    ),
    "anyOf": [{"$ref": "#/$defs/preOutput"}, {"$ref": "#/$defs/postOutput"}, {"$ref": "#/$defs/preflightOutput"}],
    "$defs": {
        "preOutput": point_output("modifyPre"),
        "postOutput": point_output("modifyPost"),
        "preflightOutput": point_output("modifyPreflight"),
        "outputBase": {
            "description": "§4.3 rules 1-2: an object; terminate, when present, is an object",
            "type": "object",
            "properties": {
                "terminate": {"type": ["object", "null"]},
                "unchangedFor": {"description": "[ext] §9.1 hint in ms; a malformed hint is ignored, never invalid"},
                "unchangedUntil": {"description": "[ext] §9.1 hint, RFC 3339 with offset; a malformed hint is ignored"},
            },
        },
        "terminateWins": {
            "required": ["terminate"],
            "properties": {
                "terminate": {"type": "object", "required": ["code"], "properties": {"code": {"not": {"type": "null"}}}}
            },
        },
        "status": {
            "description": "§4.3 rule 3: integer 200-599",
            "type": ["integer", "null"],
            "minimum": 200,
            "maximum": 599,
        },
        "headerName": {
            "description": "§4.3 rule 4: an RFC 9110 token, not a forbidden name (any case)",
            "type": "string",
            "minLength": 1,
            "not": {"anyOf": [{"pattern": TCHAR_CLASS}, {"pattern": forbidden}]},
        },
        "headerMap": {
            "description": "§4.3 rules 3-5: object of strings; names are tokens, not forbidden; values without control characters except TAB",  # noqa: E501
            "type": ["object", "null"],
            "propertyNames": {"$ref": "#/$defs/headerName"},
            "additionalProperties": {
                "type": "string",
                "not": {"pattern": "[\\u0000-\\u0008\\u000a-\\u001f\\u007f-\\u009f]"},
            },
        },
        "dropHeaders": {"type": ["array", "null"], "items": {"$ref": "#/$defs/headerName"}},
        "base64": {
            "description": "standard base64 as the gateway decodes it (binascii strict mode)",
            "type": "string",
            "pattern": base64_pattern,
            "not": {"pattern": "[^A-Za-z0-9+/=]"},
        },
        "body": {
            "description": "§4.2 payload/base64Encoded/json; json is any JSON value and wins over payload",
            "properties": {
                "payload": {"type": ["string", "null"]},
                "base64Encoded": {"type": ["boolean", "null"]},
                "json": {},
            },
            "if": {
                "required": ["payload", "base64Encoded"],
                "properties": {"payload": {"type": "string"}, "base64Encoded": {"const": True}},
            },
            "then": {"properties": {"payload": {"$ref": "#/$defs/base64"}}},
        },
        "terminate": {
            "type": "object",
            "required": ["code"],
            "$ref": "#/$defs/body",
            "properties": {
                "code": {"$ref": "#/$defs/status"},
                "message": {"type": ["string", "null"]},
                "addHeaders": {"$ref": "#/$defs/headerMap"},
                "headers": {"$ref": "#/$defs/headerMap"},
            },
        },
        "modifyPreflight": {
            "description": "§9.3: only the header members count at pre-flight",
            "type": ["object", "null"],
            "properties": {
                "dropHeaders": {"$ref": "#/$defs/dropHeaders"},
                "addHeaders": {"$ref": "#/$defs/headerMap"},
                "headers": {"$ref": "#/$defs/headerMap"},
            },
        },
        "modifyPost": {
            "description": "§4.2 at post: changeRoute is ignored",
            "type": ["object", "null"],
            "allOf": [{"$ref": "#/$defs/modifyPreflight"}, {"$ref": "#/$defs/body"}],
            "properties": {"completeWithCode": {"$ref": "#/$defs/status"}},
        },
        "modifyPre": {
            "description": "§4.2 at pre: completeWithCode is ignored (§10 Q27)",
            "type": ["object", "null"],
            "allOf": [{"$ref": "#/$defs/modifyPreflight"}, {"$ref": "#/$defs/body"}],
            "properties": {"changeRoute": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/changeRoute"}]}},
        },
        "changeRoute": {
            "description": "[ext] §4.3 rule 6 / §4.4 step 3 (the host permission is checked by the gateway only)",
            "type": "object",
            "properties": {
                "httpVerb": {"type": ["string", "null"], "minLength": 1, "not": {"type": "string", "pattern": TCHAR_CLASS}},
                "uri": {
                    "type": ["string", "null"],
                    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@]+(?:[/?#]|$)",
                    # "type" inside "not": a null uri is absent (§4.1), and {"pattern"} alone accepts a null
                    "not": {"type": "string", "pattern": "[^\\u0021-\\u007e]"},
                },
            },
            "anyOf": [
                {"required": ["uri"], "properties": {"uri": {"type": "string"}}},
                {"required": ["httpVerb"], "properties": {"httpVerb": {"type": "string"}}},
            ],
        },
    },
}

UUID4 = "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$"
selected_headers = {
    "description": "§3.2: selected headers, names lower-case, repeated fields joined with ', '",
    "type": "object",
    "minProperties": 1,
    "propertyNames": {"type": "string", "minLength": 1, "not": {"pattern": "[A-Z]"}},
    "additionalProperties": {"type": "string"},
}


def message(extra_props, required=()):
    return {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": False,
        "required": list(required),
        "properties": {
            **extra_props,
            "headers": {"$ref": "#/$defs/headers"},
            "payload": {
                "type": "string",
                "description": "§3.3: text, or standard padded base64 when payloadBase64Encoded",
            },
            "payloadLength": {"type": "integer", "minimum": 1, "description": "byte count of the body as received"},
            "payloadBase64Encoded": {"type": "boolean"},
        },
        "dependentRequired": {
            "payload": ["payloadLength", "payloadBase64Encoded"],
            "payloadLength": ["payload"],
            "payloadBase64Encoded": ["payload"],
        },
    }


non_blank_strings = {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string", "pattern": "\\S"}}

input_schema = {
    "$schema": S,
    "$id": "urn:sidecar-gateway:schema:sidecar-input",
    "title": "sidecar-gateway function input (sidecar contract §3)",
    "description": "The JSON object the gateway sends to a function. A member is omitted (never null, never an empty object) when its condition does not hold (§3).",  # noqa: E501
    "type": "object",
    "required": ["point", "synchronicity", "masheryMessageId", "serviceId", "endpointId"],
    "additionalProperties": False,
    "properties": {
        "point": {"enum": ["PreProcessor", "PostProcessor", "Preflight"]},
        "synchronicity": {"enum": ["RequestResponse", "Event"]},
        "masheryMessageId": {"type": "string", "pattern": UUID4, "description": "§1: UUID v4, lower-case"},
        "packageKey": {"type": "string", "minLength": 1},
        "serviceId": {"type": "string"},
        "endpointId": {"type": "string"},
        "params": {"type": "object", "minProperties": 1, "description": "§2.4 sidecar-param-* values, typed"},
        "request": message({}),
        "response": message({"code": {"type": "integer", "minimum": 100, "maximum": 599}}, required=("code",)),
        "remoteAddr": {"type": "string", "minLength": 1},
        "eavs": non_blank_strings,
        "packageKeyEAVs": non_blank_strings,
        "operation": {
            "type": "object",
            "additionalProperties": False,
            "required": ["httpVerb", "path", "uri"],
            "properties": {
                "httpVerb": {"type": "string", "minLength": 1},
                "path": {"type": "string", "pattern": "^/"},
                "query": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {
                        "anyOf": [{"type": "string"}, {"type": "array", "minItems": 2, "items": {"type": "string"}}]
                    },
                },
                "uri": {"type": "string", "pattern": "^[a-z][a-z0-9+.-]*://"},
            },
        },
        "token": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "scope": {"type": "string", "minLength": 1},
                "userContext": {"type": "string", "minLength": 1},
                "grantType": {"type": "string", "minLength": 1},
                "expires": {"type": "string", "pattern": "Z$"},
            },
        },
        "routing": {
            "type": "object",
            "additionalProperties": False,
            "required": ["httpVerb", "uri"],
            "properties": {
                "httpVerb": {"type": "string", "minLength": 1},
                "uri": {"type": "string", "pattern": "^https?://"},
            },
        },
    },
    "$defs": {"headers": selected_headers},
    "allOf": [
        {
            "if": {"properties": {"point": {"const": "PostProcessor"}}},
            "then": {"required": ["response"]},
            "else": {"not": {"required": ["response"]}},
        },
        {
            "description": "§9.3: the pre-flight input carries nothing specific to the request",
            "if": {"properties": {"point": {"const": "Preflight"}}},
            "then": {
                "properties": {"synchronicity": {"const": "RequestResponse"}},
                "not": {
                    "anyOf": [{"required": [m]} for m in ("request", "remoteAddr", "operation", "token", "routing")]
                },
            },
        },
    ],
}

for name, doc in (("sidecar-input", input_schema), ("sidecar-output", output)):
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    for directory in (REPO / "schemas", REPO / "src" / "sidecar_gateway" / "sdk" / "schemas"):
        (directory / f"{name}.schema.json").write_text(text, encoding="utf-8")
print("schemas written")
