"""The embedding's text, made in DuckDB: byte for byte the list's own cast without the
spaces after its commas, for every float list type and odd value."""

from __future__ import annotations

import duckdb
import pytest

from akoshad.akosha.rows import _embedding_sql

VALUES = [
    "[1.0, -0.0, 0.0, 1e-45, 3.4e38, 100000000, 0.1, 0.33333334, -2.5e-07]",
    "[NULL, 0.5]",
    "['nan'::DOUBLE, 'inf'::DOUBLE, '-inf'::DOUBLE]",
    "[]",
    "NULL",
]


@pytest.mark.parametrize("dtype", ["FLOAT[]", "DOUBLE[]", "REAL[]", "FLOAT[3]", "DOUBLE[2]"])
def test_the_text_is_the_lists_own_cast_without_spaces(dtype: str) -> None:
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t (embedding {dtype})")
    size = dtype[dtype.index("[") + 1 : -1]
    for value in VALUES:
        try:
            con.execute(f"INSERT INTO t VALUES ({value})")
        except duckdb.Error:
            if not size:
                raise  # a fixed size refuses lists of another length: fine
    con.execute(
        "INSERT INTO t SELECT [random() for _ in range(?)] FROM range(200)",
        [int(size) if size else 384],
    )
    expression = _embedding_sql({"embedding": dtype})
    assert "list_transform" in expression  # the float list form, not the plain cast
    got = con.execute(f"SELECT {expression} FROM t").fetchall()
    want = con.execute("SELECT replace(CAST(t.embedding AS VARCHAR), ', ', ',') FROM t").fetchall()
    assert got == want
    assert any(row[0] is None for row in got) or size  # a NULL list stays NULL
    con.close()
