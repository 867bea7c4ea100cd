"""Importance statistics of a torch model from calibration batches (docs/importance.md).

Forward pre-hooks see the inputs of every nn.Linear, nn.Conv1d / nn.Conv2d and nn.Embedding and
accumulate, in binary64 on the CPU:

- Linear and convolution: the second moments of the columns of the layer's input as the weight
  matrix (rows = output channels) sees it: for a convolution, the unfolded patches
  (input channel × kernel position, the order of ``weight.reshape(out, -1)``). The diagonal
  always; the full E[x xᵀ] when there are at most MAX_HESSIAN_COLUMNS columns and calibration
  gave at least as many input rows (samples × positions) as there are columns. Grouped
  convolutions average the groups (their columns share the weight's layout);
- Embedding: each row's frequency among the looked-up indices (the second moment of the one-hot
  input).

With ``sensitivity`` (the default), each floating parameter of two or more dimensions also gets
its measured sensitivity: the batches run again with uniform noise of a known variance σ² (20 dB
below the tensor's mean square) added to that tensor alone, and the model's outputs move by
D = Σ|Δy|² / Σ|y|² (every floating tensor of the outputs, or what ``output`` picks of them);
the sensitivity is D / (σ² · weights). The encoder's error is, with dither, uniform noise
independent of the weights, so this measures the very loss proxy the allocation needs, across
layers of any kind (bench/accuracy/importance_ab.md).

The model is left as it was: hooks are removed, every module's training flag restored, no
gradient is computed, and each parameter that carried noise is restored bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from udnc_format.codec.importance import HESSIAN_SUFFIX, MAX_HESSIAN_COLUMNS, ROWS_SUFFIX
from udnc_format.format.errors import InvalidInputError

from ._probe import measure


class _Moments:
    """Σx, Σxxᵀ (or Σx² only) of the rows of a (count, columns) input, and the count."""

    def __init__(self, columns: int, full: bool) -> None:
        self.count = 0
        self.squares = np.zeros(columns)
        self.outer = np.zeros((columns, columns)) if full else None

    def add(self, rows: Any) -> None:
        import torch

        data = rows.detach().to("cpu", dtype=torch.float64)
        self.count += int(data.shape[0])
        self.squares += (data * data).sum(dim=0).numpy()
        if self.outer is not None:
            self.outer += (data.T @ data).numpy()


def _conv_columns(module: Any, x: Any) -> Any:
    """The unfolded input patches of a Conv1d/Conv2d, (count, in/groups × kernel) per group
    stacked along the count."""
    import torch

    functional = torch.nn.functional
    one_d = isinstance(module, torch.nn.Conv1d)
    if one_d:
        x = x.unsqueeze(-2)
    kernel = (1, *module.kernel_size) if one_d else module.kernel_size
    stride = (1, *module.stride) if one_d else module.stride
    dilation = (1, *module.dilation) if one_d else module.dilation
    padding: Any = module.padding
    if isinstance(padding, str):  # 'valid' or 'same' (odd kernels: symmetric)
        padding = tuple(
            0 if padding == "valid" else d * (k - 1) // 2
            for k, d in zip(module.kernel_size, module.dilation, strict=True)
        )
    padding = (0, *padding) if one_d else padding
    if module.padding_mode != "zeros":
        pads = module._reversed_padding_repeated_twice
        x = functional.pad(x, pads if not one_d else (*pads, 0, 0), mode=module.padding_mode)
        padding = (0,) * len(kernel)
    patches = functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    batch, width, positions = patches.shape
    groups = module.groups
    patches = patches.reshape(batch, groups, width // groups, positions)
    return patches.permute(0, 1, 3, 2).reshape(-1, width // groups)


def _run(model: Any, batch: Any) -> Any:
    if isinstance(batch, dict):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


def _output_tensors(out: Any) -> list[Any]:
    """The floating tensors of a model's output: a tensor, or those found in its tuples, lists
    and mappings (a transformers ModelOutput is a mapping), in order."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out.detach()] if out.is_floating_point() else []
    if hasattr(out, "items"):
        return [t for value in out.values() for t in _output_tensors(value)]
    if isinstance(out, (tuple, list)):
        return [t for value in out for t in _output_tensors(value)]
    return []


def _outputs(model: Any, batch: Any, output: Callable[[Any], Any] | None) -> list[np.ndarray]:
    import torch

    out = _run(model, batch)
    found = _output_tensors(out if output is None else output(out))
    return [t.to("cpu", dtype=torch.float64).numpy() for t in found]


