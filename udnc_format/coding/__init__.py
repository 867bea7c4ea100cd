"""The coding layer (spec §5–7): one module per concept, each holding its encode, decode and
size together: the dither, the lattices, the symbol chunk, the mask, the coders, and the native
kernels' facade. It imports the format layer only (ARCHITECTURE.md)."""
