"""JWT authentication at pre-processing (RS256).

The application's public key (PEM) arrives as the application EAV ``jwt_public_key``; the token arrives as the
``authorization`` request header, from which the gateway has already removed the ``Bearer`` scheme (contract
§3.2).  A valid token lets the call through with ``X-Authenticated-User: <sub>`` added to the backend request and
the client's ``Authorization`` header dropped (the backend trusts the gateway, never sees the raw token).  Any
problem with the token ends the call with 401 and an RFC 6750 ``WWW-Authenticate`` challenge.

Optional processor parameters: ``sidecar-param-audience`` and ``sidecar-param-issuer`` (checked when given),
``sidecar-param-leeway`` (seconds of clock skew accepted, default 0).

Dependencies: PyJWT with the ``crypto`` extra (``pip install 'PyJWT[crypto]' -t package/``).
"""

import jwt

ALGORITHMS = ["RS256"]


def _unauthorized(message, error="invalid_token"):
    description = "".join(c for c in message if c.isascii() and c.isprintable() and c not in '"\\')
    challenge = f'Bearer error="{error}", error_description="{description}"'
    return {"terminate": {"code": 401, "message": message, "addHeaders": {"WWW-Authenticate": challenge}}}


def handler(event, context):
    pem = (event.get("eavs") or {}).get("jwt_public_key")
    if not pem:
        return {"terminate": {"code": 403, "message": "Application is not configured for JWT authentication"}}
    token = ((event.get("request") or {}).get("headers") or {}).get("authorization", "").strip()
    if not token:
        return _unauthorized("Missing bearer token", error="invalid_request")
    if any(c.isspace() for c in token):
        return _unauthorized("Authorization scheme must be Bearer", error="invalid_request")

    if "\\n" in pem and "\n" not in pem:
        pem = pem.replace("\\n", "\n")  # a PEM pasted into a one-line EAV field with escaped newlines

    params = event.get("params") or {}
    try:
        claims = jwt.decode(
            token,
            pem,
            algorithms=ALGORITHMS,
            audience=params.get("audience"),
            issuer=params.get("issuer"),
            leeway=params.get("leeway", 0),
            options={"require": ["exp", "sub"]},
        )
    except jwt.InvalidKeyError:
        # The EAV does not hold a usable RSA public key: an operator error, not the caller's.
        return {"terminate": {"code": 500, "message": "The application's JWT public key is not a valid RSA key"}}
    except jwt.ExpiredSignatureError:
        return _unauthorized("Token has expired")
    except jwt.InvalidSignatureError:
        return _unauthorized("Token signature is invalid")
    except jwt.MissingRequiredClaimError as exc:
        return _unauthorized(f"Token lacks the {exc.claim} claim")
    except jwt.InvalidAudienceError:
        return _unauthorized("Token audience is not accepted")
    except jwt.InvalidIssuerError:
        return _unauthorized("Token issuer is not accepted")
    except jwt.ImmatureSignatureError:
        return _unauthorized("Token is not valid yet")
    except jwt.DecodeError:
        return _unauthorized("Token is malformed")
    except jwt.InvalidTokenError as exc:
        return _unauthorized(f"Token is invalid: {exc}")

    subject = str(claims["sub"])
    if not subject or not subject.isascii() or not subject.isprintable():
        return _unauthorized("Token subject is not usable")
    return {
        "modify": {
            "addHeaders": {"X-Authenticated-User": subject},
            "dropHeaders": ["Authorization"],
        }
    }
