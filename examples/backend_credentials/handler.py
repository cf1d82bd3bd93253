"""Dynamic backend credentials at pre-processing.

The backend wants its own bearer token, which clients must never know.  The secret lives in the function's
environment (``BACKEND_TOKEN`` — on AWS an encrypted environment variable, or fetched from Secrets Manager /
SSM Parameter Store at cold start and kept for the life of the execution environment).  The function replaces
whatever ``Authorization`` the client sent with ``Authorization: Bearer <secret>`` for the backend.

The processor configuration uses ``skip-request-headers: Authorization`` so the client's credential is not even
sent to the function.
"""

import os


def handler(event, context):
    secret = os.environ.get("BACKEND_TOKEN", "").strip()
    if not secret:
        # Fail closed and say so: calling the backend without credentials would only produce a confusing 401.
        return {"terminate": {"code": 503, "message": "Backend credentials are not available"}}
    return {
        "modify": {
            "dropHeaders": ["Authorization"],
            "addHeaders": {"Authorization": f"Bearer {secret}"},
        }
    }
