"""The error hierarchy: every failure the library reports on bad input is a ``UDNCError``.

Each class carries a stable ``kind`` string: conformance vectors name the error a decoder must
report by this kind (spec §10), so it never changes once released.
"""

from __future__ import annotations


class UDNCError(Exception):
    """Root of every error udnc raises on bad input, bad options or a failed write."""

    kind = "error"


class FormatError(UDNCError):
    """The bytes are not a well-formed .udnc file."""

    kind = "format"


class BadMagicError(FormatError):
    """The file does not start with the .udnc magic."""

    kind = "bad-magic"


class TruncatedError(FormatError):
    """The file ends before a structure it declares."""

    kind = "truncated"


class UnsupportedVersionError(FormatError):
    """The file's major version is one this decoder does not implement."""

    kind = "unsupported-version"


class UnsupportedFeatureError(FormatError):
    """The file uses a critical feature (section, lattice, coder, dtype, ...) unknown here."""

    kind = "unsupported-feature"


class ChecksumError(FormatError):
    """A stored CRC-32 does not match the bytes it covers."""

    kind = "checksum"


class LayoutError(FormatError):
    """Offsets, lengths, counts or shapes disagree with each other or with the file."""

    kind = "layout"


class LimitError(FormatError):
    """A declared size exceeds the limits of spec §9."""

    kind = "limit"


class CorruptStreamError(FormatError):
    """A chunk does not decode to what the header declares."""

    kind = "corrupt-stream"


class DuplicateNameError(FormatError):
    """Two tensors (or two metadata keys) share a name: in a file's header (spec §8.1 step 6),
    or in the tensors given to the encoder, which would write such a file."""

    kind = "duplicate-name"


class InvalidInputError(UDNCError):
    """Tensors or options given to the encoder cannot be encoded as asked."""

    kind = "invalid-input"


class OptionError(InvalidInputError):
    """An encoder option with a value it cannot take; ``option`` is its keyword."""

    kind = "invalid-option"

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


class TensorNotFoundError(UDNCError, KeyError):
    """A tensor name that the file does not hold."""

    kind = "not-found"

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WriteError(UDNCError):
    """The output could not be written; nothing was left behind."""

    kind = "write"


class AdapterError(UDNCError):
    """A framework adapter that is not known, cannot be imported, or whose framework is not
    installed (the message names what to install); or a tensor the framework cannot hold."""

    kind = "adapter"


class MissingDependencyError(UDNCError):
    """An optional feature needs a package that is not installed (the message names the extra
    to install, e.g. ``pip install 'udnc[plot]'``)."""

    kind = "missing-dependency"


class ModelMismatchError(UDNCError):
    """A file's tensors do not fit the model they are loaded into: names missing from the file,
    names the model does not have, or different shapes; all of them reported at once."""

    kind = "model-mismatch"

    def __init__(
        self,
        message: str,
        *,
        missing: tuple[str, ...] = (),
        unexpected: tuple[str, ...] = (),
        mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (),
    ) -> None:
        super().__init__(message)
        self.missing = missing  # in the model, not in the file
        self.unexpected = unexpected  # in the file, not in the model
        self.mismatched = mismatched  # (name, shape in the file, shape in the model)


class TargetNotReachedError(UDNCError):
    """Compression to an accuracy target found no file whose decoded model stays within the
    tolerance (the message says the best score reached and which limit to raise)."""

    kind = "target-not-reached"


ALL_ERRORS: tuple[type[UDNCError], ...] = (
    UDNCError,
    FormatError,
    BadMagicError,
    TruncatedError,
    UnsupportedVersionError,
    UnsupportedFeatureError,
    ChecksumError,
    LayoutError,
    LimitError,
    CorruptStreamError,
    DuplicateNameError,
    InvalidInputError,
    OptionError,
    TensorNotFoundError,
    WriteError,
    AdapterError,
    MissingDependencyError,
    ModelMismatchError,
    TargetNotReachedError,
)