def _sensitivities(
    model: Any,
    batches: list[Any],
    output: Callable[[Any], Any] | None,
    progress: Callable[[int], None] | None,
) -> dict[str, np.ndarray]:
    """``NAME:sensitivity`` of every floating parameter of 2+ dimensions (module docstring)."""
    import torch

    parameters = {
        name: p for name, p in model.named_parameters() if p.ndim >= 2 and p.is_floating_point()
    }

    def run_with(name: str, noisy: np.ndarray) -> list[list[np.ndarray]]:
        parameter = parameters[name]
        original = parameter.detach().clone()
        try:
            parameter.data.copy_(torch.from_numpy(noisy))
            return [_outputs(model, batch, output) for batch in batches]
        finally:
            parameter.data.copy_(original)

    reference = [_outputs(model, batch, output) for batch in batches]
    # binary32 copies for numpy (bfloat16 has no numpy dtype); the noisy values are cast back.
    tensors = ((name, p.detach().cpu().float().numpy()) for name, p in parameters.items())
    return measure(tensors, reference, run_with, progress)


def collect_importance(
    model: Any,
    batches: Iterable[Any],
    *,
    max_hessian_columns: int = MAX_HESSIAN_COLUMNS,
    sensitivity: bool = True,
    output: Callable[[Any], Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Run calibration ``batches`` through ``model`` and return importance statistics keyed by
    the state-dict names of the weights: ``NAME`` the input columns' second moments,
    ``NAME:hessian`` the full E[x xᵀ] (up to ``max_hessian_columns`` columns, and where at
    least as many input rows as columns were seen), ``NAME:rows`` an
    embedding's row frequencies, and with ``sensitivity`` ``NAME:sensitivity`` for every
    floating parameter of 2+ dimensions (one more pass over the batches per parameter; the
    outputs compared are ``output(model(...))`` when given, else the model's own). A dict batch
    runs as ``model(**b)``, a tuple as ``model(*b)``, anything else as ``model(b)``;
    ``progress(i)`` is called after batch i of the first pass and after the i-th tensor probed.

    >>> stats = udnc_adapters.torch.collect_importance(model, loader_inputs)  # doctest: +SKIP
    >>> udnc_format.importance_file.save_importance(stats, "stats.safetensors")  # doctest: +SKIP
    """
    import torch

    nn = torch.nn
    if not isinstance(model, nn.Module):
        raise InvalidInputError(f"expected a torch.nn.Module, got {type(model).__name__}")
    moments: dict[str, _Moments] = {}
    counts: dict[str, np.ndarray] = {}
    handles = []

    def linear_hook(name: str, columns: int) -> Callable[..., None]:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            rows = inputs[0].reshape(-1, columns)
            moments.setdefault(name, _Moments(columns, columns <= max_hessian_columns)).add(rows)

        return hook

    def conv_hook(name: str, columns: int) -> Callable[..., None]:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            rows = _conv_columns(module, inputs[0])
            moments.setdefault(name, _Moments(columns, columns <= max_hessian_columns)).add(rows)

        return hook

    def embedding_hook(name: str, size: int) -> Callable[..., None]:
        def hook(module: Any, inputs: tuple[Any, ...]) -> None:
            found = np.bincount(inputs[0].detach().reshape(-1).cpu().numpy(), minlength=size)
            counts[name] = counts.get(name, np.zeros(size)) + found[:size]

        return hook

    seen: set[int] = set()
    for prefix, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor) or id(weight) in seen:
            continue
        name = f"{prefix}.weight" if prefix else "weight"
        if isinstance(module, nn.Linear):
            hook = linear_hook(name, module.in_features)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d)):
            hook = conv_hook(name, int(np.prod(weight.shape[1:])))
        elif isinstance(module, nn.Embedding):
            hook = embedding_hook(name, module.num_embeddings)
        else:
            continue
        seen.add(id(weight))
        handles.append(module.register_forward_pre_hook(hook))
    training = {module: module.training for module in model.modules()}
    kept = [] if sensitivity else None  # the batches run again for the sensitivities
    batch_count = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                _run(model, batch)
                if kept is not None:
                    kept.append(batch)
                if progress is not None:
                    progress(batch_count)
                batch_count += 1
            for handle in handles:
                handle.remove()
            handles.clear()
            if not batch_count:
                raise InvalidInputError("collect_importance needs at least one calibration batch")
            measured = {} if kept is None else _sensitivities(model, kept, output, progress)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in training.items():
            module.training = mode
    stats: dict[str, np.ndarray] = {}
    for name, found in moments.items():
        if found.count:
            stats[name] = found.squares / found.count
            # With fewer input rows than columns the estimate of E[x xᵀ] is singular, and the
            # feedback would fit the calibration inputs rather than the layer (measured on the
            # MNIST CNN: bench/accuracy/importance_ab.md): the diagonal only, then.
            if found.outer is not None and found.count >= found.squares.size:
                stats[name + HESSIAN_SUFFIX] = found.outer / found.count
    for name, frequency in counts.items():
        total = frequency.sum()
        if total:
            stats[name + ROWS_SUFFIX] = frequency / total
    stats.update(measured)
    return stats
