"""Channel formats of LSL streams and their storage in a ring.

Maps LSL channel-format names and codes (pylsl's ``cf_*`` constants, without
importing pylsl) and numpy dtypes to one canonical LSL name, and encodes string
(marker) samples into fixed-width UTF-8 slots.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DEFAULT_STRING_WIDTH = 256

# LSL channel format name -> (LSL code, numpy dtype or None for strings)
FORMATS: dict[str, tuple[int, np.dtype | None]] = {
    "float32": (1, np.dtype("<f4")),
    "double64": (2, np.dtype("<f8")),
    "string": (3, None),
    "int32": (4, np.dtype("<i4")),
    "int16": (5, np.dtype("<i2")),
    "int8": (6, np.dtype("i1")),
    "int64": (7, np.dtype("<i8")),
}
_CODE_TO_FORMAT = {code: fmt for fmt, (code, _) in FORMATS.items()}
_ALIASES = {"float64": "double64", "double": "double64", "str": "string", "float": "float32"}


def resolve_format(dtype: Any) -> str:
    """Return the LSL channel-format name for ``dtype``.

    Accepts LSL names (``"float32"``, ``"double64"``, ``"string"``, ...), LSL
    integer codes (pylsl's ``cf_*`` constants), numpy dtypes or types
    (``np.int16``, ``"float64"``) and ``str`` for marker streams.
    """
    if isinstance(dtype, str) and dtype.lower() in FORMATS:
        return dtype.lower()
    if isinstance(dtype, str) and dtype.lower() in _ALIASES:
        return _ALIASES[dtype.lower()]
    if isinstance(dtype, int) and not isinstance(dtype, bool) and dtype in _CODE_TO_FORMAT:
        return _CODE_TO_FORMAT[dtype]
    if dtype is str or dtype is bytes:
        return "string"
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is not None:
        if dt.kind in "USO":
            return "string"
        for fmt, (_, ndt) in FORMATS.items():
            if ndt is not None and ndt == dt.newbyteorder("<"):
                return fmt
    raise ValueError(
        f"unsupported channel format {dtype!r}; use one of the LSL formats "
        f"{sorted(FORMATS)} or the numpy dtypes float32, float64, int8, int16, int32, int64, str"
    )


def encode_strings(values: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Encode an object/str array to fixed-width UTF-8 (dtype ``S<width>``).

    Returns the encoded array and the number of values truncated (at a
    character boundary) to fit ``width`` bytes.
    """
    flat = values.ravel()
    out = []
    truncated = 0
    for v in flat:
        b = v if isinstance(v, bytes) else str(v).encode("utf-8")
        if len(b) > width:
            cut = width
            while cut > 0 and (b[cut] & 0xC0) == 0x80:  # b[cut] continues a character
                cut -= 1
            b = b[:cut]
            truncated += 1
        out.append(b)
    arr = np.array(out, dtype=f"S{width}").reshape(values.shape)
    return arr, truncated


def decode_strings(values: np.ndarray) -> np.ndarray:
    """Decode a fixed-width UTF-8 array to an object array of ``str``."""
    return np.char.decode(values, "utf-8", "replace").astype(object)
