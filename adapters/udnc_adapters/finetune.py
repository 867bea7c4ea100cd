"""Fine-tuning of the shared quantized vectors, in torch: the third stage of universal DNN
compression (Choi, El-Khamy, Lee, arXiv 1802.02271).

After randomized lattice quantization, every weight vector of a tensor is one of K distinct
lattice points; the paper fine-tunes these *shared quantized vectors* (the codewords) with the
average gradient of the loss over the weights mapped to each, the dither staying fixed.
:class:`QuantizedModel` wraps a model so that an ordinary training loop does exactly that::

    # m.udnc of a lattice with shared vectors (udnc compress --lattice Z1, not the default
    # trellis); or no file and lattice="Z1", sqnr=4
    qm = QuantizedModel(model, "m.udnc", train_unquantized=True)
    optimizer = torch.optim.Adam(qm.parameters(), lr=3e-3)  # the codewords and the biases
    for x, y in loader:
        optimizer.zero_grad()
        loss_fn(qm(x), y).backward()
        optimizer.step()
    qm.save_file("finetuned.udnc")  # codebook mode (spec §6.6): decodes to the weights qm uses

One epoch of Adam at lr 3e-3 with the biases is the schedule that helped at every coarse
starting point of a pretrained CNN (bench/finetune/mnist_cnn.py); lr 1e-2 on the codewords
alone lowered its accuracy at 3 of 7. For E8 and D4 a codebook file is much larger than the
plain file (every distinct point is a float32 codeword): see ``min_count`` and the README.

Each lattice-coded tensor gets one ``nn.Parameter`` of shape (K, n): its codewords in the
native units of the lattice (spec §6.1, as the file stores them, float32), a buffer of codeword
indices (one per vector) and the fixed dither u. The weights the model runs with are the
decoder's formula of spec §6.6, ``ŵ = s·(codeword[index] − u)``, computed in binary64 and
rounded to the tensor's dtype as a decoder rounds (spec §6.5): ``qm.save_file`` writes a file
that ``udnc_format.load_file`` decodes to these weights bit for bit.

**Average gradient.** Through the gather, autograd gives each codeword coordinate the *sum* of
s·∂L/∂ŵ over the weights mapped to it; :class:`QuantizedModel` divides it by their number (an
identity op on the codewords whose backward divides by the counts), so that a frequent codeword
(near zero, used by most weights) does not move thousands of times faster than a rare one. With
``average_gradients=False`` the gradient is the plain sum, the true gradient of the loss.
Optimizers that normalize per coordinate (Adam, RMSprop) are almost indifferent to that fixed
per-codeword factor; plain SGD is not, and its learning rate is in lattice units (a step of
``lr·g`` moves a weight by ``s·lr·g``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from udnc_format import UDNCFile
from udnc_format.codec.encoder import (
    EncodedTensor,
    EncodeOptions,
    dither_stream_for,
    encode_quantized,
    encode_tensor,
    quantize_tensor,
)
from udnc_format.codec.writer import write_file
from udnc_format.coding.lattices import get_lattice
from udnc_format.coding.quantized import QuantizedTensor, centred_dither
from udnc_format.format.constants import MAX_CODEBOOK_SIZE, Dtype, Prng
from udnc_format.format.errors import InvalidInputError

from ._common import check_fit, import_framework
from .torch import from_numpy, to_numpy

import_framework("torch", "fine-tuning", "torch")  # AdapterError naming the extra if missing
import torch  # noqa: E402
from torch import nn  # noqa: E402

Source = str | os.PathLike[str] | EncodeOptions

# spec §6.5: the output dtypes of a lattice-coded tensor, as torch holds them.
_TORCH_DTYPES = {
    Dtype.F16: torch.float16,
    Dtype.BF16: torch.bfloat16,
    Dtype.F32: torch.float32,
    Dtype.F64: torch.float64,
}


class _AverageGradient(torch.autograd.Function):
    """The identity on the codewords; backward divides their gradient by ``counts`` (K, n),
    the number of weights mapped to each codeword coordinate: the sum over those weights that
    autograd gives through the gather becomes their average."""

    @staticmethod
    def forward(ctx: Any, codewords: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(counts)
        return codewords.view_as(codewords)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (counts,) = ctx.saved_tensors
        return grad / counts, None


@dataclass(frozen=True)
class _Layout:
    """What stays fixed of one fine-tuned tensor: everything of its QuantizedTensor but the
    codewords, and the model's names for it (the first is its own, the rest tied aliases)."""

    names: tuple[str, ...]
    quantized: QuantizedTensor  # codebook: the initial codewords
    torch_dtype: torch.dtype  # the model's dtype for the tensor

    @property
    def name(self) -> str:
        return self.names[0]


