"""udnc_adapters: the .udnc format for torch, TensorFlow/Keras and JAX tensors.

One module per framework, in the spirit of ``safetensors.torch`` / ``.tensorflow`` / ``.flax``:
``udnc_adapters.torch``, ``udnc_adapters.tensorflow`` and ``udnc_adapters.jax``, each with
``save(tensors, **options) -> bytes``, ``save_file(tensors, path, **options)``,
``load(data) -> dict`` and ``load_file(path) -> dict`` taking and returning that framework's
tensors. They convert to and from numpy and delegate everything else to ``udnc_format`` (the
options are those of ``udnc_format.save``), never change their inputs, and import their
framework only when one of their functions runs: a framework that is not installed is reported
by ``udnc_format.AdapterError`` naming the extra to install (``pip install "udnc[torch]"``).

They are also found by name: ``udnc_format.get_adapter("torch")`` (entry point group
``udnc_format.adapters``).
"""

from __future__ import annotations

__all__: list[str] = []
