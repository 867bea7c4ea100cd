/* The native kernels of udnc (kernels.h): plain C99, bit-identical to the numpy reference. */
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* spec §1: every binary64 operation rounded on its own, no excess precision, no contraction */
#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "udnc's kernels need FLT_EVAL_METHOD 0 (no x87 extended precision)"
#endif
/* No fused multiply-add either: GCC takes -ffp-contract=off (setup.py), others the pragma. */
#if defined(__clang__) || !defined(__GNUC__)
#pragma STDC FP_CONTRACT OFF
#endif

/* Values handled per block by the chunk kernels: small enough for the stack and the L1
 * cache, a multiple of 8 so that every block starts on a byte of fields and of bitmap. */
#define BLOCK 2048

/* The encoder's hot loops compiled also for AVX2 and AVX-512, chosen when the library loads
 * (GCC on x86-64 glibc; elsewhere the one portable version). Lanes of adds, compares and
 * selects give the same binary32/binary64 results at any width. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* ------------------------------------------------------------------------------------------
 * spec §5: the dither generators */

#define PHILOX_ROUNDS 10
#define PHILOX32_M0 0xD2511F53u
#define PHILOX32_M1 0xCD9E8D57u
#define PHILOX32_W0 0x9E3779B9u
#define PHILOX32_W1 0xBB67AE85u
#define PHILOX64_M0 UINT64_C(0xD2E7470EE14C6C93)
#define PHILOX64_M1 UINT64_C(0xCA5A826395121157)
#define PHILOX64_W0 UINT64_C(0x9E3779B97F4A7C15)
#define PHILOX64_W1 UINT64_C(0xBB67AE8584CAA73B)
#define UNIFORM_SHIFT 8 /* §5.3: a level is the top 24 bits of a word */

/* Blocks generated together: independent chains that the processor overlaps, few enough to
 * stay in registers (measured best: more of them are spilled or badly vectorized). */
#define BATCH32 4
#define BATCH64 2

/* §5.1 and §5.2: blocks first … first + BATCH32 − 1, four words each, in position order. */
static void philox4x32_batch(uint64_t first, uint32_t stream, uint64_t seed, uint32_t *words)
{
    uint32_t c0[BATCH32], c1[BATCH32], c2[BATCH32], c3[BATCH32];
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    int i, round;
    for (i = 0; i < BATCH32; i++) {
        uint64_t block = first + (uint64_t)i;
        c0[i] = (uint32_t)block;
        c1[i] = (uint32_t)(block >> 32);
        c2[i] = stream;
        c3[i] = 0;
    }
    for (round = 0; round < PHILOX_ROUNDS; round++) {
        if (round) { /* the key is bumped between rounds, not before the first */
            k0 += PHILOX32_W0;
            k1 += PHILOX32_W1;
        }
        for (i = 0; i < BATCH32; i++) {
            uint64_t p0 = (uint64_t)PHILOX32_M0 * c0[i];
            uint64_t p1 = (uint64_t)PHILOX32_M1 * c2[i];
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1[i] ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3[i] ^ k1;
            c1[i] = (uint32_t)p1;
            c3[i] = (uint32_t)p0;
            c0[i] = n0;
            c2[i] = n2;
        }
    }
    for (i = 0; i < BATCH32; i++) {
        words[4 * i] = c0[i];
        words[4 * i + 1] = c1[i];
        words[4 * i + 2] = c2[i];
        words[4 * i + 3] = c3[i];
    }
}

/* The 128-bit product a × b: its low half returned, its high half in *high. */
static uint64_t multiply_wide(uint64_t a, uint64_t b, uint64_t *high)
{
#if defined(__SIZEOF_INT128__)
    __extension__ unsigned __int128 product = (unsigned __int128)a * b;
    *high = (uint64_t)(product >> 64);
    return (uint64_t)product;
#else
    uint64_t a0 = a & 0xFFFFFFFFu, a1 = a >> 32, b0 = b & 0xFFFFFFFFu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t middle = (p00 >> 32) + (p01 & 0xFFFFFFFFu) + (p10 & 0xFFFFFFFFu);
    *high = p11 + (p01 >> 32) + (p10 >> 32) + (middle >> 32);
    return (middle << 32) | (p00 & 0xFFFFFFFFu);
#endif
}

/* §5.4: blocks first … first + BATCH64 − 1 (counter (b, 0, 0, 0), key (seed, stream)), as
 * 32-bit words, the low half of each 64-bit word first. */
static void philox4x64_batch(uint64_t first, uint32_t stream, uint64_t seed, uint32_t *words)
{
    uint64_t c0[BATCH64], c1[BATCH64], c2[BATCH64], c3[BATCH64];
    uint64_t k0 = seed, k1 = stream;
    int i, round;
    for (i = 0; i < BATCH64; i++) {
        c0[i] = first + (uint64_t)i;
        c1[i] = c2[i] = c3[i] = 0;
    }
    for (round = 0; round < PHILOX_ROUNDS; round++) {
        if (round) {
            k0 += PHILOX64_W0;
            k1 += PHILOX64_W1;
        }
        for (i = 0; i < BATCH64; i++) {
            uint64_t h0, h1;
            uint64_t l0 = multiply_wide(PHILOX64_M0, c0[i], &h0);
            uint64_t l1 = multiply_wide(PHILOX64_M1, c2[i], &h1);
            c0[i] = h1 ^ c1[i] ^ k0;
            c1[i] = l1;
            c2[i] = h0 ^ c3[i] ^ k1;
            c3[i] = l0;
        }
    }
    for (i = 0; i < BATCH64; i++) {
        const uint64_t out[4] = {c0[i], c1[i], c2[i], c3[i]};
        int w;
        for (w = 0; w < 4; w++) {
            words[8 * i + 2 * w] = (uint32_t)out[w];
            words[8 * i + 2 * w + 1] = (uint32_t)(out[w] >> 32);
        }
    }
}

int udnc_dither_levels(int prng, uint64_t seed, uint32_t stream, uint64_t start, size_t count,
                       uint32_t *levels)
{
    uint32_t words[BATCH32 * 4]; /* one batch of either generator: 16 positions */
    unsigned per_block;
    uint64_t block;
    size_t skip, done = 0;
    if (prng == UDNC_PHILOX4X32)
        per_block = 4;
    else if (prng == UDNC_PHILOX4X64)
        per_block = 8;
    else
        return UDNC_UNSUPPORTED;
    block = start / per_block;
    skip = (size_t)(start % per_block);
    while (done < count) {
        size_t batch = per_block == 4 ? 4 * BATCH32 : 8 * BATCH64, take, i;
        if (per_block == 4)
            philox4x32_batch(block, stream, seed, words);
        else
            philox4x64_batch(block, stream, seed, words);
        take = batch - skip;
        if (take > count - done)
            take = count - done;
        for (i = 0; i < take; i++)
            levels[done + i] = words[skip + i] >> UNIFORM_SHIFT;
        done += take;
        block += batch / per_block;
        skip = 0;
    }
    return UDNC_OK;
}

/* ------------------------------------------------------------------------------------------
 * spec §6.2: packed fields, escape bytes, escape words */

#define ESCAPE_DEFERS 255u /* an escape byte of 255 defers to a u32 word */

typedef struct {
    const uint8_t *fields;
    const uint8_t *escapes;
    const uint8_t *words;
    size_t escape_count, word_count, next_escape, next_word;
    int bits;
    unsigned top; /* F = 2^b − 1, the field that escapes */
} field_reader;

static size_t field_bytes(size_t count, int bits)
{
    return (count / 8) * (size_t)bits + ((count % 8) * (size_t)bits + 7) / 8;
}

/* The fields of `bytes` bytes equal to F (padding fields are 0, never F); one loop per
 * width, which vectorizes. */
