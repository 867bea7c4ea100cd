"""The package's layers (ARCHITECTURE.md): imports run one way, format <- coding <- codec <-
the tools at the package's top. A module of a layer imports nothing of the layers above it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import udnc_format

PACKAGE = Path(udnc_format.__file__).parent
# Each layer and the layers of udnc_format it may import (itself included).
ALLOWED = {
    "format": {"format"},
    "coding": {"format", "coding"},
    "codec": {"format", "coding", "codec"},
}


def module_imports(path: Path) -> set[str]:
    """The absolute names of the udnc_format modules that the module at ``path`` imports."""
    name = "udnc_format." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return imported_modules(package, path.read_text(encoding="utf-8"))


def imported_modules(package: str, source: str) -> set[str]:
    """The absolute names of the udnc_format modules that ``source``, a module of ``package``,
    imports."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
                # ``from . import x``: x may be a module of that package.
                found |= {f"{name}.{alias.name}" for alias in node.names} | {name}
            elif node.module:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] == "udnc_format"}


def layer_of(name: str) -> str:
    """The layer of a udnc_format module name ('top' for the tools and the package itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "top"


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_the_layers_below(layer: str) -> None:
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules
    wrong = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in modules
        for name in sorted(module_imports(path))
        if layer_of(name) not in ALLOWED[layer]
    ]
    assert not wrong, wrong


def test_the_check_sees_an_upward_import() -> None:
    """The test above can fail: imports of the codec and of a tool from the format layer are
    found, a sibling's is not."""
    source = "from ..codec.reader import UDNCFile\nfrom .. import cli\nfrom . import layout\n"
    found = imported_modules("udnc_format.format", source)
    assert {layer_of(name) for name in found} == {"codec", "top", "format"}
    assert "udnc_format.cli" in found and "udnc_format.format.layout" in found


def test_the_command_line_imports_no_framework_and_no_ml_dtypes() -> None:
    """``udnc --help`` and ``udnc info`` start without ml_dtypes (a second or more to import,
    bench/speed/startup.md), a framework or matplotlib; a bfloat16 tensor brings ml_dtypes in."""
    probe = (
        "import sys, udnc_format.cli, udnc_format.format.dtypes as d\n"
        "heavy = {'ml_dtypes', 'torch', 'tensorflow', 'jax', 'matplotlib'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "d.NUMPY_DTYPES[d.Dtype.BF16]\n"
        "assert 'ml_dtypes' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=PACKAGE.parent)


def test_reading_imports_none_of_the_encoder() -> None:
    """``import udnc_format`` and the command line (decompress, info, verify) start without the
    encoder's modules (bench/speed/startup.md); its names are still there, imported on use."""
    probe = (
        "import sys, udnc_format, udnc_format.cli\n"
        "encoder = {'udnc_format.codec.encoder', 'udnc_format.codec.importance',\n"
        "           'udnc_format.codec.quantizer', 'udnc_format.codec.rdo', 'udnc_format.rate',\n"
        "           'udnc_format.rd', 'udnc_format.shards', 'udnc_format.importance_file'}\n"
        "assert not encoder & set(sys.modules), encoder & set(sys.modules)\n"
        "assert 'EncodeOptions' in dir(udnc_format) and callable(udnc_format.save)\n"
        "udnc_format.EncodeOptions\n"
        "assert 'udnc_format.codec.encoder' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=PACKAGE.parent)
