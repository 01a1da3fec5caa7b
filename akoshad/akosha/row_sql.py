"""The SQL expressions the memory rows are read with (DuckDB, on a private snapshot copy):
why a row cannot be sent (:func:`problem_sql`), its time (:func:`time_sql`), its embedding
(:func:`embedding_sql`) and whether its text needs a scan for secrets (:func:`gate_sql`).
"""

from __future__ import annotations

from akoshad.akosha.vectors import (
    EMBED_DIM,
    FLOAT_LIST_TYPES,
    REASON_NO_EMBEDDING,
    REASON_NON_FINITE,
)

REASON_NO_TEXT = "no text"
# created_at source column per table, first present wins
TIME_COLUMNS: dict[str, tuple[str, ...]] = {
    "conversations_v2": ("timestamp", "created_at"),
    "reflections_v2": ("created_at", "timestamp"),
}


def quoted(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


# the text is blank: what trims to nothing, trimming what Python's str.strip() does (the
# loading's test; DuckDB's own trim() leaves tabs and newlines). A text that starts with a
# visible ASCII character is not blank; nor is one whose first characters do not trim to
# nothing, and trimming only those is cheap; the whole text is trimmed only when they are
# blank (trimming every text of a store copied each one: 10x the listing's time)
_SPACES = " || ".join(f"chr({ord(c)})" for c in map(chr, range(0x3001)) if c.isspace())
_BLANK_SQL = (
    "CASE WHEN ord(CAST(content AS VARCHAR)) BETWEEN 33 AND 126 THEN false "
    f"WHEN length(trim(left(CAST(content AS VARCHAR), 64), {_SPACES})) > 0 THEN false "
    f"ELSE length(trim(CAST(content AS VARCHAR), {_SPACES})) = 0 END"
)


def problem_sql(cols: dict[str, str]) -> str:
    """A SQL expression naming why a row cannot be sent, or NULL."""
    if "embedding" not in cols:
        return f"'{REASON_NO_EMBEDDING}'"
    dtype = cols["embedding"]
    if not dtype.endswith("]"):  # not a list/array column: nothing usable
        return f"'{REASON_NO_EMBEDDING}'"
    emb = "embedding"
    # a float list is checked as it is (a copy as DOUBLE[] costs memory and time); any
    # other list is converted value by value, what is no number becoming NULL (a row's
    # problem, not an error that stops the listing of every row)
    as_list = emb if FLOAT_LIST_TYPES.fullmatch(dtype) else f"TRY_CAST({emb} AS DOUBLE[])"
    return (
        f"CASE WHEN {emb} IS NULL THEN '{REASON_NO_EMBEDDING}' "
        f"WHEN len({as_list}) <> {EMBED_DIM} THEN "
        f"'embedding has ' || len({as_list}) || ' dimensions, expected {EMBED_DIM}' "
        # a NULL inside the vector is no finite value either (isnan(NULL) is NULL: asked)
        f"WHEN coalesce(list_bool_or(list_transform({as_list}, "
        f"lambda x: x IS NULL OR isnan(x) OR isinf(x))), false) THEN '{REASON_NON_FINITE}' "
        f"WHEN content IS NULL OR {_BLANK_SQL} THEN '{REASON_NO_TEXT}' ELSE NULL END"
    )


def time_sql(cols: dict[str, str], table: str) -> str:
    """The row's time as text (UTC for a zoned timestamp), or NULL."""
    for name in TIME_COLUMNS[table]:
        dtype = cols.get(name)
        if dtype is None:
            continue
        if "WITH TIME ZONE" in dtype or dtype == "TIMESTAMPTZ":
            return f"CAST(timezone('UTC', {quoted(name)}) AS VARCHAR)"
        return f"CAST({quoted(name)} AS VARCHAR)"
    return "NULL"


def embedding_sql(cols: dict[str, str], as_vector: bool = False) -> str:
    """The embedding as text: a float list without the spaces DuckDB puts after its commas
    (compact JSON: removed here, in C, rather than in Python); ``as_vector``: as it is
    stored (for :func:`~akoshad.akosha.vectors.vector_json`)."""
    if "embedding" not in cols:
        return "NULL"
    if as_vector:
        return "t.embedding"
    if FLOAT_LIST_TYPES.fullmatch(cols["embedding"]):
        return "replace(CAST(t.embedding AS VARCHAR), ', ', ',')"
    return "CAST(t.embedding AS VARCHAR)"


def gate_sql(gate: str | None) -> str:
    """Whether the text needs a scan for secrets: not when it is ASCII (as many bytes as
    characters) and does not match ``gate`` (:attr:`SecretRedactor.gate`, read by RE2)."""
    if gate is None:
        return "true"
    quoted = "'" + gate.replace("'", "''") + "'"
    return (
        "(strlen(CAST(t.content AS VARCHAR)) <> length(CAST(t.content AS VARCHAR)) "
        f"OR regexp_matches(CAST(t.content AS VARCHAR), {quoted}))"
    )
