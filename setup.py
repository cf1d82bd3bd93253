"""The native lane's C extension (docs/native-lane.md); everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs and the gateway serves every call through
the Python lane (``sidecar_gateway.native.lane.AVAILABLE`` is False then).
"""

import os
import sysconfig

from setuptools import Extension, setup


def _openssl() -> dict[str, list]:
    """SigV4's SHA-256 from libcrypto (the library Python's own hashlib uses) when its headers are installed;
    else the extension's portable SHA-256 (same digests, about 4x slower)."""
    include = sysconfig.get_config_var("INCLUDEDIR") or "/usr/include"
    for root in (include, "/usr/include", "/usr/local/include"):
        if os.path.exists(os.path.join(root, "openssl", "sha.h")):
            return {"define_macros": [("HAVE_OPENSSL", "1")], "libraries": ["crypto"]}
    return {}


setup(
    ext_modules=[
        Extension(
            "sidecar_gateway.native._lane",
            ["src/sidecar_gateway/native/_lane.c"],
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-field-initializers", "-Wno-deprecated-declarations"],
            optional=True,
            **_openssl(),
        ),
    ],
)
