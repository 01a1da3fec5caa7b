"""What an upload writes after its packs: the extra objects (``memories.json``), the
shared documents (index parts, chunk lists) and ``manifest.json``, last.

The documents go up as they are made (``document_puts.build_and_put``), unless the writer
does not know which are stored already (its state was lost) and the upload has earlier
files: then they are all made first and each is asked for (a HEAD), and only the missing
ones sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence

from akoshad.errors import PermanentError
from akoshad.manifest.layout import ManifestError, encode_manifest, manifest_key, upload_prefix
from akoshad.names import MEMORIES_NAME
from akoshad.pipeline.attempt import Attempt
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.sealing import put_extras
from akoshad.storage.document_puts import build_and_put, missing_documents, put_documents
from akoshad.storage.format2 import DocumentSink, Format2Manifest, build_manifest2
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target


async def put_manifest(
    target: Target,
    system_id: str,
    attempt: Attempt,
    files: Sequence[StoredFile],
    report: PassReport,
    *,
    skipped: Mapping[str, str],
    known: Collection[str] | None,
) -> None:
    """Write the extras, the documents and the manifest of ``attempt`` (``files``: every
    file of the upload; ``known``: the documents the target holds, None when not known);
    sets ``attempt.documents``; the bytes sent are counted in ``report`` as they go."""
    sealing = attempt.sealing
    own = upload_prefix(system_id, attempt.upload_id)
    sent, sealed_extras = await put_extras(target, own, attempt.extras, sealing)
    report.bytes_sent += sent

    def build(sink: DocumentSink | None) -> Format2Manifest:
        return build_manifest2(
            system_id=system_id,
            upload_id=attempt.upload_id,
            files=files,
            skipped=skipped,
            known_documents=known or frozenset(),
            conversation_count=0
            if sealed_extras
            else sum(x.conversation_count for x in attempt.extras),
            has_memories=not sealed_extras and any(x.name == MEMORIES_NAME for x in attempt.extras),
            name_key=None if sealing is None else sealing.key,
            recipients=None if sealing is None else sealing.recipients,
            sink=sink,
            copies=None if sealing is None or sealing.copies is None else sealing.copies.put,
        )

    earlier = attempt.plan.kept or attempt.plan.reused  # else all new: nothing to ask
    try:
        if known is None and earlier:  # not known: a HEAD each, not a PUT
            built = await asyncio.to_thread(build, None)
            documents = await missing_documents(target, built.documents)
            report.bytes_sent += await put_documents(target, documents)
        else:  # each document goes up as soon as it is made
            built, sent = await build_and_put(target, build)
            report.bytes_sent += sent
    except ManifestError as exc:
        raise PermanentError(f"the manifest cannot be made: {exc}") from None
    built.manifest["files"].extend(sealed_extras)
    attempt.documents = built.document_keys
    report.bytes_sent += await target.put_bytes(
        manifest_key(system_id, attempt.upload_id),
        encode_manifest(built.manifest),
        "application/json",
    )