def point_codebook(q: QuantizedTensor, name: str) -> QuantizedTensor:
    """Lattice symbols to codebook mode: the distinct lattice points of the tensor as float32
    codewords and each vector's index. For Z^n, D4 and E8 the points are exact in float32 and
    the tensor decodes to the same bits as before (spec §6.4, §6.6); A2's points (X/2, Y·√3/2)
    are rounded to float32, which moves its weights by at most 2^-24·s·|Y|·√3/2."""
    if q.codebook is not None:
        return q
    assert q.symbols is not None
    points = q.codec.points(q.cosets, q.symbols.astype(np.int64))
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    if unique.shape[0] > MAX_CODEBOOK_SIZE:
        raise InvalidInputError(
            f"tensor {name!r}: {unique.shape[0]} distinct vectors exceed the codebook limit "
            f"{MAX_CODEBOOK_SIZE}; use a larger step"
        )
    return dataclasses.replace(
        q,
        cosets=None,
        symbols=None,
        codebook=unique.astype(np.float32),
        indices=inverse.reshape(-1).astype(np.int32),
    )


def by_frequency(q: QuantizedTensor) -> QuantizedTensor:
    """The codebook reordered, most used codeword first (ties in their order), the indices
    renumbered to match: the decoded weights do not change, small indices become frequent."""
    assert q.codebook is not None and q.indices is not None
    counts = np.bincount(q.indices, minlength=len(q.codebook))
    order = np.argsort(-counts, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return dataclasses.replace(
        q, codebook=q.codebook[order], indices=rank[q.indices].astype(np.int32)
    )


def codeword_counts(q: QuantizedTensor) -> np.ndarray:
    """(K, n): how many kept weights each codeword coordinate reconstructs (the padding
    coordinates of the last vector, spec §6.1, reconstruct none)."""
    assert q.codebook is not None and q.indices is not None
    size, n = q.codebook.shape
    counts = np.empty((size, n), dtype=np.int64)
    for k in range(n):
        padded = k >= n - (q.vectors * n - q.kept)  # coordinate k of the last vector
        vectors = q.vectors - 1 if padded else q.vectors
        counts[:, k] = np.bincount(q.indices[:vectors], minlength=size)
    return counts


def _dither(q: QuantizedTensor) -> np.ndarray:
    """u (V, n) in binary64: the decoder's dither (spec §5.3, §6.6)."""
    centred = centred_dither(q, 0, q.vectors)
    assert centred is not None
    return q.codec.offsets(centred)


def _own_copy(model: nn.Module) -> nn.Module:
    """A deep copy of the caller's model, for :class:`QuantizedModel` to load, train and change
    while the caller's stays as it was (the adapters never change their inputs)."""
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"expected a torch.nn.Module, got {type(model).__name__}")
    try:
        return copy.deepcopy(model)
    except Exception as exc:  # deepcopy raises whatever a module's attributes raise
        raise InvalidInputError(
            f"{type(model).__name__} cannot be copied ({type(exc).__name__}: {exc}): "
            "QuantizedModel trains a copy of the model, so that the model given stays unchanged"
        ) from exc


def _round(values: torch.Tensor, dtype: Dtype) -> torch.Tensor:
    """spec §6.5: binary64 to binary32 (round to nearest even), then to a narrower float."""
    if dtype is Dtype.F64:
        return values
    single = values.to(torch.float32)
    return single if dtype is Dtype.F32 else single.to(_TORCH_DTYPES[dtype])