static size_t count_top_fields(const uint8_t *fields, size_t bytes, int bits)
{
    size_t count = 0, i;
    switch (bits) {
    case 8:
        for (i = 0; i < bytes; i++)
            count += fields[i] == 0xFFu;
        break;
    case 4:
        for (i = 0; i < bytes; i++)
            count += ((fields[i] & 15u) == 15u) + ((fields[i] >> 4) == 15u);
        break;
    case 2:
        for (i = 0; i < bytes; i++) {
            unsigned b = fields[i];
            count += ((b & 3u) == 3u) + (((b >> 2) & 3u) == 3u) + (((b >> 4) & 3u) == 3u) +
                     ((b >> 6) == 3u);
        }
        break;
    default:
        for (i = 0; i < bytes; i++) {
            unsigned b = fields[i];
            b = (b & 0x55u) + ((b >> 1) & 0x55u);
            b = (b & 0x33u) + ((b >> 2) & 0x33u);
            count += (b & 0x0Fu) + (b >> 4);
        }
        break;
    }
    return count;
}

/* Bit j set where fields[j] = F, for 64 fields, without a branch per field: the bytes equal
 * to F become zero bytes, whose high bits one multiplication gathers into the top byte. */
static uint64_t escape_mask64(const uint8_t *fields, unsigned top)
{
    const uint64_t low7 = UINT64_C(0x7F7F7F7F7F7F7F7F), gather = UINT64_C(0x0102040810204080);
    const uint64_t tops = UINT64_C(0x0101010101010101) * top;
    uint64_t mask = 0;
    int group, k;
    for (group = 0; group < 8; group++) {
        uint64_t word = 0, zero;
        for (k = 0; k < 8; k++)
            word |= (uint64_t)fields[8 * group + k] << (8 * k);
        word ^= tops;
        zero = ~(((word & low7) + low7) | word | low7); /* 0x80 in each zero byte, exactly */
        mask |= ((zero >> 7) * gather >> 56) << (8 * group);
    }
    return mask;
}

static int lowest_bit(uint64_t mask) /* of a non-zero mask */
{
#if defined(__GNUC__)
    return __builtin_ctzll(mask);
#else
    int k = 0;
    while (!(mask & 1u)) {
        mask >>= 1;
        k++;
    }
    return k;
#endif
}

/* The positions of the fields equal to F among n ≤ BLOCK, in order. */
static size_t escape_positions(const uint8_t *fields, size_t n, unsigned top, uint16_t *positions)
{
    size_t count = 0, base;
    for (base = 0; base + 64 <= n; base += 64) {
        uint64_t mask = escape_mask64(fields + base, top);
        while (mask) {
            positions[count++] = (uint16_t)(base + (size_t)lowest_bit(mask));
            mask &= mask - 1;
        }
    }
    for (; base < n; base++)
        if (fields[base] == top)
            positions[count++] = (uint16_t)base;
    return count;
}

/* Checks the sizes of §6.2 (fields, their padding, escape bytes and words ending exactly at
 * the end of the chunk) and prepares to read. */
static int open_fields(field_reader *r, const uint8_t *data, size_t size, size_t start,
                       size_t count, int bits)
{
    size_t bytes, position, i, used_bits;
    if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
        return UDNC_UNSUPPORTED;
    if (start > size)
        return UDNC_INVALID;
    bytes = field_bytes(count, bits);
    if (size - start < bytes)
        return UDNC_INVALID;
    r->fields = data + start;
    r->bits = bits;
    r->top = (1u << bits) - 1;
    used_bits = (count % 8) * (size_t)bits % 8;
    if (used_bits && (r->fields[bytes - 1] >> used_bits))
        return UDNC_INVALID; /* padding fields after the last value are not zero */
    r->escape_count = count_top_fields(r->fields, bytes, bits);
    position = start + bytes;
    if (size - position < r->escape_count)
        return UDNC_INVALID;
    r->escapes = data + position;
    r->word_count = 0;
    for (i = 0; i < r->escape_count; i++)
        r->word_count += r->escapes[i] == ESCAPE_DEFERS;
    position += r->escape_count;
    if ((size - position) / 4 != r->word_count || (size - position) % 4)
        return UDNC_INVALID;
    r->words = data + position;
    r->next_escape = r->next_word = 0;
    return UDNC_OK;
}

/* The value of the next escaped field (F + escape byte, or F + 255 + escape word). */
static uint64_t next_escaped(field_reader *r)
{
    unsigned escape = r->escapes[r->next_escape++];
    const uint8_t *w;
    if (escape < ESCAPE_DEFERS)
        return (uint64_t)r->top + escape;
    w = r->words + 4 * r->next_word++;
    return (uint64_t)r->top + ESCAPE_DEFERS +
           ((uint64_t)w[0] | (uint64_t)w[1] << 8 | (uint64_t)w[2] << 16 | (uint64_t)w[3] << 24);
}

/* Fields first … first + n − 1 (first a multiple of 8) as bytes. */
static void unpack_fields(const field_reader *r, size_t first, size_t n, uint8_t *out)
{
    const uint8_t *src = r->fields + first / 8 * (size_t)r->bits;
    size_t i;
    switch (r->bits) {
    case 8:
        memcpy(out, src, n);
        return;
    case 4:
        for (i = 0; i < n / 2; i++) {
            out[2 * i] = src[i] & 15u;
            out[2 * i + 1] = src[i] >> 4;
        }
        break;
    case 2:
        for (i = 0; i < n / 4; i++) {
            out[4 * i] = src[i] & 3u;
            out[4 * i + 1] = (src[i] >> 2) & 3u;
            out[4 * i + 2] = (src[i] >> 4) & 3u;
            out[4 * i + 3] = src[i] >> 6;
        }
        break;
    default:
        for (i = 0; i < n / 8; i++) {
            int k;
            for (k = 0; k < 8; k++)
                out[8 * i + k] = (src[i] >> k) & 1u;
        }
        break;
    }
    for (i = n - n % (size_t)(8 / r->bits); i < n; i++) /* a last, partial byte */
        out[i] = (src[i * r->bits / 8] >> (i * r->bits % 8)) & r->top;
}

static int32_t unzigzag32(uint32_t z)
{
    return (int32_t)(z >> 1) ^ -(int32_t)(z & 1u);
}

/* n symbols (zigzagged values below limit ≤ 2^31) of the fields at first. */
static int read_symbol_block(field_reader *r, size_t first, size_t n, uint64_t limit,
                             int32_t *symbols)
{
    uint8_t fields[BLOCK];
    uint16_t positions[BLOCK];
    unsigned escaped = 0;
    size_t j, escapes;
    unpack_fields(r, first, n, fields);
    for (j = 0; j < n; j++) {
        symbols[j] = unzigzag32(fields[j]);
        escaped |= fields[j] == r->top;
    }
    if (!escaped)
        return UDNC_OK;
    escapes = escape_positions(fields, n, r->top, positions);
    for (j = 0; j < escapes; j++) {
        uint64_t value = next_escaped(r);
        if (value >= limit)
            return UDNC_INVALID;
        symbols[positions[j]] = unzigzag32((uint32_t)value);
    }
    return UDNC_OK;
}

/* n values below limit ≤ 2^32 (codeword indices, §6.6) of the fields at first. */
static int read_index_block(field_reader *r, size_t first, size_t n, uint64_t limit,
                            uint32_t *indices)
{
    uint8_t fields[BLOCK];
    size_t j;
    unpack_fields(r, first, n, fields);
    for (j = 0; j < n; j++) {
        uint64_t value = fields[j] == r->top ? next_escaped(r) : fields[j];
        if (value >= limit)
            return UDNC_INVALID;
        indices[j] = (uint32_t)value;
    }
    return UDNC_OK;
}

