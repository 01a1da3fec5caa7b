"""The pipeline: the data's way from a change on disk to a committed upload.

In the data's order:

* ``watch`` -- watchfiles events and the startup reconciliation against the ledger;
* ``debounce`` -- the coalescing table (quiet window, max delay; db + wal = one change)
  and the stage that feeds the durable queue;
* ``storefiles`` -- what counts as a store file (side files, include/exclude);
* ``store_walk`` -- the disk walk of the store;
* ``capture/`` -- consistent private copies of store files, validated;
* ``upload`` -- one drain pass: claim -> capture -> hash and reuse -> objects -> manifest
  last -> ledger, history and queue committed;
* ``chain`` -- the circuit breakers and the per-pass method planner (pure);
* ``routes`` -- the cloud and Akosha routes, each owning its breaker;
* ``memory_sync`` -- memories of a capture to Akosha exactly once, and (``cloud_memories``)
  ``memories.json``;
* ``ownership`` -- one writer per system id: the owner check before each upload;
* ``stats`` -- the counters the pipeline writes and status reads.

The pipeline uses the layers below it (``store``, ``targets``, ``akosha``, ``manifest``,
``storage``) and never calls up into ``runtime`` or ``cli``.
"""
