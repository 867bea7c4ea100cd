"""udnc_format.adapters: the project's adapters and a third party's are found through the entry
point group; registered adapters take precedence; unknown names and missing frameworks raise
AdapterError naming what to install; the adapter modules import their framework lazily."""

from __future__ import annotations

import importlib
import importlib.util
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import udnc_format
from udnc_format import adapters
from udnc_format.format.errors import ALL_ERRORS, AdapterError, ModelMismatchError, UDNCError

BUILTIN = {  # adapter: (its modules, the modules of its framework)
    "torch": ("udnc_adapters.torch", ("torch",)),
    "tensorflow": ("udnc_adapters.tensorflow", ("tensorflow",)),
    "jax": ("udnc_adapters.jax", ("jax", "jaxlib")),
}


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch):
    """Each test starts with nothing registered or loaded, and leaves nothing behind."""
    monkeypatch.setattr(adapters, "_registered", {})
    monkeypatch.setattr(adapters, "_loaded", {})


class NumpyAdapter:
    """An adapter for numpy arrays: the core itself."""

    save = staticmethod(udnc_format.save)
    save_file = staticmethod(udnc_format.save_file)
    load = staticmethod(udnc_format.load)
    load_file = staticmethod(udnc_format.load_file)


def installed(modules: tuple[str, ...]) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def test_the_errors() -> None:
    assert AdapterError in ALL_ERRORS and ModelMismatchError in ALL_ERRORS
    assert issubclass(AdapterError, UDNCError) and AdapterError.kind == "adapter"
    assert issubclass(ModelMismatchError, UDNCError) and ModelMismatchError.kind == "model-mismatch"
    assert str(ModelMismatchError("plain")) == "plain"
    assert udnc_format.get_adapter is adapters.get_adapter
    assert {"AdapterError", "get_adapter", "register_adapter"} <= set(udnc_format.__all__)


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_adapters_are_declared_entry_points(name: str) -> None:
    module, framework = BUILTIN[name]
    assert name in udnc_format.available_adapters()
    if not installed(framework):
        with pytest.raises(AdapterError, match=f'pip install "udnc\\[{name}\\]"'):
            udnc_format.get_adapter(name)
        return
    adapter = udnc_format.get_adapter(name)
    assert adapter is importlib.import_module(module)
    assert udnc_format.get_adapter(name) is adapter  # loaded once
    assert framework == adapter.REQUIRES and f'pip install "udnc[{name}]"' == adapter.INSTALL


@pytest.mark.parametrize("name", BUILTIN)
def test_a_missing_framework_names_the_extra(name: str, monkeypatch, tmp_path) -> None:
    module, framework = BUILTIN[name]
    for top in framework:
        monkeypatch.setitem(sys.modules, top, None)  # import fails, find_spec says None
    install = re.escape(f'pip install "udnc[{name}]"')
    needs = " and ".join(framework)
    with pytest.raises(AdapterError, match=f"adapter '{name}' needs {needs}, .*: {install}$"):
        udnc_format.get_adapter(name)
    adapter = importlib.import_module(module)  # importing the module still works
    calls = [
        lambda: adapter.save({}),
        lambda: adapter.save_file({}, tmp_path / "x.udnc"),
        lambda: adapter.load(udnc_format.save({})),
        lambda: adapter.load_file(tmp_path / "x.udnc"),
    ]
    for call in calls:
        with pytest.raises(AdapterError, match=f"the {name} adapter needs .*{install}"):
            call()
    assert not (tmp_path / "x.udnc").exists()


def test_unknown_names() -> None:
    with pytest.raises(AdapterError, match=r"no adapter named 'mxnet'; available: .*jax.*torch"):
        udnc_format.get_adapter("mxnet")
    for bad in ("", None, 3):
        with pytest.raises(AdapterError, match=r"non-empty string"):
            udnc_format.get_adapter(bad)


def test_registered_adapters_take_precedence() -> None:
    udnc_format.register_adapter("numpy", NumpyAdapter)
    udnc_format.register_adapter("torch", NumpyAdapter)  # shadows the entry point
    assert udnc_format.get_adapter("torch") is NumpyAdapter
    assert {"numpy", "torch", "jax"} <= set(udnc_format.available_adapters())
    adapter = udnc_format.get_adapter("numpy")
    assert adapter.load(adapter.save({"w": np.ones(3)}))["w"].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(AdapterError, match=r"'half' .registered. is not an adapter.*load_file"):
        udnc_format.register_adapter("half", type("Half", (), {"save": print, "load": print}))
    with pytest.raises(AdapterError, match=r"non-empty string"):
        udnc_format.register_adapter("", NumpyAdapter)


FAKE_MODULE = """
import udnc_format

REQUIRES = ()
save, save_file = udnc_format.save, udnc_format.save_file
load, load_file = udnc_format.load, udnc_format.load_file
NOT_AN_ADAPTER = object()


class Needy:
    REQUIRES = ("no_such_framework_for_udnc",)
    INSTALL = 'pip install "fake-udnc-adapter[needy]"'
    save, save_file = staticmethod(save), staticmethod(save_file)
    load, load_file = staticmethod(load), staticmethod(load_file)
"""

FAKE_ENTRY_POINTS = """
[udnc_format.adapters]
fake = fake_udnc_adapter
needy = fake_udnc_adapter:Needy
notadapter = fake_udnc_adapter:NOT_AN_ADAPTER
broken = fake_udnc_adapter_that_is_not_there
"""


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """A third-party distribution on sys.path that declares adapters in the group."""
    (tmp_path / "fake_udnc_adapter.py").write_text(FAKE_MODULE)
    info = tmp_path / "fake_udnc_adapter-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-udnc-adapter\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(FAKE_ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_udnc_adapter", raising=False)
    yield tmp_path
    sys.modules.pop("fake_udnc_adapter", None)


def test_a_third_party_distribution_is_found(fake_distribution) -> None:
    assert {"fake", "needy", "notadapter", "broken", "torch"} <= set(
        udnc_format.available_adapters()
    )
    assert "fake_udnc_adapter" not in sys.modules  # listing imports nothing
    adapter = udnc_format.get_adapter("fake")
    assert adapter is sys.modules["fake_udnc_adapter"]
    assert adapter.load(adapter.save({"b": np.arange(3)}))["b"].tolist() == [0, 1, 2]
    with pytest.raises(AdapterError, match=r"'needy' needs no_such_framework_for_udnc.*\[needy\]"):
        udnc_format.get_adapter("needy")
    with pytest.raises(AdapterError, match=r"'notadapter' .entry point .*fake-udnc-adapter"):
        udnc_format.get_adapter("notadapter")
    with pytest.raises(AdapterError, match=r"'broken' .* cannot be imported"):
        udnc_format.get_adapter("broken")
    udnc_format.register_adapter("fake", NumpyAdapter)
    assert udnc_format.get_adapter("fake") is NumpyAdapter


def test_adapter_modules_import_their_framework_lazily() -> None:
    script = textwrap.dedent(
        """
        import sys
        import udnc_adapters, udnc_adapters.torch, udnc_adapters.tensorflow, udnc_adapters.jax
        import udnc_format
        assert {"torch", "tensorflow", "jax"} <= set(udnc_format.available_adapters())
        for name in ("torch", "tensorflow", "jax"):
            try:
                udnc_format.get_adapter(name)
            except udnc_format.AdapterError:
                pass  # not installed here
        loaded = {"torch", "tensorflow", "jax", "jaxlib", "keras"} & set(sys.modules)
        assert not loaded, loaded
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