int udnc_read_values(const uint8_t *data, size_t size, size_t start, size_t count, int bits,
                     uint64_t limit, uint64_t *values)
{
    field_reader r;
    uint8_t fields[BLOCK];
    size_t first, j;
    int status = open_fields(&r, data, size, start, count, bits);
    if (status)
        return status;
    for (first = 0; first < count; first += BLOCK) {
        size_t n = count - first < BLOCK ? count - first : BLOCK;
        unpack_fields(&r, first, n, fields);
        for (j = 0; j < n; j++) {
            uint64_t value = fields[j] == r.top ? next_escaped(&r) : fields[j];
            if (value >= limit)
                return UDNC_INVALID;
            values[first + j] = value;
        }
    }
    return UDNC_OK;
}

int udnc_read_symbols(const uint8_t *data, size_t size, size_t start, size_t count, int bits,
                      uint64_t limit, int64_t *symbols)
{
    /* The values, then un-zigzagged in place (int64_t and uint64_t may alias, C99 6.5). */
    uint64_t *values = (uint64_t *)symbols;
    size_t j;
    int status = udnc_read_values(data, size, start, count, bits, limit, values);
    if (status)
        return status;
    for (j = 0; j < count; j++)
        symbols[j] = (int64_t)(values[j] >> 1) ^ -(int64_t)(values[j] & 1u);
    return UDNC_OK;
}

static uint64_t value_at(const void *values, int wide, size_t j)
{
    return wide ? ((const uint64_t *)values)[j] : ((const uint32_t *)values)[j];
}

int udnc_serialized_size(const void *values, int wide, size_t count, int bits, size_t *size)
{
    const uint64_t top = (UINT64_C(1) << bits) - 1, deferred = top + ESCAPE_DEFERS;
    uint64_t largest = 0;
    size_t escapes = 0, words = 0, j;
    if (bits != 1 && bits != 2 && bits != 4 && bits != 8)
        return UDNC_UNSUPPORTED;
    if (wide) {
        const uint64_t *v = values;
        for (j = 0; j < count; j++) {
            largest = v[j] > largest ? v[j] : largest;
            escapes += v[j] >= top;
            words += v[j] >= deferred;
        }
    } else {
        const uint32_t *v = values;
        uint32_t most = 0;
        for (j = 0; j < count; j++) {
            most = v[j] > most ? v[j] : most;
            escapes += v[j] >= top;
            words += v[j] >= deferred;
        }
        largest = most;
    }
    if (largest > deferred + UINT32_MAX)
        return UDNC_INVALID;
    *size = field_bytes(count, bits) + escapes + 4 * words;
    return UDNC_OK;
}

/* Whole bytes of fields (spec §6.2), the field of a value being itself below F, else F: one
 * loop per width, which vectorizes; defined for uint32 and uint64 values. */
#define DEFINE_PACK_FIELDS(name, type)                                                        \
    static void name(const type *v, size_t bytes, int bits, uint8_t *out)                     \
    {                                                                                         \
        const type top = (type)((1u << bits) - 1);                                            \
        size_t i;                                                                             \
        int k;                                                                                \
        switch (bits) {                                                                       \
        case 8:                                                                               \
            for (i = 0; i < bytes; i++)                                                       \
                out[i] = (uint8_t)(v[i] < top ? v[i] : top);                                  \
            break;                                                                            \
        case 4:                                                                               \
            for (i = 0; i < bytes; i++)                                                       \
                out[i] = (uint8_t)((v[2 * i] < top ? v[2 * i] : top) |                        \
                                   (v[2 * i + 1] < top ? v[2 * i + 1] : top) << 4);           \
            break;                                                                            \
        case 2:                                                                               \
            for (i = 0; i < bytes; i++) {                                                     \
                type byte = 0;                                                                \
                for (k = 0; k < 4; k++)                                                       \
                    byte |= (v[4 * i + k] < top ? v[4 * i + k] : top) << (2 * k);             \
                out[i] = (uint8_t)byte;                                                       \
            }                                                                                 \
            break;                                                                            \
        default:                                                                              \
            for (i = 0; i < bytes; i++) {                                                     \
                type byte = 0;                                                                \
                for (k = 0; k < 8; k++)                                                       \
                    byte |= (v[8 * i + k] < top ? v[8 * i + k] : top) << k;                   \
                out[i] = (uint8_t)byte;                                                       \
            }                                                                                 \
            break;                                                                            \
        }                                                                                     \
    }
DEFINE_PACK_FIELDS(pack_fields_u32, uint32_t)
DEFINE_PACK_FIELDS(pack_fields_u64, uint64_t)

void udnc_serialize(const void *values, int wide, size_t count, int bits, uint8_t *out,
                    size_t size)
{
    const uint64_t top = (UINT64_C(1) << bits) - 1;
    const size_t per_byte = 8 / (size_t)bits, whole = count / per_byte;
    const size_t bytes = field_bytes(count, bits);
    uint8_t *escapes = out + bytes, *words;
    size_t j;
    if (wide)
        pack_fields_u64(values, whole, bits, out);
    else
        pack_fields_u32(values, whole, bits, out);
    if (whole < bytes) { /* a last, partial byte */
        uint64_t byte = 0;
        for (j = whole * per_byte; j < count; j++) {
            uint64_t value = value_at(values, wide, j);
            byte |= (value < top ? value : top) << (j % per_byte * (size_t)bits);
        }
        out[whole] = (uint8_t)byte;
    }
    if (size == bytes)
        return; /* no field escapes */
    /* the escape bytes, then the escape words, in the order of their fields */
    for (j = 0; j < count; j++) {
        uint64_t value = value_at(values, wide, j);
        if (value >= top)
            *escapes++ = (uint8_t)(value - top < ESCAPE_DEFERS ? value - top : ESCAPE_DEFERS);
    }
    words = escapes;
    for (j = 0; j < count && words < out + size; j++) {
        uint64_t value = value_at(values, wide, j);
        if (value >= top + ESCAPE_DEFERS) {
            uint64_t word = value - top - ESCAPE_DEFERS;
            words[0] = (uint8_t)word;
            words[1] = (uint8_t)(word >> 8);
            words[2] = (uint8_t)(word >> 16);
            words[3] = (uint8_t)(word >> 24);
            words += 4;
        }
    }
}

/* ------------------------------------------------------------------------------------------
 * spec §6.8: trellis quantizer bits. The decoder's state s holds the pending parity sums:
 * q_t = s & 1, and parity π_t leads to rotr(s) XOR π_t·mask (so q_t = q_{t−ν} XOR the
 * parities π_{t−j}, j in J). */

typedef struct {
    unsigned state;
    size_t position; /* within the segment */
} trellis_walk;

static unsigned rotate_right(unsigned state, int memory)
{
    return (state >> 1) | ((state & 1u) << (memory - 1));
}

/* 2σ − q·sgn σ for symbols that continue the walk (modulo 2^64, as int64 arithmetic wraps in
 * numpy), without a branch on the data. */
static int64_t trellis_level(trellis_walk *walk, const udnc_trellis *trellis, int64_t symbol)
{
    uint64_t quantizer, sign;
    if (walk->position == trellis->segment) {
        walk->state = 0;
        walk->position = 0;
    }
    quantizer = walk->state & 1u;
    sign = (uint64_t)((symbol > 0) - (symbol < 0));
    walk->state = rotate_right(walk->state, trellis->memory) ^ (trellis->mask & -(unsigned)(symbol & 1));
    walk->position++;
    return (int64_t)((uint64_t)symbol * 2u - quantizer * sign);
}

/* The levels of n symbols that continue the walk, in 32 bits (|σ| ≤ 2^30 here). */
static void trellis_levels32(trellis_walk *walk, const udnc_trellis *trellis, const int32_t *s,
                             size_t n, int32_t *levels)
{
    size_t j = 0;
    while (j < n) {
        size_t run, k;
        unsigned state;
        if (walk->position == trellis->segment) {
            walk->state = 0;
            walk->position = 0;
        }
        run = trellis->segment - walk->position < n - j ? trellis->segment - walk->position : n - j;
        state = walk->state;
        for (k = j; k < j + run; k++) {
            int32_t sign = (s[k] > 0) - (s[k] < 0);
            levels[k] = 2 * s[k] - (int32_t)(state & 1u) * sign;
            state = rotate_right(state, trellis->memory) ^ (trellis->mask & -(unsigned)(s[k] & 1));
        }
        walk->state = state;
        walk->position += run;
        j += run;
    }
}

