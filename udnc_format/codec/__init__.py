"""The codec (spec §8): the reader and decoder, the quantizer and encoder, the writer, on top of
the coding and format layers (ARCHITECTURE.md)."""
