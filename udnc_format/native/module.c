/* udnc_format._native: the CPython face of kernels.c, over the buffer protocol (no numpy
 * headers). Each function takes its arrays as C-contiguous buffers of the element type the
 * facade (udnc_format/coding/kernels.py) gives them, runs its kernel without the GIL, and returns
 * the kernel's status (0: done; 1: the input breaks a rule of the spec; 2: unsupported
 * parameters), or bytes / None for the kernels that make bytes. A buffer of the wrong size is
 * a ValueError: a bug of the caller, not of the input. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "kernels.h"

typedef struct {
    Py_buffer view;
    int held;
} buffer;

/* A buffer of `obj` (None gives an empty one when `optional`). */
static int take(PyObject *obj, buffer *b, int writable, int optional, const char *name)
{
    b->held = 0;
    b->view.buf = NULL;
    b->view.len = 0;
    if (obj == Py_None && optional)
        return 0;
    if (PyObject_GetBuffer(obj, &b->view, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "%s: expected a contiguous buffer", name);
        return -1;
    }
    b->held = 1;
    return 0;
}

static void give_back(buffer *b)
{
    if (b->held)
        PyBuffer_Release(&b->view);
    b->held = 0;
}

/* The element count of a buffer of `itemsize`-byte elements, or -1 (ValueError) when the
 * buffer is not a whole number of them or does not hold `expected` (unless that is -1). */
static Py_ssize_t elements(const buffer *b, Py_ssize_t itemsize, Py_ssize_t expected,
                           const char *name)
{
    Py_ssize_t count = b->view.len / itemsize;
    if (b->view.len % itemsize || (expected >= 0 && count != expected)) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd elements of %zd bytes", name,
                     b->view.len, expected, itemsize);
        return -1;
    }
    return count;
}

static PyObject *status_of(int status)
{
    if (status == UDNC_NO_MEMORY)
        return PyErr_NoMemory();
    return PyLong_FromLong(status);
}