void udnc_tcq_levels(const int64_t *symbols, size_t count, const udnc_trellis *trellis,
                     int64_t *levels)
{
    trellis_walk walk = {0, 0};
    size_t j;
    for (j = 0; j < count; j++)
        levels[j] = trellis_level(&walk, trellis, symbols[j]);
}

/* ------------------------------------------------------------------------------------------
 * spec §6.3 to §6.5: reconstruction, scaling and the rounding to the output dtype */

#define SQRT3_OVER_2 0x1.bb67ae8584caap-1 /* §6.1: h */
#define LEVEL_UNIT 0x1p-24                /* §5.3: r = k · 2^-24 */
#define LEVEL_SCALE 16777216.0            /* 2^24 */
#define LEVEL_HALF 8388608.0              /* 2^23 */

/* What the reconstruction of one block needs besides its symbols. */
typedef struct {
    const udnc_tensor *tensor;
    int dim;
    int cubic, trellis;
    double fine; /* s · 2^-24 when exact (lattices.py `fixed_point_scale`), else 0 */
    trellis_walk walk;
} rebuild;

static int lattice_dim(int lattice)
{
    if (lattice >= 1 && lattice <= 8)
        return lattice;
    switch (lattice) {
    case UDNC_A2:
        return 2;
    case UDNC_D4:
        return 4;
    case UDNC_E8:
        return 8;
    case 34: /* TCQ4 … TCQ256 (§6.8) */
    case 36:
    case 38:
    case 40:
        return 1;
    default:
        return 0;
    }
}

static int open_rebuild(rebuild *b, const udnc_tensor *tensor)
{
    double fine = tensor->scale * LEVEL_UNIT;
    b->tensor = tensor;
    b->dim = lattice_dim(tensor->lattice);
    if (!b->dim)
        return UDNC_UNSUPPORTED;
    b->cubic = tensor->lattice <= 8;
    b->trellis = tensor->lattice > UDNC_E8;
    if (b->trellis && (tensor->trellis.memory < 2 || tensor->trellis.memory > 8 ||
                       tensor->trellis.segment == 0 || tensor->codebook))
        return UDNC_UNSUPPORTED;
    b->fine = fine >= DBL_MIN && fine / LEVEL_UNIT == tensor->scale ? fine : 0.0;
    b->walk.state = 0;
    b->walk.position = 0;
    return UDNC_OK;
}

/* c = k · 2^-24 − 1/2 (§5.3), exact */
static double centred(uint32_t level)
{
    double c = (double)(int32_t)level;
    c *= LEVEL_UNIT;
    return c - 0.5;
}

/* The dither u = c·G of D4 and E8 (§6.4), each sum exact and started from +0 as the
 * reference's matrix product is, so that a zero is never −0 (it matters for v − u with a
 * codeword v = −0, §6.6). */
static void offsets_d4(const double *c, double *u)
{
    u[0] = 0.0 + (-c[0] + c[1]);
    u[1] = 0.0 + (-c[0] - c[1] + c[2]);
    u[2] = 0.0 + (-c[2] + c[3]);
    u[3] = 0.0 + -c[3];
}

static void offsets_e8(const double *c, double *u)
{
    double half = c[7] * 0.5;
    int k;
    u[0] = 0.0 + (2.0 * c[0] - c[1] + half);
    for (k = 1; k < 6; k++)
        u[k] = 0.0 + (c[k] - c[k + 1] + half);
    u[6] = 0.0 + (c[6] + half);
    u[7] = 0.0 + half;
}

/* §6.3: the point p of a D4 vector (p4 = 2σ4 + (σ1 + σ2 + σ3 mod 2)) or E8 vector (y then
 * y + β/2). */
static void points_dn(const int32_t *s, int n, unsigned coset, double *p)
{
    int64_t sum = 0;
    int k;
    for (k = 0; k < n - 1; k++) {
        sum += s[k];
        p[k] = (double)s[k];
    }
    p[n - 1] = (double)(2 * (int64_t)s[n - 1] + (sum & 1));
    if (coset)
        for (k = 0; k < n; k++)
            p[k] = p[k] + 0.5;
}

/* The binary64 values x ⊗ s of `vectors` vectors of symbols (and coset bits, E8), with their
 * dither levels (NULL: no dither). */
static void rebuild_symbols(rebuild *b, const int32_t *s, const uint8_t *cosets,
                            const uint32_t *levels, size_t vectors, double *y)
{
    const double scale = b->tensor->scale;
    const int n = b->dim;
    const size_t count = vectors * (size_t)n;
    size_t j, v;
    if (b->cubic) {
        if (!levels) {
            for (j = 0; j < count; j++)
                y[j] = (double)s[j] * scale;
        } else if (b->fine != 0.0) {
            /* (σ·2^24 + 2^23 − k) ⊗ (s·2^-24): exact integers, one rounding (lattices.py) */
            for (j = 0; j < count; j++) {
                double x = (double)s[j];
                x *= LEVEL_SCALE;
                x += LEVEL_HALF;
                x -= (double)(int32_t)levels[j];
                y[j] = x * b->fine;
            }
        } else {
            for (j = 0; j < count; j++)
                y[j] = ((double)s[j] - centred(levels[j])) * scale;
        }
        return;
    }
    if (b->trellis) {
        int32_t level[BLOCK];
        trellis_levels32(&b->walk, &b->tensor->trellis, s, count, level);
        if (levels)
            for (j = 0; j < count; j++)
                y[j] = ((double)level[j] - centred(levels[j])) * scale;
        else
            for (j = 0; j < count; j++)
                y[j] = (double)level[j] * scale;
        return;
    }
    for (v = 0; v < vectors; v++) {
        const int32_t *sv = s + v * n;
        double *x = y + v * n;
        double c[8], u[8];
        int k;
        if (levels)
            for (k = 0; k < n; k++)
                c[k] = centred(levels[v * n + k]);
        if (b->tensor->lattice == UDNC_A2) {
            int64_t big_y = 2 * (int64_t)sv[1] + (sv[0] & 1);
            if (levels) { /* §6.4: x1 exact, x2 = (Y − c2) ⊗ h */
                x[0] = (double)sv[0] * 0.5 - (c[0] + c[1] * 0.5);
                x[1] = ((double)big_y - c[1]) * SQRT3_OVER_2;
            } else {
                x[0] = (double)sv[0] * 0.5;
                x[1] = (double)big_y * SQRT3_OVER_2;
            }
        } else {
            points_dn(sv, n, cosets ? cosets[v] : 0u, x);
            if (levels) {
                if (n == 4)
                    offsets_d4(c, u);
                else
                    offsets_e8(c, u);
                for (k = 0; k < n; k++)
                    x[k] = x[k] - u[k];
            }
        }
        for (k = 0; k < n; k++)
            x[k] = x[k] * scale;
    }
}

/* Codebook mode (§6.6): x = v ⊖ u, then x ⊗ s. */
static void rebuild_codewords(const rebuild *b, const uint32_t *indices, const uint32_t *levels,
                              size_t vectors, double *y)
{
    const udnc_tensor *t = b->tensor;
    const int n = b->dim;
    size_t v;
    for (v = 0; v < vectors; v++) {
        const double *word = t->codebook + (size_t)indices[v] * n;
        double *x = y + v * n;
        double c[8], u[8];
        int k;
        if (!levels) {
            for (k = 0; k < n; k++)
                x[k] = word[k] * t->scale;
            continue;
        }
        for (k = 0; k < n; k++)
            c[k] = centred(levels[v * n + k]);
        if (b->cubic) {
            for (k = 0; k < n; k++)
                u[k] = c[k];
        } else if (t->lattice == UDNC_A2) {
            u[0] = c[0] + c[1] * 0.5;
            u[1] = c[1] * SQRT3_OVER_2;
        } else if (n == 4) {
            offsets_d4(c, u);
        } else {
            offsets_e8(c, u);
        }
        for (k = 0; k < n; k++)
            x[k] = (word[k] - u[k]) * t->scale;
    }
}

