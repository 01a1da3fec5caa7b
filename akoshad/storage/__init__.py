"""Storage engine of bucket format 2: content-defined chunks, per-chunk codecs, packs, refs,
retention and prune planning.

Pure, self-contained parts (no target, no ledger): ``chunker`` cuts a file into
content-defined chunks, ``codec`` compresses one chunk and decompresses it with a bound,
``packs`` collects stored chunk bodies into pack files and plans ranged reads, ``refs``
holds the manifest's chunk references with strict validation; ``retention`` decides which
uploads a policy keeps, ``prune_refs``/``prune_plan``/``repack`` plan a crash-safe
mark-and-sweep prune.
"""
