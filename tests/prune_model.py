"""An in-memory bucket that runs a prune plan step by step, for the planner's tests.

Objects are sizes only. Each manifest is held as the ``ManifestRefs`` it parses to; a
rewritten index part or chunk list gets a new key (its content changed), as a
content-addressed name would.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from akoshad.storage.prune_plan import PrunePlan, Step
from akoshad.storage.prune_refs import ChunkRef, ManifestRefs
from akoshad.storage.repack import NewPack, merge_ranges


@dataclass
class Bucket:
    prefix: str
    objects: dict[str, int] = field(default_factory=dict)
    manifests: dict[str, ManifestRefs] = field(default_factory=dict)  # by manifest key
    generation: int = 0

    def refs(self) -> list[ManifestRefs]:
        return [m for key, m in self.manifests.items() if key in self.objects]

    def problems(self, upload_ids: set[str]) -> list[str]:
        """What keeps one of ``upload_ids`` from being restored (empty: all restorable)."""
        out: list[str] = []
        by_id = {m.upload_id: m for m in self.refs()}
        for upload_id in sorted(upload_ids):
            refs = by_id.get(upload_id)
            if refs is None:
                out.append(f"{upload_id}: no manifest")
                continue
            named = set(refs.objects) | set(refs.chunks)
            for kids in refs.children.values():
                named |= kids
            out += [f"{upload_id}: {k} missing" for k in sorted(named - set(self.objects))]
            for c in refs.chunk_refs():
                if c.offset + c.length > self.objects.get(c.pack, -1):
                    out.append(f"{upload_id}: chunk {c} unreadable")
        return out

    def referenced_bytes(self) -> int:
        whole: set[str] = set()
        ranges: dict[str, list[tuple[int, int]]] = {}
        for refs in self.refs():
            whole |= {refs.manifest_key} | set(refs.objects) | set(refs.chunks)
            for kids in refs.children.values():
                whole |= kids
            for c in refs.chunk_refs():
                ranges.setdefault(c.pack, []).append((c.offset, c.length))
        whole -= set(ranges)
        live = sum(n for r in ranges.values() for _, n in merge_ranges(r))
        return sum(self.objects.get(k, 0) for k in whole) + live

    def stored_bytes(self) -> int:
        return sum(self.objects.values())

    def run(self, plan: PrunePlan, stop_after: int | None = None) -> None:
        """Run the plan's steps in order; with ``stop_after``, stop there (a kill -9)."""
        self.generation += 1
        new_keys: dict[int, str] = {}
        for done, step in enumerate(plan.steps()):
            if stop_after is not None and done >= stop_after:
                return
            self._apply(plan, step, new_keys)

    def _apply(self, plan: PrunePlan, step: Step, new_keys: dict[int, str]) -> None:
        if step.op in ("delete_manifest", "delete_object", "delete_replaced"):
            self.objects.pop(step.key, None)
        elif step.op == "write_pack":
            assert step.new_pack is not None
            index = plan.new_packs.index(step.new_pack)
            digest = hashlib.sha256(repr(step.new_pack.layout()).encode()).hexdigest()
            key = f"{self.prefix}packs/{digest[:2]}/{digest}"  # named by content, as packs are
            self.objects[key] = step.new_pack.live_bytes
            new_keys[index] = key
        else:
            packs = {i: p for i, p in enumerate(plan.new_packs) if i in new_keys}
            self._rewrite(step.key, packs, new_keys)

    def _rewrite(self, key: str, packs: dict[int, NewPack], new_keys: dict[int, str]) -> None:
        refs = self.manifests[key]

        def move(c: ChunkRef) -> ChunkRef:
            for i, pack in packs.items():
                offset = pack.relocate(c)
                if offset is not None:
                    return ChunkRef(new_keys[i], offset, c.length)
            return c

        chunks = {h: tuple(move(c) for c in refs.chunks.get(h, ())) for h in refs.chunks}
        changed = {h for h in refs.chunks if chunks[h] != refs.chunks[h]}
        grew = True
        while grew:
            parents = {p for p, kids in refs.children.items() if kids & changed} - changed
            changed |= parents
            grew = bool(parents)
        renamed = {h: f"{h}.r{self.generation}" for h in changed if h != key}
        for old, new in renamed.items():  # the new lists and parts first ...
            self.objects[new] = self.objects[old]
        self.manifests[key] = replace(  # ... then the manifest, in one write
            refs,
            objects=frozenset(renamed.get(k, k) for k in refs.objects),
            chunks={renamed.get(h, h): cs for h, cs in chunks.items()},
            children={
                renamed.get(h, h): frozenset(renamed.get(k, k) for k in kids)
                for h, kids in refs.children.items()
            },
        )