/* binary32 to binary16, round to nearest even (numpy's conversion, NaN payloads included) */
static uint16_t half_of(float value)
{
    uint32_t f;
    uint32_t sign, exponent, significand;
    memcpy(&f, &value, sizeof f);
    sign = (f >> 16) & 0x8000u;
    exponent = f & 0x7F800000u;
    significand = f & 0x007FFFFFu;
    if (exponent >= 0x47800000u) { /* overflow, infinity or NaN */
        if (exponent == 0x7F800000u && significand) {
            uint32_t nan = 0x7C00u + (significand >> 13);
            return (uint16_t)(sign + (nan == 0x7C00u ? nan + 1 : nan));
        }
        return (uint16_t)(sign + 0x7C00u);
    }
    if (exponent <= 0x38000000u) { /* a subnormal half, or zero */
        unsigned shift;
        uint32_t kept, rest, halfway;
        if (exponent < 0x33000000u)
            return (uint16_t)sign; /* below half the smallest subnormal */
        shift = 126 - (exponent >> 23); /* to units of 2^-24: 14 … 24 */
        significand += 0x00800000u;
        kept = significand >> shift;
        rest = significand & ((UINT32_C(1) << shift) - 1);
        halfway = UINT32_C(1) << (shift - 1);
        if (rest > halfway || (rest == halfway && (kept & 1u)))
            kept += 1; /* may become the smallest normal: correct */
        return (uint16_t)(sign + kept);
    }
    {
        uint32_t h = ((exponent - 0x38000000u) >> 13) + (significand >> 13);
        uint32_t rest = significand & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u)))
            h += 1; /* may carry into the exponent, up to infinity: correct */
        return (uint16_t)(sign + h);
    }
}

/* binary32 to bfloat16, round to nearest even; NaN stays NaN (ml_dtypes: 0x7FC0 with the
 * sign) */
static uint16_t bfloat_of(float value)
{
    uint32_t f;
    memcpy(&f, &value, sizeof f);
    if ((f & 0x7FFFFFFFu) > 0x7F800000u)
        return (uint16_t)(((f >> 16) & 0x8000u) | 0x7FC0u);
    f += 0x7FFFu + ((f >> 16) & 1u);
    return (uint16_t)(f >> 16);
}

static int known_dtype(int dtype)
{
    return dtype == UDNC_F16 || dtype == UDNC_BF16 || dtype == UDNC_F32 || dtype == UDNC_F64;
}

/* §6.5: values[0 … count − 1] rounded into element `offset` onwards of out. */
static void store(int dtype, const double *values, size_t count, void *out, size_t offset)
{
    size_t j;
    switch (dtype) {
    case UDNC_F64:
        memcpy((double *)out + offset, values, count * sizeof(double));
        break;
    case UDNC_F32: {
        float *target = (float *)out + offset;
        for (j = 0; j < count; j++)
            target[j] = (float)values[j];
        break;
    }
    case UDNC_F16: {
        uint16_t *target = (uint16_t *)out + offset;
        for (j = 0; j < count; j++)
            target[j] = half_of((float)values[j]);
        break;
    }
    default: {
        uint16_t *target = (uint16_t *)out + offset;
        for (j = 0; j < count; j++)
            target[j] = bfloat_of((float)values[j]);
        break;
    }
    }
}

int udnc_round(const double *values, size_t count, int dtype, void *out)
{
    if (!known_dtype(dtype))
        return UDNC_UNSUPPORTED;
    store(dtype, values, count, out, 0);
    return UDNC_OK;
}

/* The default path (Z^n, dither, binary32): spec §6.4 in integers, as lattices.py's
 * fixed_point_values, (σ·2^24 + 2^23 − k) ⊗ (s·2^-24) with every step but the last exact. */
static float cubic_binary32(int32_t symbol, uint32_t level, double fine)
{
    double x = (double)symbol;
    x *= LEVEL_SCALE;
    x += LEVEL_HALF;
    x -= (double)(int32_t)level;
    return (float)(x * fine);
}

/* One block of the default path from its fields in one vectorized pass, then the values of
 * the escaped fields again with their escapes (a few per cent of them where b is small). */
static int cubic_binary32_block(field_reader *r, const uint8_t *fields, const uint32_t *levels,
                                size_t count, uint64_t limit, double fine, float *out)
{
    uint16_t positions[BLOCK];
    unsigned escaped = 0;
    size_t j, escapes;
    for (j = 0; j < count; j++) {
        escaped |= fields[j] == r->top;
        out[j] = cubic_binary32(unzigzag32(fields[j]), levels[j], fine);
    }
    if (!escaped)
        return UDNC_OK;
    escapes = escape_positions(fields, count, r->top, positions);
    for (j = 0; j < escapes; j++) {
        size_t at = positions[j];
        uint64_t value = next_escaped(r);
        if (value >= limit)
            return UDNC_INVALID;
        out[at] = cubic_binary32(unzigzag32((uint32_t)value), levels[at], fine);
    }
    return UDNC_OK;
}

/* Vectors per block: BLOCK values at most, a multiple of 8. */
static size_t block_vectors(int dim)
{
    return BLOCK / (size_t)dim / 8 * 8;
}

int udnc_reconstruct(const udnc_tensor *tensor, const int64_t *symbols, const uint8_t *cosets,
                     const uint32_t *levels, size_t vectors, double *out)
{
    rebuild b;
    int32_t narrow[BLOCK];
    size_t first, j, per_block;
    int status = open_rebuild(&b, tensor);
    if (status)
        return status;
    if (tensor->codebook)
        return UDNC_UNSUPPORTED;
    per_block = block_vectors(b.dim);
    for (first = 0; first < vectors; first += per_block) {
        size_t count = vectors - first < per_block ? vectors - first : per_block;
        size_t values = count * (size_t)b.dim, offset = first * (size_t)b.dim;
        for (j = 0; j < values; j++) {
            int64_t s = symbols[offset + j];
            if (s > INT32_MAX / 4 || s < -(INT32_MAX / 4))
                return UDNC_UNSUPPORTED; /* beyond the format's 2^24; the reference decides */
            narrow[j] = (int32_t)s;
        }
        rebuild_symbols(&b, narrow, cosets ? cosets + first : NULL, levels ? levels + offset : NULL,
                        count, out + offset);
    }
    return UDNC_OK;
}

/* The coset bits of vectors first … first + n − 1 (first a multiple of 8) of a bitmap. */
static void unpack_cosets(const uint8_t *bitmap, size_t first, size_t n, uint8_t *bits)
{
    size_t j;
    for (j = 0; j < n; j++)
        bits[j] = (bitmap[(first + j) / 8] >> ((first + j) % 8)) & 1u;
}