class QuantizedModel(nn.Module):
    """A model whose lattice-coded weights are functions of trainable shared quantized vectors.

    ``source`` is either a .udnc file holding the model's weights: its lattice-coded tensors
    give the codewords (their distinct lattice points, or the file's codebook if it has one)
    with the file's scale, dither and mask, and its lossless tensors are copied into the model
    (so that ``qm`` starts as the model ``udnc_format.load_file`` decodes); or
    :class:`EncodeOptions`, or instead the keyword options of ``udnc_format.save`` (e.g.
    ``lattice="E8", step=0.05``): the model's current weights are then quantized as the
    reference encoder quantizes its ``state_dict`` (same steps, dither streams and masks;
    ``codebook=True`` starts from its centroid codebook instead of the lattice points). Only
    parameters are fine-tuned; buffers always pass through.

    The model given is never changed: ``qm`` works on its own deep copy, ``qm.model``, which
    takes the file's lossless tensors, the trained parameters (``train_unquantized``) and the
    batch statistics of training-mode forwards. ``qm(x)`` runs that copy with the
    reconstructed weights (``torch.func.functional_call``: its own quantized weights are not
    used); ``apply_to_model`` copies the reconstructed ones into it and returns it.
    ``qm.parameters()`` yields the codewords, one (K, n) float32 ``nn.Parameter`` per tensor,
    and with ``train_unquantized=True`` the copy's other parameters (biases, norms, ...), which
    otherwise get no gradient.

    ``min_count``: only the codewords shared by at least that many vectors train; the others
    stay at their initial value, as a fixed buffer. A codebook file stores each codeword as 4
    bytes per coordinate, which zstd compresses well while they are lattice points (small
    integers and halves) and hardly at all once trained: for vector lattices with thousands of
    rarely used points (E8 at low rates) this bounds the growth of the file. ``strict``
    (default): the file's tensors and the model's ``state_dict`` must have the same names;
    shapes must agree in any case (``ModelMismatchError``).
    """

    def __init__(
        self,
        model: nn.Module,
        source: Source | None = None,
        *,
        train_unquantized: bool = False,
        average_gradients: bool = True,
        min_count: int = 1,
        strict: bool = True,
        **options: Any,
    ) -> None:
        super().__init__()
        if source is not None and options:
            raise InvalidInputError("give a .udnc file, EncodeOptions or keyword options, not both")
        if not isinstance(min_count, int) or isinstance(min_count, bool) or min_count < 0:
            raise InvalidInputError(f"min_count must be an integer >= 0, got {min_count!r}")
        self.model = _own_copy(model)
        self.train_unquantized = train_unquantized
        self.average_gradients = average_gradients
        self.min_count = min_count
        self.codewords = nn.ParameterList()
        self._layouts: list[_Layout] = []
        state = self.model.state_dict(keep_vars=True)
        if isinstance(source, (str, os.PathLike)):
            self.options = self._from_file(source, state, strict)
        else:
            opts = source if source is not None else EncodeOptions.from_kwargs(**options)
            self.options = self._from_options(opts, state)

    # Construction

    def _params(self) -> dict[str, nn.Parameter]:
        return dict(self.model.named_parameters(remove_duplicate=False))

    def _from_options(
        self, options: EncodeOptions, state: Mapping[str, torch.Tensor]
    ) -> EncodeOptions:
        params = self._params()
        first: dict[int, str] = {}
        aliases: dict[str, list[str]] = {}
        found: dict[str, QuantizedTensor] = {}
        for name, tensor in state.items():
            if name not in params:
                continue  # buffers are not trained: they pass through
            if id(tensor) in first:
                aliases.setdefault(first[id(tensor)], []).append(name)
                continue
            first[id(tensor)] = name
            # The dither stream follows from the name, as in udnc_format.save(state_dict).
            q = quantize_tensor(name, to_numpy(name, tensor), dither_stream_for(name), options)
            if q is not None:
                found[name] = q
        for name, q in found.items():
            self._add(name, tuple(aliases.get(name, ())), q, state[name].dtype)
        return options

    def _from_file(
        self, path: str | os.PathLike[str], state: Mapping[str, torch.Tensor], strict: bool
    ) -> EncodeOptions:
        params = self._params()
        by_id: dict[int, list[str]] = {}
        for name, param in params.items():
            by_id.setdefault(id(param), []).append(name)
        with UDNCFile(path) as handle:
            shapes = {name: tuple(tensor.shape) for name, tensor in state.items()}
            _, matched = check_fit(handle, shapes, strict=strict, target="the model")
            done: set[int] = set()
            for name in handle:
                if name not in matched:
                    continue
                target = state[name]
                q = handle.get_quantized(name)
                if q is None:
                    with torch.no_grad():
                        target.copy_(from_numpy(handle.get_tensor(name)))
                    continue
                if name not in params:
                    raise InvalidInputError(
                        f"{handle.source}: tensor {name!r} is lattice-coded but is a buffer of "
                        f"the model, not a parameter: it cannot be fine-tuned"
                    )
                if id(target) in done:
                    continue  # a tied alias: the first name's quantization serves both
                done.add(id(target))
                aliases = tuple(n for n in by_id[id(target)] if n != name and n in state)
                self._add(name, aliases, q, target.dtype)
            return EncodeOptions(metadata=handle.metadata())

    def _add(
        self, name: str, aliases: tuple[str, ...], q: QuantizedTensor, dtype: torch.dtype
    ) -> None:
        if not get_lattice(q.lattice).has_codebook_mode:
            # A trellis symbol's point depends on the path before it (spec §6.8): no shared
            # vectors to train, and no codebook mode to store trained ones in.
            raise InvalidInputError(
                f"tensor {name!r}: fine-tuning needs a lattice with codebook mode, not "
                f"{q.lattice.name} (trellis-coded, like the default): quantize with another, "
                "e.g. lattice='Z1' or 'E8' (udnc compress --lattice Z1)"
            )
        q = by_frequency(point_codebook(q, name))
        assert q.codebook is not None and q.indices is not None
        index = len(self._layouts)
        self._layouts.append(_Layout((name, *aliases), q, dtype))
        counts = codeword_counts(q)
        # Most frequent first: the codewords trained are a prefix, the rest a fixed buffer.
        uses = np.bincount(q.indices, minlength=len(q.codebook))
        trained = int(np.count_nonzero(uses >= self.min_count))
        self.codewords.append(nn.Parameter(torch.from_numpy(q.codebook[:trained].copy())))
        buffers = {
            "fixed": torch.from_numpy(q.codebook[trained:].copy()),
            "counts": torch.from_numpy(counts[:trained]).clamp_(min=1).to(torch.float32),
            "indices": torch.from_numpy(q.indices.astype(np.int64)),
            "dither": None if q.prng is Prng.NONE else torch.from_numpy(_dither(q)),
            "kept": None if q.mask is None else torch.from_numpy(np.flatnonzero(q.mask)),
        }
        for kind, buffer in buffers.items():
            self.register_buffer(f"_{kind}_{index}", buffer, persistent=False)

    # The weights

    @property
    def names(self) -> list[str]:
        """The fine-tuned tensors' names, in the order of their codewords in ``codewords``."""
        return [layout.name for layout in self._layouts]

    def codebook(self, name: str) -> torch.Tensor:
        """All K codewords (K, n) of tensor ``name``, trained and fixed (a detached copy)."""
        codebook = self.quantized_tensor(name).codebook
        assert codebook is not None
        return torch.from_numpy(codebook)

    def _buffer(self, kind: str, index: int) -> torch.Tensor | None:
        buffer: torch.Tensor | None = getattr(self, f"_{kind}_{index}")
        return buffer

    def _reconstruct(self, index: int) -> torch.Tensor:
        """spec §6.6 then §6.5: s·(codeword[index] − u), in binary64, rounded as a decoder
        rounds, masked weights zero; differentiable with respect to the codewords."""
        layout = self._layouts[index]
        q = layout.quantized
        codewords: torch.Tensor = self.codewords[index]
        counts, indices = self._buffer("counts", index), self._buffer("indices", index)
        fixed = self._buffer("fixed", index)
        assert counts is not None and indices is not None and fixed is not None
        if self.average_gradients:
            codewords = _AverageGradient.apply(codewords, counts)
        if len(fixed):
            codewords = torch.cat([codewords, fixed])
        # index_select: its backward (index_add) is ~10x faster than indexing's when few
        # codewords take many vectors (Z1: a handful of scalars for 10^5 weights).
        x = torch.index_select(codewords.to(torch.float64), 0, indices)
        dither = self._buffer("dither", index)
        if dither is not None:
            x = x - dither
        values = _round((x * q.scale).reshape(-1)[: q.kept], q.dtype)
        kept = self._buffer("kept", index)
        if kept is not None:  # pruned weights are exactly +0.0 (spec §6.7)
            values = values.new_zeros(int(np.prod(q.shape))).index_put((kept,), values)
        return values.reshape(q.shape).to(layout.torch_dtype)

    def weights(self) -> dict[str, torch.Tensor]:
        """The reconstructed weights by name (tied aliases omitted), attached to the graph."""
        return {layout.name: self._reconstruct(i) for i, layout in enumerate(self._layouts)}

    def _unquantized(self) -> Iterator[tuple[str, nn.Parameter]]:
        """The model's parameters that are not fine-tuned (tied ones once)."""
        state = self.model.state_dict(keep_vars=True)
        quantized = {id(state[layout.name]) for layout in self._layouts}
        for name, param in self.model.named_parameters():
            if id(param) not in quantized:
                yield name, param

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The model's forward with the reconstructed weights (and, without
        ``train_unquantized``, its other parameters detached: no gradient reaches them)."""
        tensors = self.weights()
        if not self.train_unquantized:
            tensors.update((name, param.detach()) for name, param in self._unquantized())
        return torch.func.functional_call(self.model, tensors, args, kwargs)

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, nn.Parameter]]:
        """The codewords (``codewords.<i>``), then, with ``train_unquantized``, the model's
        parameters that are not quantized (``model.<name>``)."""
        dot = prefix + "." if prefix else ""
        for i, codewords in enumerate(self.codewords):
            yield f"{dot}codewords.{i}", codewords
        if self.train_unquantized:
            for name, param in self._unquantized():
                yield f"{dot}model.{name}", param

    @torch.no_grad()
    def apply_to_model(self) -> nn.Module:
        """Copy the reconstructed weights into ``qm.model`` (qm's copy of the model given, in
        place) and return it: it then computes what ``qm`` computes, without ``qm``. To put
        them into a model of your own: ``model.load_state_dict(qm.apply_to_model().state_dict())``.
        """
        params = self._params()
        for name, weight in self.weights().items():
            params[name].copy_(weight)
        return self.model

    # Writing

    @torch.no_grad()
    def quantized_tensor(self, name: str) -> QuantizedTensor:
        """Tensor ``name`` in codebook mode with the current codewords (spec §6.6)."""
        index = self.names.index(name)
        fixed = self._buffer("fixed", index)
        assert fixed is not None
        codebook = np.concatenate([to_numpy(name, self.codewords[index]), to_numpy(name, fixed)])
        if not np.isfinite(codebook).all():
            raise InvalidInputError(
                f"tensor {name!r}: a codeword is not finite (did training diverge?)"
            )
        return dataclasses.replace(self._layouts[index].quantized, codebook=codebook)

    def encoded_tensors(self) -> Iterator[EncodedTensor]:
        """Every tensor of the model's ``state_dict``, in its order: the fine-tuned ones in
        codebook mode, the others lossless (passthrough)."""
        lossless = dataclasses.replace(self.options, keep=("*",))
        aliases = {alias: layout.name for layout in self._layouts for alias in layout.names}
        for name, tensor in self.model.state_dict().items():
            if name in aliases:
                yield encode_quantized(name, self.quantized_tensor(aliases[name]), self.options)
            else:
                stream = dither_stream_for(name)
                yield encode_tensor(name, to_numpy(name, tensor), stream, lossless)

    def save_file(
        self, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Write the model as a .udnc file (atomically), which ``udnc_format.load_file``
        decodes to exactly the weights ``qm`` runs with. ``metadata`` defaults to the options'
        (or the source file's) metadata."""
        meta = self.options.metadata if metadata is None else metadata
        write_file(self.encoded_tensors(), meta, path)


__all__ = ["QuantizedModel", "by_frequency", "codeword_counts", "point_codebook"]