static PyObject *dither_levels(PyObject *self, PyObject *args)
{
    int prng, status;
    unsigned long long seed, start;
    unsigned int stream;
    PyObject *out_obj;
    buffer out;
    Py_ssize_t count;
    (void)self;
    if (!PyArg_ParseTuple(args, "iKIKO", &prng, &seed, &stream, &start, &out_obj))
        return NULL;
    if (take(out_obj, &out, 1, 0, "out") < 0)
        return NULL;
    count = elements(&out, 4, -1, "out");
    if (count < 0) {
        give_back(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = udnc_dither_levels(prng, seed, stream, start, (size_t)count, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&out);
    return status_of(status);
}

/* read_values / read_symbols (data, start, count, bits, limit, out) */
static PyObject *read_fields(PyObject *args, int symbols)
{
    PyObject *data_obj, *out_obj;
    Py_ssize_t start, count;
    int bits, status;
    unsigned long long limit;
    buffer data, out;
    if (!PyArg_ParseTuple(args, "OnniKO", &data_obj, &start, &count, &bits, &limit, &out_obj))
        return NULL;
    if (start < 0 || count < 0) {
        PyErr_SetString(PyExc_ValueError, "start and count must not be negative");
        return NULL;
    }
    if (take(data_obj, &data, 0, 0, "data") < 0)
        return NULL;
    if (take(out_obj, &out, 1, 0, "out") < 0) {
        give_back(&data);
        return NULL;
    }
    if (elements(&out, 8, count, "out") < 0) {
        give_back(&data);
        give_back(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (symbols)
        status = udnc_read_symbols(data.view.buf, (size_t)data.view.len, (size_t)start,
                                   (size_t)count, bits, limit, out.view.buf);
    else
        status = udnc_read_values(data.view.buf, (size_t)data.view.len, (size_t)start,
                                  (size_t)count, bits, limit, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&data);
    give_back(&out);
    return status_of(status);
}

static PyObject *read_values(PyObject *self, PyObject *args)
{
    (void)self;
    return read_fields(args, 0);
}

static PyObject *read_symbols(PyObject *self, PyObject *args)
{
    (void)self;
    return read_fields(args, 1);
}

/* serialize(values, wide, bits) -> bytes, or None when a value is beyond the escapes */
static PyObject *serialize(PyObject *self, PyObject *args)
{
    PyObject *values_obj, *result;
    int wide, bits, status;
    buffer values;
    Py_ssize_t count;
    size_t size = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "Opi", &values_obj, &wide, &bits))
        return NULL;
    if (take(values_obj, &values, 0, 0, "values") < 0)
        return NULL;
    count = elements(&values, wide ? 8 : 4, -1, "values");
    if (count < 0) {
        give_back(&values);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = udnc_serialized_size(values.view.buf, wide, (size_t)count, bits, &size);
    Py_END_ALLOW_THREADS
    if (status) {
        give_back(&values);
        Py_RETURN_NONE;
    }
    result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (result) {
        char *target = PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        udnc_serialize(values.view.buf, wide, (size_t)count, bits, (uint8_t *)target, size);
        Py_END_ALLOW_THREADS
    }
    give_back(&values);
    return result;
}

static PyObject *tcq_levels(PyObject *self, PyObject *args)
{
    PyObject *symbols_obj, *out_obj;
    udnc_trellis trellis;
    Py_ssize_t segment, count;
    buffer symbols, out;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiInO", &symbols_obj, &trellis.memory, &trellis.mask, &segment,
                          &out_obj))
        return NULL;
    if (segment <= 0 || trellis.memory < 1 || trellis.memory > 16) {
        PyErr_SetString(PyExc_ValueError, "bad trellis");
        return NULL;
    }
    trellis.segment = (size_t)segment;
    if (take(symbols_obj, &symbols, 0, 0, "symbols") < 0)
        return NULL;
    if (take(out_obj, &out, 1, 0, "out") < 0) {
        give_back(&symbols);
        return NULL;
    }
    count = elements(&symbols, 8, -1, "symbols");
    if (count < 0 || elements(&out, 8, count, "out") < 0) {
        give_back(&symbols);
        give_back(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    udnc_tcq_levels(symbols.view.buf, (size_t)count, &trellis, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&symbols);
    give_back(&out);
    return status_of(UDNC_OK);
}

/* tcq_viterbi(targets, rate, limit, memory, mask, segment, renormalize, out) */
static PyObject *tcq_viterbi(PyObject *self, PyObject *args)
{
    PyObject *targets_obj, *rate_obj, *out_obj;
    long long limit;
    udnc_trellis trellis;
    Py_ssize_t segment, renormalize, count, rates;
    buffer targets, rate, out;
    int status;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOLiInnO", &targets_obj, &rate_obj, &limit, &trellis.memory,
                          &trellis.mask, &segment, &renormalize, &out_obj))
        return NULL;
    if (segment <= 0 || renormalize <= 0 || limit < 0) {
        PyErr_SetString(PyExc_ValueError, "bad segment, renormalization or limit");
        return NULL;
    }
    trellis.segment = (size_t)segment;
    if (take(targets_obj, &targets, 0, 0, "targets") < 0)
        return NULL;
    if (take(rate_obj, &rate, 0, 0, "rate") < 0) {
        give_back(&targets);
        return NULL;
    }
    if (take(out_obj, &out, 1, 0, "out") < 0) {
        give_back(&targets);
        give_back(&rate);
        return NULL;
    }
    count = elements(&targets, 8, -1, "targets");
    rates = elements(&rate, 8, 2 * limit + 1, "rate");
    if (count < 0 || rates < 0 || elements(&out, 8, count, "out") < 0 || count % segment) {
        if (count >= 0 && rates >= 0 && !PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "targets must be whole segments");
        give_back(&targets);
        give_back(&rate);
        give_back(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = udnc_tcq_viterbi(targets.view.buf, (size_t)(count / segment), rate.view.buf,
                              (int64_t)limit, &trellis, (size_t)renormalize, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&targets);
    give_back(&rate);
    give_back(&out);
    return status_of(status);
}

/* closest(lattice, dim, targets, cosets or None, symbols) */
static PyObject *closest(PyObject *self, PyObject *args)
{
    PyObject *targets_obj, *cosets_obj, *symbols_obj;
    int lattice, dim, status;
    buffer targets, cosets, symbols;
    Py_ssize_t count;
    (void)self;
    if (!PyArg_ParseTuple(args, "iiOOO", &lattice, &dim, &targets_obj, &cosets_obj, &symbols_obj))
        return NULL;
    if (dim < 1 || dim > 8) {
        PyErr_SetString(PyExc_ValueError, "dim must be 1 to 8");
        return NULL;
    }
    if (take(targets_obj, &targets, 0, 0, "targets") < 0)
        return NULL;
    if (take(cosets_obj, &cosets, 1, 1, "cosets") < 0) {
        give_back(&targets);
        return NULL;
    }
    if (take(symbols_obj, &symbols, 1, 0, "symbols") < 0) {
        give_back(&targets);
        give_back(&cosets);
        return NULL;
    }
    count = elements(&targets, 8 * dim, -1, "targets");
    if (count < 0 || elements(&symbols, 8 * dim, count, "symbols") < 0 ||
        (cosets.held && elements(&cosets, 1, count, "cosets") < 0)) {
        give_back(&targets);
        give_back(&cosets);
        give_back(&symbols);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = udnc_closest(lattice, targets.view.buf, (size_t)count, cosets.view.buf,
                          symbols.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&targets);
    give_back(&cosets);
    give_back(&symbols);
    return status_of(status);
}

/* The lattice, dither, scale and trellis parameters shared by reconstruct and decode_chunk:
 * (lattice, bits, prng, seed, stream, scale, symbol_limit, codebook or None, codebook_size,
 * memory, mask, segment). */
typedef struct {
    int lattice, bits, prng, memory;
    unsigned long long seed, symbol_limit;
    unsigned int stream, mask;
    double scale;
    PyObject *codebook;
    Py_ssize_t codebook_size, segment;
} tensor_args;

#define TENSOR_FORMAT "iiiKIdKOniIn"
#define TENSOR_ARGS(a)                                                                        \
    &(a).lattice, &(a).bits, &(a).prng, &(a).seed, &(a).stream, &(a).scale, &(a).symbol_limit, \
        &(a).codebook, &(a).codebook_size, &(a).memory, &(a).mask, &(a).segment

/* The kernel's parameters, holding the codebook's buffer (K × dim binary64) if there is one. */
static int make_tensor(const tensor_args *a, int dim, udnc_tensor *t, buffer *codebook)
{
    if (a->segment < 0 || a->codebook_size < 0) {
        PyErr_SetString(PyExc_ValueError, "bad segment or codebook size");
        return -1;
    }
    if (take(a->codebook, codebook, 0, 1, "codebook") < 0)
        return -1;
    if (codebook->held && elements(codebook, 8 * dim, a->codebook_size, "codebook") < 0) {
        give_back(codebook);
        return -1;
    }
    t->lattice = a->lattice;
    t->bits = a->bits;
    t->prng = a->prng;
    t->seed = a->seed;
    t->stream = a->stream;
    t->scale = a->scale;
    t->symbol_limit = a->symbol_limit;
    t->codebook = codebook->view.buf;
    t->codebook_size = (size_t)a->codebook_size;
    t->trellis.memory = a->memory;
    t->trellis.mask = a->mask;
    t->trellis.segment = (size_t)a->segment;
    return 0;
}

/* reconstruct(tensor..., dim, symbols, cosets or None, levels or None, out) */
static PyObject *reconstruct(PyObject *self, PyObject *args)
{
    tensor_args a;
    udnc_tensor t;
    PyObject *symbols_obj, *cosets_obj, *levels_obj, *out_obj;
    Py_ssize_t count;
    int dim, status;
    buffer codebook, symbols, cosets, levels, out;
    (void)self;
    if (!PyArg_ParseTuple(args, TENSOR_FORMAT "iOOOO", TENSOR_ARGS(a), &dim, &symbols_obj,
                          &cosets_obj, &levels_obj, &out_obj))
        return NULL;
    if (dim < 1 || dim > 8) {
        PyErr_SetString(PyExc_ValueError, "dim must be 1 to 8");
        return NULL;
    }
    if (make_tensor(&a, dim, &t, &codebook) < 0)
        return NULL;
    symbols.held = cosets.held = levels.held = out.held = 0;
    if (take(symbols_obj, &symbols, 0, 0, "symbols") < 0 ||
        take(cosets_obj, &cosets, 0, 1, "cosets") < 0 ||
        take(levels_obj, &levels, 0, 1, "levels") < 0 || take(out_obj, &out, 1, 0, "out") < 0)
        goto fail;
    count = elements(&symbols, 8 * dim, -1, "symbols");
    if (count < 0 || elements(&out, 8 * dim, count, "out") < 0 ||
        (cosets.held && elements(&cosets, 1, count, "cosets") < 0) ||
        (levels.held && elements(&levels, 4 * dim, count, "levels") < 0))
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    status = udnc_reconstruct(&t, symbols.view.buf, cosets.view.buf, levels.view.buf,
                              (size_t)count, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&codebook);
    give_back(&symbols);
    give_back(&cosets);
    give_back(&levels);
    give_back(&out);
    return status_of(status);
fail:
    give_back(&codebook);
    give_back(&symbols);
    give_back(&cosets);
    give_back(&levels);
    give_back(&out);
    return NULL;
}

static Py_ssize_t itemsize_of(int dtype)
{
    switch (dtype) {
    case UDNC_F16:
    case UDNC_BF16:
        return 2;
    case UDNC_F32:
        return 4;
    case UDNC_F64:
        return 8;
    default:
        return 0;
    }
}

/* decode_chunk(tensor..., dim, raw, first, vectors, dtype, out) */
static PyObject *decode_chunk(PyObject *self, PyObject *args)
{
    tensor_args a;
    udnc_tensor t;
    PyObject *raw_obj, *out_obj;
    Py_ssize_t vectors, outputs;
    unsigned long long first;
    int dim, dtype, status;
    buffer codebook, raw, out;
    (void)self;
    if (!PyArg_ParseTuple(args, TENSOR_FORMAT "iOKniO", TENSOR_ARGS(a), &dim, &raw_obj, &first,
                          &vectors, &dtype, &out_obj))
        return NULL;
    if (dim < 1 || dim > 8 || vectors < 0 || !itemsize_of(dtype)) {
        PyErr_SetString(PyExc_ValueError, "bad dim, vector count or dtype");
        return NULL;
    }
    if (make_tensor(&a, dim, &t, &codebook) < 0)
        return NULL;
    raw.held = out.held = 0;
    if (take(raw_obj, &raw, 0, 0, "raw") < 0 || take(out_obj, &out, 1, 0, "out") < 0)
        goto fail;
    outputs = elements(&out, itemsize_of(dtype), -1, "out");
    if (outputs < 0)
        goto fail;
    Py_BEGIN_ALLOW_THREADS
    status = udnc_decode_chunk(&t, raw.view.buf, (size_t)raw.view.len, first, (size_t)vectors,
                               dtype, (size_t)outputs, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&codebook);
    give_back(&raw);
    give_back(&out);
    return status_of(status);
fail:
    give_back(&codebook);
    give_back(&raw);
    give_back(&out);
    return NULL;
}

/* round(values, dtype, out) */
static PyObject *round_values(PyObject *self, PyObject *args)
{
    PyObject *values_obj, *out_obj;
    int dtype, status;
    buffer values, out;
    Py_ssize_t count;
    (void)self;
    if (!PyArg_ParseTuple(args, "OiO", &values_obj, &dtype, &out_obj))
        return NULL;
    if (!itemsize_of(dtype)) {
        PyErr_SetString(PyExc_ValueError, "bad dtype");
        return NULL;
    }
    if (take(values_obj, &values, 0, 0, "values") < 0)
        return NULL;
    if (take(out_obj, &out, 1, 0, "out") < 0) {
        give_back(&values);
        return NULL;
    }
    count = elements(&values, 8, -1, "values");
    if (count < 0 || elements(&out, itemsize_of(dtype), count, "out") < 0) {
        give_back(&values);
        give_back(&out);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = udnc_round(values.view.buf, (size_t)count, dtype, out.view.buf);
    Py_END_ALLOW_THREADS
    give_back(&values);
    give_back(&out);
    return status_of(status);
}

/* rans_decode(stream, raw_length) -> bytes; for a stream that breaks §7.1, None (a rule of its
 * header: the reference names it at once) or (fault, where) of a rule of its body */
static PyObject *rans_decode(PyObject *self, PyObject *args)
{
    PyObject *stream_obj, *result;
    Py_ssize_t raw_length;
    buffer stream;
    int status, fault;
    size_t where;
    (void)self;
    if (!PyArg_ParseTuple(args, "On", &stream_obj, &raw_length))
        return NULL;
    if (raw_length < 0) {
        PyErr_SetString(PyExc_ValueError, "raw_length must not be negative");
        return NULL;
    }
    if (take(stream_obj, &stream, 0, 0, "stream") < 0)
        return NULL;
    result = PyBytes_FromStringAndSize(NULL, raw_length);
    if (!result) {
        give_back(&stream);
        return NULL;
    }
    {
        uint8_t *target = (uint8_t *)PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        status = udnc_rans_decode(stream.view.buf, (size_t)stream.view.len, target,
                                  (size_t)raw_length, &fault, &where);
        Py_END_ALLOW_THREADS
    }
    give_back(&stream);
    if (status) {
        Py_DECREF(result);
        if (status == UDNC_NO_MEMORY)
            return PyErr_NoMemory();
        if (fault == UDNC_RANS_HEADER)
            Py_RETURN_NONE;
        return Py_BuildValue("(in)", fault, (Py_ssize_t)where);
    }
    return result;
}

/* rans_encode(data, lanes, freq) -> bytes, or None for frequencies it cannot use */
static PyObject *rans_encode(PyObject *self, PyObject *args)
{
    PyObject *data_obj, *freq_obj, *result = NULL;
    unsigned int lanes;
    buffer data, freq;
    uint8_t *target;
    size_t written = 0;
    int status;
    (void)self;
    if (!PyArg_ParseTuple(args, "OIO", &data_obj, &lanes, &freq_obj))
        return NULL;
    if (take(data_obj, &data, 0, 0, "data") < 0)
        return NULL;
    if (take(freq_obj, &freq, 0, 0, "freq") < 0) {
        give_back(&data);
        return NULL;
    }
    if (elements(&freq, 2, 256, "freq") < 0) {
        give_back(&data);
        give_back(&freq);
        return NULL;
    }
    target = PyMem_RawMalloc(udnc_rans_bound((size_t)data.view.len, lanes));
    if (!target) {
        give_back(&data);
        give_back(&freq);
        return PyErr_NoMemory();
    }
    Py_BEGIN_ALLOW_THREADS
    status = udnc_rans_encode(data.view.buf, (size_t)data.view.len, lanes, freq.view.buf, target,
                              &written);
    Py_END_ALLOW_THREADS
    give_back(&data);
    give_back(&freq);
    if (status == UDNC_NO_MEMORY)
        PyErr_NoMemory();
    else if (status)
        result = Py_NewRef(Py_None);
    else
        result = PyBytes_FromStringAndSize((const char *)target, (Py_ssize_t)written);
    PyMem_RawFree(target);
    return result;
}

static PyMethodDef methods[] = {
    {"dither_levels", dither_levels, METH_VARARGS, "spec §5: 24-bit dither levels"},
    {"read_values", read_values, METH_VARARGS, "spec §6.2: unsigned values of a chunk"},
    {"read_symbols", read_symbols, METH_VARARGS, "spec §6.2: signed symbols of a chunk"},
    {"serialize", serialize, METH_VARARGS, "spec §6.2: packed fields and escapes"},
    {"tcq_levels", tcq_levels, METH_VARARGS, "spec §6.8: trellis levels"},
    {"tcq_viterbi", tcq_viterbi, METH_VARARGS, "one pass of the trellis search"},
    {"closest", closest, METH_VARARGS, "appendix A: closest lattice points"},
    {"reconstruct", reconstruct, METH_VARARGS, "spec §6.3-6.5: values x * s"},
    {"decode_chunk", decode_chunk, METH_VARARGS, "spec §6.2-6.5: a symbol chunk decoded"},
    {"round", round_values, METH_VARARGS, "spec §6.5: binary64 to the output dtype"},
    {"rans_decode", rans_decode, METH_VARARGS, "spec §7.1: rANS decoding"},
    {"rans_encode", rans_encode, METH_VARARGS, "spec §7.1: rANS encoding"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "udnc_format._native",
    "The native kernels of udnc (udnc_format/native); use them through udnc_format.coding.kernels.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__native(void)
{
    PyObject *m = PyModule_Create(&module);
    if (!m)
        return NULL;
    if (PyModule_AddIntConstant(m, "OK", UDNC_OK) < 0 ||
        PyModule_AddIntConstant(m, "INVALID", UDNC_INVALID) < 0 ||
        PyModule_AddIntConstant(m, "UNSUPPORTED", UDNC_UNSUPPORTED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