int udnc_decode_chunk(const udnc_tensor *tensor, const uint8_t *raw, size_t size, uint64_t first,
                      size_t vectors, int dtype, size_t outputs, void *out)
{
    rebuild b;
    field_reader r;
    const uint8_t *bitmap = NULL;
    size_t start = 0, per_block, v0, fields_count;
    int32_t symbols[BLOCK];
    uint32_t indices[BLOCK], levels[BLOCK];
    uint8_t cosets[BLOCK], fields[BLOCK];
    double values[BLOCK];
    int status = open_rebuild(&b, tensor);
    if (status)
        return status;
    if (!known_dtype(dtype) || outputs > vectors * (size_t)b.dim ||
        (!tensor->codebook && tensor->symbol_limit > (UINT64_C(1) << 31)))
        return UDNC_UNSUPPORTED;
    if (tensor->lattice == UDNC_E8 && !tensor->codebook) {
        /* §6.2: the coset bitmap, its bits after the last vector zero */
        size_t bytes = (vectors + 7) / 8;
        if (size < bytes || (vectors % 8 && raw[bytes - 1] >> (vectors % 8)))
            return UDNC_INVALID;
        bitmap = raw;
        start = bytes;
    }
    fields_count = tensor->codebook ? vectors : vectors * (size_t)b.dim;
    status = open_fields(&r, raw, size, start, fields_count, tensor->bits);
    if (status)
        return status;
    per_block = block_vectors(b.dim);
    for (v0 = 0; v0 < vectors; v0 += per_block) {
        size_t count = vectors - v0 < per_block ? vectors - v0 : per_block;
        size_t values_count = count * (size_t)b.dim, offset = v0 * (size_t)b.dim;
        const uint32_t *dither = NULL;
        if (tensor->prng != UDNC_PRNG_NONE) {
            status = udnc_dither_levels(tensor->prng, tensor->seed, tensor->stream,
                                        (first + v0) * (uint64_t)b.dim, values_count, levels);
            if (status)
                return status;
            dither = levels;
        }
        if (b.cubic && dither && b.fine != 0.0 && dtype == UDNC_F32 && !tensor->codebook &&
            offset + values_count <= outputs) {
            const uint8_t *f = r.fields + offset / 8 * (size_t)r.bits;
            if (r.bits != 8) {
                unpack_fields(&r, offset, values_count, fields);
                f = fields;
            }
            status = cubic_binary32_block(&r, f, dither, values_count, tensor->symbol_limit,
                                          b.fine, (float *)out + offset);
            if (status)
                return status;
            continue;
        }
        if (tensor->codebook) {
            status = read_index_block(&r, v0, count, tensor->codebook_size, indices);
            if (status)
                return status;
            rebuild_codewords(&b, indices, dither, count, values);
        } else {
            status = read_symbol_block(&r, offset, values_count, tensor->symbol_limit, symbols);
            if (status)
                return status;
            if (bitmap)
                unpack_cosets(bitmap, v0, count, cosets);
            rebuild_symbols(&b, symbols, bitmap ? cosets : NULL, dither, count, values);
        }
        if (offset < outputs)
            store(dtype, values, outputs - offset < values_count ? outputs - offset : values_count,
                  out, offset);
    }
    return UDNC_OK;
}

/* ------------------------------------------------------------------------------------------
 * The reference encoder's trellis search (trellis.py; spec §6.8 informative)
 *
 * The reference labels a state s by its pending parity sums: the branch of parity p leaves s
 * under the quantizer q = s & 1 for rotr(s) XOR p·mask, so the predecessors of s' are
 * rotl(s') and rotl(s' XOR mask), both under the quantizer of the top bit of s'. Relabeled
 * r = a·s (polynomials over GF(2) modulo x^ν + 1, with a·mask = x^(ν−1), which exists for
 * every trellis of the format: their masks are prime to x^ν + 1), the predecessors of r' are
 * rotl(r') and rotl(r') XOR 1: the classic butterfly, states 2i and 2i + 1 leading to i and
 * i + S/2, which vectorizes. The path costs are the same binary32 numbers in another order;
 * only the final choice among equal costs depends on the order, and it scans the reference's
 * labels. */

/* a(x)·b(x) modulo x^ν + 1 over GF(2) */
static unsigned multiply_circulant(unsigned a, unsigned b, int memory)
{
    unsigned product = 0, all = (1u << memory) - 1;
    int k;
    for (k = 0; k < memory; k++)
        if ((a >> k) & 1u)
            product ^= ((b << k) | (b >> (memory - k))) & all;
    return product;
}

typedef struct {
    int memory;
    unsigned states, half;
    unsigned label[256];   /* the position r of the reference's state s */
    int32_t quantizer[256]; /* q of the branches into position r (the top bit of its s) */
} butterfly;

static int open_butterfly(butterfly *f, const udnc_trellis *trellis)
{
    unsigned a, s;
    f->memory = trellis->memory;
    if (f->memory < 2 || f->memory > 8 || trellis->mask >> (f->memory - 1))
        return UDNC_UNSUPPORTED;
    f->states = 1u << f->memory;
    f->half = f->states / 2;
    for (a = 1; a < f->states; a++)
        if (multiply_circulant(a, trellis->mask, f->memory) == f->half)
            break;
    if (a == f->states)
        return UDNC_UNSUPPORTED;
    for (s = 0; s < f->states; s++) {
        f->label[s] = multiply_circulant(a, s, f->memory);
        f->quantizer[f->label[s]] = (int32_t)(s >> (f->memory - 1));
    }
    return UDNC_OK;
}

/* One candidate magnitude m of a target under quantizer q (trellis.py `_candidates`): its
 * squared error plus rate, infinite for m < 0, and its symbol. Symbols and levels fit in 32
 * bits: the targets are below 2^30 (udnc_tcq_viterbi). */
static double candidate_cost(double magnitude, int32_t sign, int32_t q, int32_t m,
                             const double *rate, int32_t limit, int32_t *symbol)
{
    int32_t kept = m > 0 ? m : 0, level = 2 * kept - (q & (kept > 0)), index;
    double error = magnitude - (double)level;
    *symbol = sign * kept;
    index = *symbol < -limit ? -limit : *symbol > limit ? limit : *symbol;
    return (m >= 0 ? error * error : INFINITY) + rate[index + limit];
}

/* trellis.py `_candidates` and `_branches`: for each weight, quantizer q and parity p, the
 * least (|target| − ℓ)² + rate among the four magnitudes nearest the target, in binary64,
 * then rounded to binary32, and its symbol. The magnitudes m − 1 and m + 1 share a parity,
 * m and m + 2 the other; in each pair the second wins only where it is less (the
 * reference's order). Selects, no branches: the loop vectorizes. */
VECTOR_CLONES
static void branch_costs(const double *restrict targets, size_t count, const double *restrict rate,
                         int32_t limit, float *restrict cost, int32_t *restrict choice)
{
    size_t t;
    int32_t q;
    for (q = 0; q < 2; q++)
        for (t = 0; t < count; t++) {
            double magnitude = fabs(targets[t]);
            int32_t sign = targets[t] < 0 ? -1 : 1;
            /* floor of a non-negative value: the conversion truncates */
            int32_t nearest = (int32_t)((magnitude + (double)q) / 2.0);
            int32_t below_symbol, at_symbol, above_symbol, beyond_symbol; /* m − 1 … m + 2 */
            double below = candidate_cost(magnitude, sign, q, nearest - 1, rate, limit,
                                          &below_symbol);
            double at = candidate_cost(magnitude, sign, q, nearest, rate, limit, &at_symbol);
            double above = candidate_cost(magnitude, sign, q, nearest + 1, rate, limit,
                                          &above_symbol);
            double beyond = candidate_cost(magnitude, sign, q, nearest + 2, rate, limit,
                                           &beyond_symbol);
            int32_t above_wins = above < below, beyond_wins = beyond < at, odd = nearest & 1;
            double shifted = above_wins ? above : below, same = beyond_wins ? beyond : at;
            int32_t shifted_symbol = above_wins ? above_symbol : below_symbol;
            int32_t same_symbol = beyond_wins ? beyond_symbol : at_symbol;
            /* m and m + 2 have the parity of m; m ± 1 the other */
            cost[4 * t + 2 * q] = (float)(odd ? shifted : same);
            cost[4 * t + 2 * q + 1] = (float)(odd ? same : shifted);
            choice[4 * t + 2 * q] = odd ? shifted_symbol : same_symbol;
            choice[4 * t + 2 * q + 1] = odd ? same_symbol : shifted_symbol;
        }
}

/* One add-compare-select step over every state. States 2i and 2i + 1 lead to i and i + S/2,
 * both under the quantizer q(i); took[i] holds the decisions of both, bit 0 for i and bit 1
 * for i + S/2, each 1 where the odd branch wins. */
