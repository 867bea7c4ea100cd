"""The native kernels (udnc_format/native, spec-exact C99) as the optional extension
udnc_format._native; all other metadata is in pyproject.toml.

A compiler that fails leaves a warning, not a failed install: udnc_format.coding.kernels then
uses the numpy reference (README, "Native kernels").
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# spec §1: every binary64 operation rounded on its own, so no contraction into fused
# multiply-adds and no fast-math; -O3 vectorizes the plain loops, and -fno-trapping-math lets
# it compute both sides of a select (no value changes: only floating-point traps, which
# nothing here enables, would). Portable code (baseline x86-64 / aarch64; kernels.c adds
# clones for newer x86-64): the wheel runs on any machine of its architecture.
GCC_FLAGS = ["-std=c99", "-O3", "-ffp-contract=off", "-fno-fast-math", "-fno-trapping-math"]


class BuildNative(build_ext):
    """build_ext with the floating-point flags of GCC-compatible compilers."""

    def build_extensions(self) -> None:
        if self.compiler.compiler_type == "unix":
            for extension in self.extensions:
                extension.extra_compile_args = GCC_FLAGS
        super().build_extensions()


NATIVE = Extension(
    "udnc_format._native",
    sources=["udnc_format/native/kernels.c", "udnc_format/native/module.c"],
    depends=["udnc_format/native/kernels.h"],
    optional=True,
)

setup(ext_modules=[NATIVE], cmdclass={"build_ext": BuildNative})
