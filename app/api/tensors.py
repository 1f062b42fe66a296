"""Typed tensors on the wire: Open Inference Protocol v2 datatypes, JSON and binary data.

This module knows how a tensor travels, not what a model does with it. It follows
the OIP v2 REST specification (tensor data is row-major and "may be flat or
nested", its length must match the shape:
https://github.com/kserve/open-inference-protocol/blob/main/specification/protocol/inference_rest.md)
and the binary tensor data extension (little-endian, no padding; a BYTES element
is a 4-byte little-endian length then the bytes:
https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/protocol/extension_binary_data.html).
Every problem is a 400 that names the tensor, never a 500.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from app.api.errors import ClientError

DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
INTEGERS = frozenset(k for k, v in DTYPES.items() if v.kind in "iu")
LIMITS = {k: np.iinfo(DTYPES[k]) for k in INTEGERS}  # np.iinfo is slow to build per value
# array kinds numpy infers from JSON numbers that a datatype takes without loss
ACCEPTED_KINDS = {**dict.fromkeys(INTEGERS, "iu"), "FP16": "iuf", "FP32": "iuf", "FP64": "iuf"}
FLOATS = frozenset(k for k, v in DTYPES.items() if v.kind == "f")
FLOAT_MAX = {k: float(np.finfo(DTYPES[k]).max) for k in FLOATS}
DATATYPE_OF = {v: k for k, v in DTYPES.items()}
_LENGTH = struct.Struct("<I")


def datatype_of(array: np.ndarray) -> str:
    """The OIP datatype name of an array (object arrays hold BYTES)."""
    return DATATYPE_OF.get(array.dtype, "BYTES")


def bad(tensor: str, problem: str) -> ClientError:
    return ClientError(400, f"{tensor}: {problem}")


def element_count(shape: Sequence[int]) -> int:
    return math.prod(shape)


def _flatten(data: Any) -> list[Any]:
    """Nested lists in row-major order; iterative so deep nesting cannot recurse."""
    flat: list[Any] = []
    stack: list[Any] = [iter([data])]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


# the value bounds of the datatypes a column of JSON numbers usually comes in
_INT_BOUNDS = {k: (int(LIMITS[k].min), int(LIMITS[k].max)) for k in INTEGERS}


def plain_column(datatype: str, values: list[Any]) -> bool:
    """True when ``values`` is certainly valid data for ``datatype``: strings for
    BYTES, in-range integers, finite in-range numbers. A cheap check for the common
    tabular column; False sends the data through :func:`from_json`, which names the
    problem (or accepts what this leaves out, such as NaN for a missing value)."""
    # plain loops, not all(): a generator costs more than the check on a short column
    if datatype == "BYTES":
        for v in values:  # noqa: SIM110
            if v.__class__ is not str:
                return False
        return True
    limit = FLOAT_MAX.get(datatype)
    if limit is not None:
        for v in values:
            kind = v.__class__
            if not ((kind is float or kind is int) and -limit <= v <= limit):
                return False
        return True
    bounds = _INT_BOUNDS.get(datatype)
    if bounds is None:
        return False
    low, high = bounds
    for v in values:  # noqa: SIM110
        if not (v.__class__ is int and low <= v <= high):
            return False
    return True


def _check_values(tensor: str, datatype: str, values: list[Any]) -> None:
    # plain loops, not all(): a generator costs more than the check on a short column
    if datatype == "BYTES":
        for v in values:
            if v.__class__ is not str:
                raise bad(tensor, "BYTES data must be strings")
    elif datatype == "BOOL":
        if not all(isinstance(v, bool) for v in values):
            raise bad(tensor, "BOOL data must be true or false")
    elif datatype in INTEGERS:
        info = LIMITS[datatype]
        if not all(type(v) is int and info.min <= v <= info.max for v in values):
            raise bad(
                tensor, f"{datatype} data must be whole numbers from {info.min} to {info.max}"
            )
    else:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise bad(tensor, f"{datatype} data must be numbers")
        # NaN stands for a missing value; a finite number must fit the datatype
        limit = FLOAT_MAX[datatype]
        if not all(-limit <= v <= limit for v in values if v == v and abs(v) != math.inf):
            raise bad(tensor, f"{datatype} data must lie within +-{limit:.4g}")


def from_json(
    tensor: str, datatype: str, shape: Sequence[int], data: Any
) -> np.ndarray | list[Any]:
    """A JSON ``data`` field (flat or nested): a flat list for a column of scalars
    (``[N]`` or ``[N, 1]``, the tabular case), else an array of ``shape``."""
    if not isinstance(data, list):
        raise bad(tensor, "data must be an array (flat or nested, row-major)")
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
        values = _flatten(data) if len(shape) == 2 else data
        if len(values) != shape[0]:
            raise bad(
                tensor, f"shape {list(shape)} holds {shape[0]} values, but data has {len(values)}"
            )
        _check_values(tensor, datatype, values)
        return values
    fast = _numeric_fast_path(datatype, shape, data)
    if fast is not None:
        return fast
    values = _flatten(data)
    expected = element_count(shape)
    if len(values) != expected:
        raise bad(
            tensor, f"shape {list(shape)} holds {expected} values, but data has {len(values)}"
        )
    _check_values(tensor, datatype, values)
    dtype = DTYPES[datatype]
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        with np.errstate(over="ignore"):
            array = np.asarray(values, dtype=dtype)
    return array.reshape(shape)


def _numeric_fast_path(datatype: str, shape: Sequence[int], data: list[Any]) -> np.ndarray | None:
    """Well-formed numeric data straight through numpy (784 pixels in microseconds).

    None sends the data down the element-by-element path, which names the problem.
    """
    kinds = ACCEPTED_KINDS.get(datatype)
    if kinds is None:
        return None
    try:
        array = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, huge integers
        return None
    if array.dtype.kind not in kinds or array.size != element_count(shape):
        return None
    if datatype in INTEGERS:
        info = LIMITS[datatype]
        if array.size and (array.min() < info.min or array.max() > info.max):
            return None
    elif array.size:
        magnitude = np.abs(array.astype(np.float64))
        if (magnitude[np.isfinite(magnitude)] > FLOAT_MAX[datatype]).any():
            return None  # the element path names the value out of range
    return array.astype(DTYPES[datatype], copy=False).reshape(shape)


def from_binary(tensor: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """Binary tensor data (little-endian, row-major) as an array of ``shape``."""
    expected = element_count(shape)
    if datatype == "BYTES":
        values = _split_bytes(tensor, raw)
        if len(values) != expected:
            raise bad(
                tensor, f"shape {list(shape)} holds {expected} values, but data has {len(values)}"
            )
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array.reshape(shape)
    dtype = DTYPES[datatype].newbyteorder("<")
    if len(raw) != expected * dtype.itemsize:
        raise bad(
            tensor,
            f"shape {list(shape)} needs {expected * dtype.itemsize} bytes of {datatype}, "
            f"but binary data has {len(raw)}",
        )
    return np.frombuffer(raw, dtype=dtype).astype(DTYPES[datatype]).reshape(shape)


def _split_bytes(tensor: str, raw: bytes) -> list[str]:
    values: list[str] = []
    at = 0
    while at < len(raw):
        if at + _LENGTH.size > len(raw):
            raise bad(tensor, "binary BYTES data ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(raw, at)
        at += _LENGTH.size
        if at + length > len(raw):
            raise bad(tensor, "binary BYTES data is shorter than its length prefix says")
        try:
            values.append(raw[at : at + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise bad(tensor, "BYTES data must be UTF-8 text") from None
        at += length
    return values


def to_binary(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        parts = []
        for value in array.ravel().tolist():
            encoded = str(value).encode("utf-8")
            parts.append(_LENGTH.pack(len(encoded)) + encoded)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=DTYPES[datatype].newbyteorder("<")).tobytes()


def to_json(datatype: str, array: np.ndarray) -> Any:
    """Flat row-major data (orjson serialises numpy arrays directly)."""
    if datatype == "BYTES":
        return [str(v) for v in array.ravel().tolist()]
    return np.ascontiguousarray(array, dtype=DTYPES[datatype]).ravel()