VECTOR_CLONES
static void butterfly_step(const butterfly *f, const float *restrict path,
                           const float *restrict cost, float *restrict next,
                           uint8_t *restrict took)
{
    const size_t half = f->half;
    const int32_t *restrict quantizer = f->quantizer;
    const float even0 = cost[0], odd0 = cost[1], even1 = cost[2], odd1 = cost[3];
    int32_t decided[128];
    size_t i;
    /* The odd branch wins where it is less (trellis.py: np.less(odd, even), then
     * np.minimum); the costs are never NaN, so "the minimum differs from the even branch"
     * says the same, and both vectorize to a min and a compare. Decisions in 32 bits first:
     * bytes would make the compiler take 16 pairs at a time and spill. */
    for (i = 0; i < half; i++) {
        float a = path[2 * i], b = path[2 * i + 1];
        float even = quantizer[i] ? even1 : even0, odd = quantizer[i] ? odd1 : odd0;
        float even_low = a + even, odd_low = b + odd;
        float even_high = b + even, odd_high = a + odd;
        float low = odd_low < even_low ? odd_low : even_low;
        float high = odd_high < even_high ? odd_high : even_high;
        next[i] = low;
        next[i + half] = high;
        decided[i] = (low != even_low) | (high != even_high) << 1;
    }
    for (i = 0; i < half; i++)
        took[i] = (uint8_t)decided[i];
}

static void renormalize_path(float *path, unsigned states)
{
    float least = path[0];
    unsigned s;
    for (s = 1; s < states; s++)
        least = path[s] < least ? path[s] : least;
    for (s = 0; s < states; s++)
        path[s] -= least;
}

VECTOR_CLONES
static void search_segment(const butterfly *f, size_t count, size_t renormalize,
                           const float *cost, const int32_t *choice, float *path, float *next,
                           uint8_t *took, int64_t *symbols)
{
    size_t t;
    unsigned s, position, best;
    for (s = 0; s < f->states; s++)
        path[s] = INFINITY;
    path[0] = 0.0f;
    for (t = 0; t < count; t++) {
        float *swap;
        butterfly_step(f, path, cost + 4 * t, next, took + t * f->half);
        swap = path;
        path = next;
        next = swap;
        if (t % renormalize == renormalize - 1)
            renormalize_path(path, f->states);
    }
    best = f->label[0];
    for (s = 1; s < f->states; s++) /* the first least cost in the reference's order */
        if (path[f->label[s]] < path[best])
            best = f->label[s];
    position = best;
    for (t = count; t-- > 0;) {
        unsigned pair = position & (f->half - 1), high = position >= f->half;
        unsigned parity = (took[t * f->half + pair] >> high) & 1u;
        unsigned q = (unsigned)f->quantizer[position];
        symbols[t] = choice[4 * t + 2 * q + parity];
        position = (((position << 1) | (position >> (f->memory - 1))) & (f->states - 1)) ^ parity;
    }
}

int udnc_tcq_viterbi(const double *targets, size_t rows, const double *rate, int64_t limit,
                     const udnc_trellis *trellis, size_t renormalize, int64_t *symbols)
{
    butterfly f;
    size_t segment = trellis->segment, j, row;
    float *cost, *path;
    int32_t *choice;
    uint8_t *took;
    int status = open_butterfly(&f, trellis);
    if (status)
        return status;
    if (segment == 0 || renormalize == 0 || limit < 0 || limit > 0x40000000)
        return UDNC_UNSUPPORTED;
    for (j = 0; j < rows * segment; j++) /* exact 32-bit symbols and levels (branch_costs) */
        if (!(fabs(targets[j]) < 0x1p30))
            return UDNC_UNSUPPORTED;
    for (j = 0; j < 2 * (size_t)limit + 1; j++) /* finite costs: no path cost is ever NaN */
        if (!(fabs(rate[j]) < 0x1p30))
            return UDNC_UNSUPPORTED;
    cost = malloc(segment * 4 * sizeof *cost);
    choice = malloc(segment * 4 * sizeof *choice);
    took = malloc(segment * f.half);
    path = malloc(2 * f.states * sizeof *path);
    if (!cost || !choice || !took || !path) {
        free(cost);
        free(choice);
        free(took);
        free(path);
        return UDNC_NO_MEMORY;
    }
    for (row = 0; row < rows; row++) {
        branch_costs(targets + row * segment, segment, rate, (int32_t)limit, cost, choice);
        search_segment(&f, segment, renormalize, cost, choice, path, path + f.states, took,
                       symbols + row * segment);
    }
    free(cost);
    free(choice);
    free(took);
    free(path);
    return UDNC_OK;
}

/* ------------------------------------------------------------------------------------------
 * Appendix A: closest points (lattices.py `closest`) */

/* numpy's rint: round half to even, for |x| < 2^52 by the exact 2^52 trick */
static double round_half_even(double x)
{
    const double two52 = 4503599627370496.0;
    double magnitude = fabs(x);
    if (!(magnitude < two52))
        return x;
    magnitude = (magnitude + two52) - two52;
    return copysign(magnitude, x);
}

/* D_n: round; with an odd sum, re-round the worst rounded coordinate (the first of equal
 * errors) the other way. */
static void closest_dn(const double *t, int n, int64_t *p)
{
    int64_t sum = 0;
    int k, worst = 0;
    double residual[8];
    for (k = 0; k < n; k++) {
        p[k] = (int64_t)round_half_even(t[k]);
        sum += p[k];
    }
    if (!(sum & 1))
        return;
    for (k = 0; k < n; k++)
        residual[k] = t[k] - (double)p[k];
    for (k = 1; k < n; k++)
        if (fabs(residual[k]) > fabs(residual[worst]))
            worst = k;
    p[worst] += residual[worst] >= 0 ? 1 : -1;
}

/* numpy's sum of 8 binary64 values (its pairwise summation) */
static double sum8(const double *e)
{
    return ((e[0] + e[1]) + (e[2] + e[3])) + ((e[4] + e[5]) + (e[6] + e[7]));
}

static int64_t floor_half(int64_t v)
{
    return (v - (v & 1)) / 2;
}

static void closest_e8(const double *t, uint8_t *coset, int64_t *s)
{
    double shifted_t[8], integer_error[8], shifted_error[8];
    int64_t integer[8], shifted[8];
    int k, use_shifted;
    closest_dn(t, 8, integer);
    for (k = 0; k < 8; k++)
        shifted_t[k] = t[k] - 0.5;
    closest_dn(shifted_t, 8, shifted);
    for (k = 0; k < 8; k++) {
        double a = t[k] - (double)integer[k];
        double b = (t[k] - (double)shifted[k]) - 0.5;
        integer_error[k] = a * a;
        shifted_error[k] = b * b;
    }
    use_shifted = sum8(shifted_error) < sum8(integer_error);
    *coset = (uint8_t)use_shifted;
    for (k = 0; k < 8; k++)
        s[k] = use_shifted ? shifted[k] : integer[k];
    s[7] = floor_half(s[7]);
}

static void closest_a2(const double *t, int64_t *s)
{
    const double pitch = 2.0 * SQRT3_OVER_2;
    double tx = t[0], ty = t[1];
    double even_x = round_half_even(tx), even_y = round_half_even(ty / pitch);
    double odd_x = round_half_even(tx - 0.5), odd_y = round_half_even((ty - SQRT3_OVER_2) / pitch);
    double ex = tx - even_x, ey = ty - even_y * pitch;
    double ox = tx - odd_x - 0.5, oy = ty - odd_y * pitch - SQRT3_OVER_2;
    double even_error = ex * ex + ey * ey, odd_error = ox * ox + oy * oy;
    int use_odd = odd_error < even_error;
    s[0] = (int64_t)(use_odd ? 2.0 * odd_x + 1.0 : 2.0 * even_x);
    s[1] = (int64_t)(use_odd ? odd_y : even_y);
}

