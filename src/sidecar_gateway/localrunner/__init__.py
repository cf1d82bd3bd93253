"""A local Lambda service for Python functions: the Invoke API in front, the real AWS runtime client behind.

``python -m sidecar_gateway.localrunner DIR --listen 127.0.0.1:9001`` serves the functions of ``DIR``
(``manifest.py``) over the Lambda Invoke API (``server.py``); each concurrent invocation runs in its own
``awslambdaric`` process fed through the Lambda Runtime API (``runtime.py``).  Point an AWS SDK (or the gateway,
with ``AWS_ENDPOINT_URL_LAMBDA``) at it.  This package imports nothing else of sidecar-gateway.
"""

from .manifest import Defaults, FunctionSpec, ManifestError, load_functions
from .server import LocalLambdaRunner

__all__ = ["Defaults", "FunctionSpec", "LocalLambdaRunner", "ManifestError", "load_functions"]
