/* The native kernels of udnc: the hot loops of the decoder and encoder in plain C99.
 *
 * No Python here, so that a standalone C decoder can be built from the same sources
 * (module.c is the CPython wrapper). Every kernel gives exactly the bits of the numpy
 * reference (udnc_format, spec/udnc-v1.md): binary64 operations in the reference's order,
 * each rounded on its own (build with -ffp-contract=off, never -ffast-math), so that
 * decoded files and encoded files are byte-identical on both paths.
 *
 * Kernels that read untrusted bytes check every rule of the spec they touch and return
 * UDNC_INVALID on the first that fails, without saying which: the caller then re-runs the
 * reference, which raises the error it always raises (one source of error messages).
 */
#ifndef UDNC_KERNELS_H
#define UDNC_KERNELS_H

#include <stddef.h>
#include <stdint.h>

enum {
    UDNC_OK = 0,
    UDNC_INVALID = 1,     /* the input breaks a rule of the spec */
    UDNC_UNSUPPORTED = 2, /* parameters this kernel does not handle: use the reference */
    UDNC_NO_MEMORY = 3
};

/* spec §4.2: the output dtypes of lattice-coded tensors */
enum { UDNC_F16 = 10, UDNC_BF16 = 11, UDNC_F32 = 12, UDNC_F64 = 13 };

/* spec §4.5: dither generators */
enum { UDNC_PRNG_NONE = 0, UDNC_PHILOX4X32 = 1, UDNC_PHILOX4X64 = 2 };

/* spec §6.1: lattice identifiers (Z^n is 1 … 8, a trellis 32 + its memory) */
enum { UDNC_A2 = 16, UDNC_D4 = 17, UDNC_E8 = 18 };

/* A trellis of spec §6.8: memory ν, the parity mask Σ 2^(j−1) over its delays j, and the
 * segment length after which it restarts. The delays are defined once, in constants.py; the
 * caller passes them. */
typedef struct {
    int memory;
    unsigned mask;
    size_t segment;
} udnc_trellis;

/* §5: the 24-bit dither levels k = word(t) >> 8 of positions start … start + count − 1. */
int udnc_dither_levels(int prng, uint64_t seed, uint32_t stream, uint64_t start, size_t count,
                       uint32_t *levels);

/* §6.2: the count values serialized with fields of `bits` bits at data[start:], which must
 * end exactly at data[size]; every value must be below `limit`. */
int udnc_read_values(const uint8_t *data, size_t size, size_t start, size_t count, int bits,
                     uint64_t limit, uint64_t *values);

/* The same, unzigzagged to signed symbols (§6.2). */
int udnc_read_symbols(const uint8_t *data, size_t size, size_t start, size_t count, int bits,
                      uint64_t limit, int64_t *symbols);

/* §6.2, encoder side: the size of the serialization of count values (uint32 when wide is 0,
 * else uint64), or UDNC_INVALID if a value exceeds what escapes can hold. */
int udnc_serialized_size(const void *values, int wide, size_t count, int bits, size_t *size);

/* Writes the serialization, its `size` bytes from udnc_serialized_size, to out. */
void udnc_serialize(const void *values, int wide, size_t count, int bits, uint8_t *out,
                    size_t size);

/* §6.8: the levels ℓ of symbols that start at a segment boundary. */
void udnc_tcq_levels(const int64_t *symbols, size_t count, const udnc_trellis *trellis,
                     int64_t *levels);

/* One Viterbi pass of the reference encoder's trellis search (trellis.py `_viterbi` with its
 * candidates and branches) over `rows` whole segments of binary64 targets: the symbols of the
 * least squared error + rate[clip(σ, ±limit) + limit] path of each segment, the path costs
 * in binary32 brought back to a minimum of 0 every `renormalize` weights. */
int udnc_tcq_viterbi(const double *targets, size_t rows, const double *rate, int64_t limit,
                     const udnc_trellis *trellis, size_t renormalize, int64_t *symbols);

/* Appendix A: closest points of Z^n, A2, D4 and E8 to `vectors` targets of n binary64 values
 * (lattices.py `closest`): symbols (vectors × n) and, for E8, the coset bits. */
int udnc_closest(int lattice, const double *targets, size_t vectors, uint8_t *cosets,
                 int64_t *symbols);

/* One lattice-coded tensor's parameters (spec §4.5), for the reconstruction kernels. */
typedef struct {
    int lattice;
    int bits;                /* §6.2 field width */
    int prng;                /* 0: no dither */
    uint64_t seed;
    uint32_t stream;
    double scale;
    uint64_t symbol_limit;   /* zigzag values of symbols are below it (§6.2), at most 2^31 */
    const double *codebook;  /* K × n binary64 codewords, or NULL (§6.6) */
    size_t codebook_size;
    udnc_trellis trellis;    /* trellis lattices only */
} udnc_tensor;

/* §6.2 to §6.5 in one pass: the symbol chunk `raw` (size bytes) of `vectors` vectors, the
 * first of which is vector `first` of the tensor, decoded, dithered, scaled and rounded to
 * `dtype`; the first `outputs` values (the padding dropped) are written to out. */
int udnc_decode_chunk(const udnc_tensor *tensor, const uint8_t *raw, size_t size, uint64_t first,
                      size_t vectors, int dtype, size_t outputs, void *out);

/* §6.3 to §6.5 from symbols (vectors × n int64; UDNC_UNSUPPORTED beyond 2^29 in magnitude),
 * the coset bits (E8) and the dither levels of the vectors (NULL without dither): the
 * binary64 values x ⊗ s (lattices.py `reconstruct_scaled`). Codebook mode is not handled. */
int udnc_reconstruct(const udnc_tensor *tensor, const int64_t *symbols, const uint8_t *cosets,
                     const uint32_t *levels, size_t vectors, double *out);

/* §6.5: binary64 values rounded to `dtype` (binary16 and bfloat16 through binary32). */
int udnc_round(const double *values, size_t count, int dtype, void *out);

/* §7.1: decode a rANS stream to exactly raw_length bytes. On UDNC_INVALID, *fault says which
 * rule of the body broke (its message is rans.py `body_error`), at *where: decoding a crafted
 * stream again in the reference only to name its error would cost the reference's speed.
 * UDNC_RANS_HEADER: a rule of the header or the initial states (the reference finds it at
 * once); UDNC_RANS_ENDS_EARLY: the words run out in the lane group ending at byte *where;
 * UDNC_RANS_WORDS_LEFT: *where words follow the data; UDNC_RANS_END_STATE: a lane does not end
 * in its initial state. */
enum { UDNC_RANS_HEADER = 0, UDNC_RANS_ENDS_EARLY = 1, UDNC_RANS_WORDS_LEFT = 2,
       UDNC_RANS_END_STATE = 3 };
int udnc_rans_decode(const uint8_t *stream, size_t size, uint8_t *out, size_t raw_length,
                     int *fault, size_t *where);

/* §7.1, encoder side (rans.py `encode`): the stream of data with the given lanes and byte
 * frequencies (256, summing to 2^15, every present byte at least 1). out must hold
 * udnc_rans_bound(size, lanes) bytes; *written receives the stream's length. */
size_t udnc_rans_bound(size_t size, unsigned lanes);
int udnc_rans_encode(const uint8_t *data, size_t size, unsigned lanes, const uint16_t *freq,
                     uint8_t *out, size_t *written);

#endif