int udnc_closest(int lattice, const double *targets, size_t vectors, uint8_t *cosets,
                 int64_t *symbols)
{
    int n = lattice_dim(lattice);
    size_t v, j;
    if (!n || lattice > UDNC_E8 || (lattice == UDNC_E8 && !cosets))
        return UDNC_UNSUPPORTED;
    for (j = 0; j < vectors * (size_t)n; j++)
        if (!(fabs(targets[j]) < 0x1p30)) /* the reference's integer conversions stay exact */
            return UDNC_UNSUPPORTED;
    if (lattice <= 8) {
        for (j = 0; j < vectors * (size_t)n; j++)
            symbols[j] = (int64_t)round_half_even(targets[j]);
        return UDNC_OK;
    }
    for (v = 0; v < vectors; v++) {
        const double *t = targets + v * n;
        int64_t *s = symbols + v * n;
        if (lattice == UDNC_A2) {
            closest_a2(t, s);
        } else if (lattice == UDNC_D4) {
            closest_dn(t, 4, s);
            s[3] = floor_half(s[3]);
        } else {
            closest_e8(t, cosets + v, s);
        }
    }
    return UDNC_OK;
}

/* ------------------------------------------------------------------------------------------
 * spec §7.1: rANS */

#define RANS_SCALE_BITS 15
#define RANS_TOTAL (1u << RANS_SCALE_BITS)
#define RANS_LOWER (UINT32_C(1) << 16)
#define RANS_MAX_LANES (1u << 15)
#define RANS_BYTES_PER_LANE (UINT64_C(1) << 16)

static unsigned read_u16(const uint8_t *p)
{
    return (unsigned)p[0] | (unsigned)p[1] << 8;
}

static uint32_t read_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int udnc_rans_decode(const uint8_t *stream, size_t size, uint8_t *out, size_t raw_length,
                     int *fault, size_t *where)
{
    uint8_t symbol_of[RANS_TOTAL];
    uint32_t step_of[RANS_TOTAL]; /* the slot's frequency << 16 | slot − start */
    uint32_t *state;
    const uint8_t *words;
    size_t table_end, states_end, word_count, used = 0, first, least, i;
    unsigned lanes, last, b, total = 0;
    int status = UDNC_OK;
    *fault = UDNC_RANS_HEADER;
    *where = 0;
    if (raw_length == 0)
        return size == 0 ? UDNC_OK : UDNC_INVALID;
    if (size < 3)
        return UDNC_INVALID;
    lanes = read_u16(stream);
    last = stream[2];
    least = (size_t)((raw_length + RANS_BYTES_PER_LANE - 1) / RANS_BYTES_PER_LANE);
    if (lanes < least || lanes > RANS_MAX_LANES || lanes == 0)
        return UDNC_INVALID;
    table_end = 3 + 2 * ((size_t)last + 1);
    states_end = table_end + 4 * (size_t)lanes;
    if (size < states_end || (size - states_end) % 2)
        return UDNC_INVALID;
    for (b = 0; b <= last; b++)
        total += read_u16(stream + 3 + 2 * b);
    if (total != RANS_TOTAL)
        return UDNC_INVALID;
    total = 0;
    for (b = 0; b <= last; b++) {
        unsigned f = read_u16(stream + 3 + 2 * b), k;
        for (k = 0; k < f; k++) {
            symbol_of[total + k] = (uint8_t)b;
            step_of[total + k] = (uint32_t)f << 16 | k;
        }
        total += f;
    }
    state = malloc(lanes * sizeof *state);
    if (!state)
        return UDNC_NO_MEMORY;
    for (i = 0; i < lanes; i++) {
        state[i] = read_u32(stream + table_end + 4 * i);
        if (state[i] < RANS_LOWER)
            status = UDNC_INVALID;
    }
    words = stream + states_end;
    word_count = (size - states_end) / 2;
    for (first = 0; first < raw_length && !status; first += lanes) {
        size_t count = raw_length - first < lanes ? raw_length - first : lanes, k;
        for (k = 0; k < count; k++) {
            uint32_t x = state[k], slot = x & (RANS_TOTAL - 1), step = step_of[slot];
            out[first + k] = symbol_of[slot];
            x = (step >> 16) * (x >> RANS_SCALE_BITS) + (step & 0xFFFFu);
            if (x < RANS_LOWER) {
                if (used == word_count) {
                    status = UDNC_INVALID;
                    *fault = UDNC_RANS_ENDS_EARLY;
                    *where = first + count;
                    break;
                }
                x = x << 16 | read_u16(words + 2 * used++);
            }
            state[k] = x;
        }
    }
    if (!status && used != word_count) {
        status = UDNC_INVALID;
        *fault = UDNC_RANS_WORDS_LEFT;
        *where = word_count - used;
    }
    for (i = 0; i < lanes && !status; i++)
        if (state[i] != RANS_LOWER) {
            status = UDNC_INVALID;
            *fault = UDNC_RANS_END_STATE;
        }
    free(state);
    return status;
}

size_t udnc_rans_bound(size_t size, unsigned lanes)
{
    return 3 + 2 * 256 + 4 * (size_t)lanes + 2 * size;
}

static void write_u16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

int udnc_rans_encode(const uint8_t *data, size_t size, unsigned lanes, const uint16_t *freq,
                     uint8_t *out, size_t *written)
{
    uint32_t start[256], *state;
    uint16_t *words, *step_words;
    size_t steps, step, end, i, total = 0;
    unsigned last = 0, b;
    uint8_t *p;
    *written = 0;
    if (size == 0)
        return UDNC_OK;
    if (lanes == 0 || lanes > RANS_MAX_LANES)
        return UDNC_UNSUPPORTED;
    for (b = 0; b < 256; b++) {
        start[b] = (uint32_t)total;
        total += freq[b];
        if (freq[b])
            last = b;
    }
    if (total != RANS_TOTAL)
        return UDNC_UNSUPPORTED;
    for (i = 0; i < size; i++)
        if (!freq[data[i]])
            return UDNC_UNSUPPORTED;
    state = malloc(lanes * sizeof *state);
    words = malloc(size * sizeof *words); /* at most one word leaves a lane per byte */
    step_words = malloc(lanes * sizeof *step_words);
    if (!state || !words || !step_words) {
        free(state);
        free(words);
        free(step_words);
        return UDNC_NO_MEMORY;
    }
    for (i = 0; i < lanes; i++)
        state[i] = RANS_LOWER;
    /* bytes in reverse order, step by step; the words of a step keep their lane order and
     * the steps are stored in the reverse of the order emitted (rans.py `encode`) */
    steps = (size + lanes - 1) / lanes;
    end = size;
    for (step = steps; step-- > 0;) {
        size_t count = size - step * lanes < lanes ? size - step * lanes : lanes, k, emitted = 0;
        for (k = 0; k < count; k++) {
            uint8_t byte = data[step * lanes + k];
            uint32_t f = freq[byte], x = state[k];
            if ((uint64_t)x >= (uint64_t)f << (16 + 1)) { /* 2^32 for f = 2^15 */
                step_words[emitted++] = (uint16_t)(x & 0xFFFFu);
                x >>= 16;
            }
            state[k] = ((x / f) << RANS_SCALE_BITS) + x % f + start[byte];
        }
        end -= emitted;
        memcpy(words + end, step_words, emitted * sizeof *words);
    }
    p = out;
    write_u16(p, lanes);
    p[2] = (uint8_t)last;
    p += 3;
    for (b = 0; b <= last; b++, p += 2)
        write_u16(p, freq[b]);
    for (i = 0; i < lanes; i++, p += 4) {
        write_u16(p, state[i] & 0xFFFFu);
        write_u16(p + 2, state[i] >> 16);
    }
    for (i = end; i < size; i++, p += 2)
        write_u16(p, words[i]);
    *written = (size_t)(p - out);
    free(state);
    free(words);
    free(step_words);
    return UDNC_OK;
}
