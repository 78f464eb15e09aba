"""The sans-I/O core: bytes in, typed events out. Stdlib only; no I/O, no clock, no logging."""

from __future__ import annotations
