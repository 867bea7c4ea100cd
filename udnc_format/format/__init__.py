"""The format layer (spec §2–4, §8.1 steps 1–7, §9–10): bytes, not weights. The declarative
layout, the header model and its checks, the errors, the constants, the limits and file access.
It imports nothing from the layers above (ARCHITECTURE.md)."""
