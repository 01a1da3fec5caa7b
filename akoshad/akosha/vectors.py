"""Embeddings of memory rows: the checks a vector must pass and its compact JSON form.

A vector must hold :data:`EMBED_DIM` finite values. :func:`parse_embedding` takes DuckDB's
compact text form of a float list (used as JSON as it is once SQL checked it);
:func:`vector_json` prints a float32 vector fetched as a numpy array (session-buddy's
``FLOAT[384]``) in each value's shortest form that reads back as the same float32. Either
way the result is :class:`~akoshad.akosha.encoding.RawJSON`, written into a request or
``memories.json`` as it is, or the reason the row cannot be sent.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from akoshad.akosha.encoding import RawJSON

EMBED_DIM = 384
REASON_NO_EMBEDDING = "no embedding"
REASON_NON_FINITE = "embedding has non-finite values"

# what DuckDB's compact text form of finite floats is made of besides its commas; with
# them taken out (checked on the ASCII bytes: a table lookup, 6x quicker than a regex) the
# commas of EMBED_DIM values are left, nothing else (counted in the same pass: str.count
# took twice as long as the lookup)
_NUMBER_BYTES = b"0123456789.eE+-[]"
_COMMAS = b"," * (EMBED_DIM - 1)
FLOAT_LIST_TYPES = re.compile(r"(FLOAT|REAL|DOUBLE|FLOAT4|FLOAT8)\[\d*\]")
FLOAT32_LIST_TYPES = re.compile(r"(FLOAT|REAL|FLOAT4)\[\d*\]")


def dim_reason(n: int) -> str:
    """The reason a vector of ``n`` values cannot be sent."""
    return f"embedding has {n} dimensions, expected {EMBED_DIM}"


def parse_embedding(text: str | None, checked: bool = False) -> RawJSON | list[float] | str:
    """The vector, or the reason it is unusable.

    ``checked``: the text is DuckDB's compact form of a float list
    (:func:`~akoshad.akosha.row_sql.embedding_sql`) that SQL found to hold ``EMBED_DIM``
    finite values; if it also looks like it, it is used as JSON as it is."""
    if text is None:
        return REASON_NO_EMBEDDING
    if (
        checked
        and text.startswith("[")
        and text.isascii()
        and text.encode("ascii").translate(None, _NUMBER_BYTES) == _COMMAS
    ):
        return RawJSON(text)
    try:
        values = json.loads(text)
    except ValueError:
        return REASON_NON_FINITE  # nan / inf are not JSON
    if not isinstance(values, list):
        return REASON_NO_EMBEDDING
    floats = [float(v) for v in values]
    if len(floats) != EMBED_DIM:
        return dim_reason(len(floats))
    if not all(math.isfinite(v) for v in floats):
        return REASON_NON_FINITE
    return floats


def vector_json(vector: Any) -> RawJSON | str:
    """A float32 vector fetched as a numpy array (None: NULL), as compact JSON, or the
    reason it is unusable. orjson prints each value in its shortest form that reads back as
    the same float32 (as DuckDB's text does; small values without an exponent)."""
    import numpy as np
    import orjson

    if vector is None:
        return REASON_NO_EMBEDDING
    if vector.ndim != 1 or len(vector) != EMBED_DIM:
        return dim_reason(vector.size)
    if not np.isfinite(vector).all():
        return REASON_NON_FINITE  # orjson would write null
    data = np.ascontiguousarray(vector, dtype=np.float32)
    return RawJSON(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode("ascii"))
