"""sidecar-gateway: an API gateway with Boomi/Mashery-compatible pre/post-processing sidecars."""

__version__ = "0.1.0"
