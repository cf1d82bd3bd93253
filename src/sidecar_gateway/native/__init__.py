"""The native lane: common calls served by C code with no Python on the per-request path (docs/native-lane.md)."""
