"""The native lane's C extension (docs/native-lane.md); everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs and the gateway serves every call through
the Python lane (``sidecar_gateway.native.lane.AVAILABLE`` is False then).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sidecar_gateway.native._lane",
            ["src/sidecar_gateway/native/_lane.c"],
            extra_compile_args=["-O2", "-Wall", "-Wno-missing-field-initializers"],
            optional=True,
        ),
    ],
)
