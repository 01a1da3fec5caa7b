"""The prune planner: live set, sweep, crashed and in-progress uploads, repack, step order."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akoshad.storage.prune_plan import PrunePlan, plan_prune, upload_id_time
from akoshad.storage.prune_refs import (
    ChunkRef,
    ManifestRefs,
    MissingDocumentError,
    documents_needed,
    manifest_refs,
    sealed_objects_refs,
)
from akoshad.storage.repack import NewPack, PackRepack, merge_ranges
from tests.prune_model import Bucket

P = "systems/box/"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OLD1, OLD2, NEW1, NEW2 = (
    "20261101T100000000000Z-000001",
    "20261102T100000000000Z-000002",
    "20261120T100000000000Z-000003",
    "20261121T100000000000Z-000004",
)


def mkey(upload_id: str) -> str:
    return f"{P}uploads/{upload_id}/manifest.json"


def chunk(pack: str, offset: int, length: int) -> dict[str, Any]:
    return {"sha256": "0" * 64, "size": length, "key": P + pack, "offset": offset,
            "length": length, "compression": "zstd", "encryption": "none"}  # fmt: skip


def format1(upload_id: str, objects: list[str], memories: bool = True) -> dict[str, Any]:
    """A format-1 manifest: each entry a whole object (``objects``: keys under P)."""
    entries: list[dict[str, Any]] = [
        {"path": o.rsplit("/", 1)[1], "name": o.rsplit("/", 1)[1], "key": P + o, "size": 1,
         "sha256": "0" * 64, "stored_size": 1, "compression": "gzip", "kind": "file"}
        for o in objects
    ]  # fmt: skip
    own = [e["name"] for e in entries if e["key"].startswith(f"{P}uploads/{upload_id}/")]
    return {"files": own + (["memories.json"] if memories else []),
            "metadata": {"format": 1, "upload_id": upload_id, "files": entries}}  # fmt: skip


def parse(upload_id: str, manifest: dict[str, Any], docs: dict[str, Any]) -> ManifestRefs:
    return manifest_refs(upload_id, mkey(upload_id), manifest, docs)


# ---- the live set from real manifest shapes -----------------------------------------

DOCS = {
    P + "chunklists/aa/big.json.gz": {"chunks": [chunk("packs/p1/one", 0, 100),
                                                 chunk("packs/p1/one", 100, 50)]},
    P + "index/bb/part1.json.gz": {"files": [
        {"path": "a.duckdb", "chunk_list": {"key": P + "chunklists/aa/big.json.gz"}},
        {"path": "notes", "chunks": [chunk("packs/p2/two", 10, 20)]},
    ]},
}  # fmt: skip
LISTING = {
    P + "owner.json": 10,
    P + "keys/k1": 10,
    P + "README-by-someone": 5,
    mkey(OLD1): 100,
    P + f"uploads/{OLD1}/a.gz": 1000,  # still used by OLD2
    P + f"uploads/{OLD1}/b.gz": 2000,  # only OLD1's
    P + f"uploads/{OLD1}/memories.json": 300,
    mkey(OLD2): 100,
    P + f"uploads/{OLD2}/c.gz": 500,
    P + f"uploads/{OLD2}/memories.json": 300,
    mkey(NEW1): 100,
    P + f"uploads/{NEW1}/memories.json": 300,
    P + "packs/p1/one": 150,
    P + "packs/p2/two": 100,
    P + "packs/p3/three": 400,  # only NEW2's (dropped)
    P + "index/bb/part1.json.gz": 40,
    P + "chunklists/aa/big.json.gz": 30,
    P + "chunklists/cc/orphan.json.gz": 30,
    mkey(NEW2): 100,
}
MANIFESTS = [
    format1(OLD1, [f"uploads/{OLD1}/a.gz", f"uploads/{OLD1}/b.gz"]),
    format1(OLD2, [f"uploads/{OLD1}/a.gz", f"uploads/{OLD2}/c.gz"]),
    {"files": ["memories.json"],
     "metadata": {"format": 2, "index": {"parts": [{"key": P + "index/bb/part1.json.gz"}]}}},
    {"files": [], "metadata": {"format": 2, "files": [
        {"path": "x", "chunks": [chunk("packs/p3/three", 0, 400)]}]}},
]  # fmt: skip
IDS = [OLD1, OLD2, NEW1, NEW2]


def mixed_refs() -> list[ManifestRefs]:
    return [parse(u, m, DOCS) for u, m in zip(IDS, MANIFESTS, strict=True)]


def test_refs_of_format1_and_format2_manifests() -> None:
    old2, new1 = mixed_refs()[1], mixed_refs()[2]
    assert old2.objects == {
        P + f"uploads/{OLD1}/a.gz",
        P + f"uploads/{OLD2}/c.gz",
        P + f"uploads/{OLD2}/memories.json",
    }
    assert old2.chunks == {}
    assert new1.objects == {
        P + f"uploads/{NEW1}/memories.json",
        P + "index/bb/part1.json.gz",
        P + "chunklists/aa/big.json.gz",
    }
    assert set(new1.chunk_refs()) == {
        ChunkRef(P + "packs/p1/one", 0, 100),
        ChunkRef(P + "packs/p1/one", 100, 50),
        ChunkRef(P + "packs/p2/two", 10, 20),
    }
    assert new1.children == {
        mkey(NEW1): {P + "index/bb/part1.json.gz"},
        P + "index/bb/part1.json.gz": {P + "chunklists/aa/big.json.gz"},
    }


def test_documents_are_read_in_two_rounds_and_a_missing_one_is_named() -> None:
    manifest = MANIFESTS[2]
    assert documents_needed(manifest, {}) == {P + "index/bb/part1.json.gz"}
    part_only = {P + "index/bb/part1.json.gz": DOCS[P + "index/bb/part1.json.gz"]}
    assert documents_needed(manifest, part_only) == {P + "chunklists/aa/big.json.gz"}
    assert documents_needed(manifest, DOCS) == set()
    with pytest.raises(MissingDocumentError, match=r"big\.json\.gz"):
        parse(NEW1, manifest, part_only)
    with pytest.raises(ValueError, match="offset"):
        parse(NEW2, {"files": [], "metadata": {"files": [{"chunks": [{"key": "k"}]}]}}, {})
    with pytest.raises(ValueError, match="not a list"):
        parse(NEW2, {"files": [], "metadata": {"files": {"a": 1}}}, {})


def test_live_set_of_mixed_manifests_and_what_is_swept() -> None:
    plan = plan_prune("box", mixed_refs(), LISTING, {OLD2, NEW1}, now=NOW, stored_bound=10)
    assert plan.kept_uploads == (OLD2, NEW1)
    assert plan.removed_uploads == (OLD1, NEW2)
    assert plan.delete_manifests == (mkey(OLD1), mkey(NEW2))
    assert plan.delete_objects == (
        P + "chunklists/cc/orphan.json.gz",
        P + "packs/p3/three",
        P + f"uploads/{OLD1}/b.gz",
        P + f"uploads/{OLD1}/memories.json",
    )
    assert plan.freed_bytes == 100 + 100 + 30 + 400 + 2000 + 300
    assert plan.missing == ()
    # live: manifests 200, a.gz 1000, c.gz 500, 2 memories 600, part 40, list 30,
    # packs: p1 150 of 150, p2 20 of 100
    assert plan.referenced_bytes == 200 + 1000 + 500 + 600 + 70 + 150 + 20
    # p2 is 20% live: repacked
    assert [s.key for p in plan.new_packs for s in p.sources] == [P + "packs/p2/two"]
    assert plan.new_packs[0].sources[0].live_ranges == ((10, 20),)
    assert plan.rewrite_manifests == (mkey(NEW1),)
    assert plan.replaced == (P + "index/bb/part1.json.gz", P + "packs/p2/two")
    assert plan.repack_freed_bytes == 80
    assert plan.old_packs == {P + "packs/p2/two"}
    assert plan.summary() == {
        "uploads_kept": 2,
        "uploads_removed": [OLD1, NEW2],
        "crashed_uploads": [],
        "objects_deleted": 6 + 2,  # and what the repack replaces: part1 and p2
        "packs_repacked": 1,
        "bytes_freed": 2930 + 80,
        "bytes_referenced": 2540,
        # all listed (5575) less what goes: the owner record, the key and a stranger's
        # object stay (25 bytes more than the referenced), as the real run counts them
        "bytes_stored_after": 5575 - 2930 - 80,
        "missing": [],
        "unreadable": [],
    }
    # the dropped uploads may be given bare: same plan
    bare = [m if m.upload_id in (OLD2, NEW1) else ManifestRefs(m.upload_id, m.manifest_key)
            for m in mixed_refs()]  # fmt: skip
    assert plan_prune("box", bare, LISTING, {OLD2, NEW1}, now=NOW, stored_bound=10) == plan


def test_owner_keys_and_unknown_keys_are_never_deleted() -> None:
    plan = plan_prune("box", mixed_refs(), LISTING, {NEW1}, now=NOW)
    gone = set(plan.delete_manifests) | set(plan.delete_objects) | set(plan.replaced)
    assert P + "owner.json" not in gone
    assert P + "keys/k1" not in gone
    assert P + "README-by-someone" not in gone


def test_steps_delete_manifests_first_then_objects_then_repack() -> None:
    plan = plan_prune("box", mixed_refs(), LISTING, {OLD2, NEW1}, now=NOW)
    ops = [s.op for s in plan.steps()]
    assert ops == sorted(ops, key=["delete_manifest", "delete_object", "write_pack",
                                   "rewrite_manifest", "delete_replaced"].index)  # fmt: skip
    assert ops[0] == "delete_manifest" and "delete_object" in ops


def test_uploads_without_manifest_in_progress_young_or_crashed() -> None:
    crashed, young, running = (
        "20261101T000000000000Z-00000a",
        "20261130T110000000000Z-00000b",
        "20261101T000000000000Z-00000c",
    )
    listing = {
        **LISTING,
        P + f"uploads/{crashed}/x.gz": 70,
        P + f"uploads/{young}/y.gz": 80,
        P + f"uploads/{running}/z.gz": 90,
        P + "uploads/not-a-time/w.gz": 60,
        P + "packs/p9/written-by-running": 500,
    }
    plan = plan_prune(
        "box", mixed_refs(), listing, {NEW1}, now=NOW, in_progress={running},
        protected={P + "packs/p9/written-by-running"},
    )  # fmt: skip
    assert plan.crashed_uploads == (crashed,)
    assert P + f"uploads/{crashed}/x.gz" in plan.delete_objects
    for kept in (f"uploads/{young}/y.gz", f"uploads/{running}/z.gz", "uploads/not-a-time/w.gz",
                 "packs/p9/written-by-running"):  # fmt: skip
        assert P + kept not in plan.delete_objects
    # a shorter grace makes the young one a crashed one, but never the running one
    plan = plan_prune("box", mixed_refs(), listing, {NEW1}, now=NOW, in_progress={running},
                      grace=timedelta(minutes=30))  # fmt: skip
    assert set(plan.crashed_uploads) == {crashed, young}
    assert P + f"uploads/{running}/z.gz" not in plan.delete_objects


def test_refuses_an_unread_manifest_an_empty_keep_and_a_bad_system_id() -> None:
    with pytest.raises(ValueError, match="was not read"):
        plan_prune("box", mixed_refs()[1:], LISTING, {NEW1}, now=NOW)
    with pytest.raises(ValueError, match="every upload"):
        plan_prune("box", mixed_refs(), LISTING, {"nope"}, now=NOW)
    with pytest.raises(ValueError, match="twice"):
        plan_prune("box", mixed_refs() * 2, LISTING, {NEW1}, now=NOW)
    with pytest.raises(ValueError, match="system_id"):
        plan_prune("../x", [], {}, set(), now=NOW)
    assert plan_prune("box", [], {P + "owner.json": 1}, set(), now=NOW).delete_objects == ()


def _one_pack_plan(live: int, size: int = 100, bound: float = 10.0) -> PrunePlan:
    refs = ManifestRefs(
        NEW1, mkey(NEW1), chunks={mkey(NEW1): (ChunkRef(P + "packs/p/x", 0, live),)}
    )
    listing = {mkey(NEW1): 0, P + "packs/p/x": size}
    return plan_prune("box", [refs], listing, {NEW1}, now=NOW, stored_bound=bound)


def test_repack_threshold() -> None:
    assert [p.sources[0].key for p in _one_pack_plan(79).new_packs] == [P + "packs/p/x"]
    assert _one_pack_plan(80).new_packs == ()
    assert _one_pack_plan(81).new_packs == ()
    # the global bound: 81% live is 1.23x the referenced bytes, over 1.2x
    assert len(_one_pack_plan(81, bound=1.2).new_packs) == 1
    assert _one_pack_plan(84, bound=1.2).new_packs == ()
    assert _one_pack_plan(100, bound=1.0).new_packs == ()  # nothing to gain


def test_one_prune_repacks_within_its_budget_least_live_first() -> None:
    """A prune holds the pass lock: its repack moves at most ``repack_budget`` bytes (each
    source pack read whole, its live bytes written again), the packs that free most first
    (always one at least); the rest is left for the next prune."""
    lives = {"a": 10, "b": 30, "c": 50}  # of 100 bytes each
    chunks = tuple(ChunkRef(f"{P}packs/p/{k}", 0, n) for k, n in lives.items())
    refs = ManifestRefs(NEW1, mkey(NEW1), chunks={mkey(NEW1): chunks})
    listing = {mkey(NEW1): 0, **{f"{P}packs/p/{k}": 100 for k in lives}}

    def repacked(budget: int) -> list[str]:
        plan = plan_prune("box", [refs], listing, {NEW1}, now=NOW, repack_budget=budget)
        return sorted(s.key[-1] for pack in plan.new_packs for s in pack.sources)

    assert repacked(10**9) == ["a", "b", "c"]
    assert repacked(110 + 130) == ["a", "b"]  # 100 read and 10 written, 100 and 30
    assert repacked(110 + 129) == ["a"]
    assert repacked(1) == ["a"]  # one at least: a prune always moves on


def test_merge_relocate_and_group() -> None:
    assert merge_ranges([(10, 5), (0, 5), (5, 5), (30, 0), (12, 10)]) == ((0, 22),)
    a = PackRepack("A", 100, ((0, 10), (50, 20)))
    b = PackRepack("B", 40, ((5, 5),))
    new = NewPack((a, b))
    assert new.live_bytes == 35
    assert new.layout() == [("A", 0, 10, 0), ("A", 50, 20, 10), ("B", 5, 5, 30)]
    assert new.relocate(ChunkRef("A", 55, 10)) == 15
    assert new.relocate(ChunkRef("B", 5, 5)) == 30
    assert new.relocate(ChunkRef("A", 45, 10)) is None  # not live
    assert new.relocate(ChunkRef("A", 65, 10)) is None  # runs past a live range
    assert new.relocate(ChunkRef("C", 0, 1)) is None
    assert new.relocate(ChunkRef("B", 0, 0)) == 0
    assert upload_id_time(OLD1) == datetime(2026, 11, 1, 10, tzinfo=UTC)
    assert upload_id_time("manual-upload") is None


def test_new_packs_are_grouped_up_to_the_target_size() -> None:
    refs = ManifestRefs(NEW1, mkey(NEW1), chunks={mkey(NEW1): tuple(
        ChunkRef(P + f"packs/p/{i}", 0, 10) for i in range(5))})  # fmt: skip
    listing = {mkey(NEW1): 0, **{P + f"packs/p/{i}": 100 for i in range(5)}}
    plan = plan_prune("box", [refs], listing, {NEW1}, now=NOW, pack_target=25)
    assert [len(p.sources) for p in plan.new_packs] == [2, 2, 1]


def test_the_model_runs_the_mixed_plan_and_keeps_every_kept_upload() -> None:
    bucket = Bucket(P, dict(LISTING), {m.manifest_key: m for m in mixed_refs()})
    plan = plan_prune("box", bucket.refs(), bucket.objects, {OLD2, NEW1}, now=NOW)
    for stop in range(len(plan.steps()) + 1):
        partial = Bucket(P, dict(LISTING), {m.manifest_key: m for m in mixed_refs()})
        partial.run(plan, stop_after=stop)
        assert partial.problems({OLD2, NEW1}) == [], stop
    bucket.run(plan)
    assert P + "packs/p2/two" not in bucket.objects
    assert P + "index/bb/part1.json.gz" not in bucket.objects
    assert P + "index/bb/part1.json.gz.r1" in bucket.objects
    assert P + "chunklists/aa/big.json.gz" in bucket.objects  # unchanged, still shared


# ---- random reference graphs ----------------------------------------------------------


@st.composite
def buckets(draw: st.DrawFn) -> tuple[Bucket, set[str], set[str]]:
    """A bucket of format-1 and format-2 uploads sharing objects, lists and packs, with
    garbage, a crashed upload and one in progress; and the uploads to keep."""
    objects: dict[str, int] = {P + "owner.json": 10, P + "keys/k": 10}
    catalogue: list[ChunkRef] = []
    for p in range(draw(st.integers(1, 6))):
        offset = 0
        for length in draw(st.lists(st.integers(1, 100), min_size=1, max_size=6)):
            catalogue.append(ChunkRef(f"{P}packs/{p:02x}/pack{p}", offset, length))
            offset += length
        objects[f"{P}packs/{p:02x}/pack{p}"] = offset
    chunks_st = st.lists(st.sampled_from(catalogue), max_size=5).map(lambda c: tuple(set(c)))
    lists = {f"{P}chunklists/{i:02x}/l{i}": draw(chunks_st) for i in range(3)}
    parts = {f"{P}index/{i:02x}/p{i}": (draw(chunks_st), draw(st.sampled_from([None, *lists])))
             for i in range(3)}  # fmt: skip
    objects.update({k: draw(st.integers(1, 50)) for k in [*lists, *parts]})
    manifests: dict[str, ManifestRefs] = {}
    ids = [f"202611{d + 1:02d}T100000000000Z-{d:06x}" for d in range(draw(st.integers(1, 8)))]
    own: list[str] = []
    for upload_id in ids:
        key = mkey(upload_id)
        objects[key] = draw(st.integers(1, 50))
        mine = [f"{P}uploads/{upload_id}/f{j}" for j in range(draw(st.integers(0, 2)))]
        objects.update({k: draw(st.integers(1, 500)) for k in mine})
        whole = set(mine) | set(draw(st.lists(st.sampled_from(own), max_size=2)) if own else ())
        own += mine
        chunks: dict[str, tuple[ChunkRef, ...]] = {key: draw(chunks_st)}
        children: dict[str, frozenset[str]] = {}
        for part in draw(st.lists(st.sampled_from(sorted(parts)), max_size=2, unique=True)):
            children.setdefault(key, frozenset())
            children[key] |= {part}
            chunks[part], child = parts[part]
            if child:
                children[part] = frozenset({child})
                chunks[child] = lists[child]
        for lst in draw(st.lists(st.sampled_from(sorted(lists)), max_size=2, unique=True)):
            children[key] = children.get(key, frozenset()) | {lst}
            chunks[lst] = lists[lst]
        named = whole | set(chunks) - {key}
        manifests[key] = ManifestRefs(upload_id, key, frozenset(named), chunks, children)
    objects[f"{P}uploads/20261001T000000000000Z-dead00/x"] = 300  # crashed
    objects[f"{P}uploads/20261130T115900000000Z-b00000/y"] = 300  # in progress
    objects[f"{P}packs/ee/orphan"] = 1000
    keep = set(draw(st.lists(st.sampled_from(ids), min_size=1)))
    return Bucket(P, objects, manifests), keep, {"20261130T115900000000Z-b00000"}


def _named_by(refs: ManifestRefs) -> set[str]:
    named = {refs.manifest_key} | set(refs.objects) | set(refs.chunks)
    for kids in refs.children.values():
        named |= kids
    return named | {c.pack for c in refs.chunk_refs()}


def _plan(bucket: Bucket, keep: set[str], busy: set[str]) -> PrunePlan:
    return plan_prune("box", bucket.refs(), bucket.objects, keep, now=NOW, in_progress=busy)


def _managed_stored(bucket: Bucket) -> int:
    extra = ("owner.json", "keys/", "uploads/20261130T115900000000Z-b00000/")
    return sum(
        n for k, n in bucket.objects.items() if not k.startswith(tuple(P + e for e in extra))
    )


def _check_done(bucket: Bucket, keep: set[str], start: dict[str, int]) -> None:
    assert bucket.problems(keep) == []
    for key in (P + "owner.json", P + "keys/k", f"{P}uploads/20261130T115900000000Z-b00000/y"):
        assert bucket.objects[key] == start[key]
    assert {m.upload_id for m in bucket.refs()} == keep
    assert _managed_stored(bucket) <= 1.2 * bucket.referenced_bytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buckets())
def test_random_graphs_never_delete_what_a_kept_upload_names(
    drawn: tuple[Bucket, set[str], set[str]],
) -> None:
    bucket, keep, busy = drawn
    start = dict(bucket.objects)
    plan = _plan(bucket, keep, busy)
    named = set().union(*(_named_by(bucket.manifests[mkey(u)]) for u in keep))
    assert not named & (set(plan.delete_manifests) | set(plan.delete_objects))
    assert set(plan.replaced) <= {s.key for p in plan.new_packs for s in p.sources} | named
    bucket.run(plan)
    _check_done(bucket, keep, start)
    assert _plan(bucket, keep, busy).steps() == []  # a second prune finds nothing to do


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buckets(), st.data())
def test_random_graphs_survive_a_kill_at_any_step_and_the_next_prune_finishes(
    drawn: tuple[Bucket, set[str], set[str]], data: st.DataObject
) -> None:
    bucket, keep, busy = drawn
    start = dict(bucket.objects)
    plan = _plan(bucket, keep, busy)
    stop = data.draw(st.integers(0, len(plan.steps())))
    bucket.run(plan, stop_after=stop)
    # every upload still listed (not only the kept ones) restores at every moment
    assert bucket.problems({m.upload_id for m in bucket.refs()}) == []
    bucket.run(_plan(bucket, keep, busy))
    _check_done(bucket, keep, start)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 1000), st.integers(0, 1000)), min_size=1, max_size=12))
def test_live_data_after_repack_is_within_the_bound(packs: list[tuple[int, int]]) -> None:
    chunks = tuple(
        ChunkRef(f"{P}packs/p/{i}", 0, min(live, size)) for i, (size, live) in enumerate(packs)
    )
    refs = ManifestRefs(NEW1, mkey(NEW1), chunks={mkey(NEW1): chunks})
    listing = {mkey(NEW1): 0, **{f"{P}packs/p/{i}": size for i, (size, _) in enumerate(packs)}}
    plan = plan_prune("box", [refs], listing, {NEW1}, now=NOW)
    assert plan.live_stored_bytes <= 1.2 * plan.referenced_bytes
    for pack in plan.new_packs:
        assert all(s.live_bytes < s.size for s in pack.sources)  # only packs with dead bytes


def test_sealed_uploads_keep_their_skip_list_and_are_repacked_only_when_rewritable() -> None:
    """An encrypted upload's documents cannot be rewritten without its recipients and name
    key: its half-dead pack stays as it is (a plain one is repacked); its sealed skip list
    is live. Once opened and found ``rewritable``, its pack is repacked like any other."""
    part = f"{P}index/aa/{'a' * 64}.json.gz.age"
    skips = f"{P}index/bb/{'b' * 64}.json.gz.age"
    sealed = {
        "files": [],
        "metadata": {
            "format": 2,
            "index": {
                "parts": [{"key": part, "compression": "gzip", "encryption": "age"}],
                "skipped": {"key": skips, "compression": "gzip", "encryption": "age"},
            },
        },
    }
    entry = {"path": "a", "chunks": [chunk("packs/s1/sealed", 0, 100)]}
    refs = parse(NEW1, sealed, {part: {"files": [entry]}})
    assert refs.sealed and {part, skips} <= refs.objects
    plain = {"files": [], "metadata": {"format": 2, "files": [
        {"path": "b", "chunks": [chunk("packs/p1/plain", 0, 100)]}]}}  # fmt: skip
    listing = {mkey(NEW1): 10, mkey(NEW2): 10, part: 10, skips: 10,
               P + "packs/s1/sealed": 1000, P + "packs/p1/plain": 1000}  # fmt: skip
    plan = plan_prune("box", [refs, parse(NEW2, plain, {})], listing, {NEW1, NEW2}, now=NOW)
    assert plan.old_packs == {P + "packs/p1/plain"}  # the sealed one is as dead, and stays
    assert skips not in plan.delete_objects and part not in plan.delete_objects
    assert mkey(NEW1) not in plan.rewrite_manifests
    # opened with the identity and named by the name key configured now: repacked too
    assert not refs.movable and replace(refs, rewritable=True).movable
    opened = [replace(refs, rewritable=True), parse(NEW2, plain, {})]
    plan = plan_prune("box", opened, listing, {NEW1, NEW2}, now=NOW)
    assert plan.old_packs == {P + "packs/p1/plain", P + "packs/s1/sealed"}
    assert mkey(NEW1) in plan.rewrite_manifests and part in plan.replaced
    assert skips not in plan.delete_objects and skips not in plan.replaced


def test_a_sealed_upload_known_by_its_objects_list_keeps_every_object_it_names() -> None:
    """A sealed upload read from its readable objects list (no identity): every key listed
    is live, and a pack it names stays where it is, even when a plain upload's chunk refs
    make it look half dead (repacking it would leave the sealed upload pointing at nothing)."""
    part = f"{P}index/aa/{'a' * 64}.json.gz.age"
    shared, own = P + "packs/s1/shared", P + "packs/s2/own"
    index = {"parts": [{"key": part, "compression": "gzip", "encryption": "age"}]}
    manifest = {
        "files": ["memories.json"],
        "metadata": {"format": 2, "index": {**index, "objects": [part, shared, own]}},
    }
    assert sealed_objects_refs(NEW1, mkey(NEW1), {"metadata": {"index": index}}, P) is None
    refs = sealed_objects_refs(NEW1, mkey(NEW1), manifest, P)
    assert refs is not None
    memories = f"{P}uploads/{NEW1}/memories.json"
    assert refs.sealed and refs.objects == {part, shared, own, memories}
    plain = {"files": [], "metadata": {"format": 2, "files": [
        {"path": "b", "chunks": [chunk("packs/s1/shared", 0, 100)]}]}}  # fmt: skip
    listing = {mkey(NEW1): 10, mkey(NEW2): 10, mkey(OLD1): 10, part: 10, memories: 10,
               shared: 1000, own: 1000, P + "packs/x/dropped": 500}  # fmt: skip
    plan = plan_prune(
        "box",
        [refs, parse(NEW2, plain, {}), ManifestRefs(OLD1, mkey(OLD1))],
        listing,
        {NEW1, NEW2},
        now=NOW,
    )
    assert plan.old_packs == frozenset()  # the shared pack is not repacked
    assert set(plan.delete_objects) == {P + "packs/x/dropped"}
    assert plan.missing == ()
    for bad in ("systems/other/x", P + "../../x", 7):
        with pytest.raises(ValueError, match="not a key under"):
            listed = {**index, "objects": [bad]}
            sealed_objects_refs(NEW1, mkey(NEW1), {"metadata": {"index": listed}}, P)


# ---- a kept upload whose documents cannot be read --------------------------------------

# stored times (seconds): OLD1's objects, OLD2's, then NEW1's, then NEW2's
TIMES = {
    mkey(OLD1): 100.0,
    P + f"uploads/{OLD1}/a.gz": 90.0,
    P + f"uploads/{OLD1}/b.gz": 90.0,
    P + f"uploads/{OLD1}/memories.json": 95.0,
    P + "packs/p1/one": 150.0,
    P + f"uploads/{OLD2}/c.gz": 190.0,
    P + f"uploads/{OLD2}/memories.json": 195.0,
    mkey(OLD2): 200.0,
    P + "packs/p2/two": 250.0,
    P + "index/bb/part1.json.gz": 280.0,
    P + "chunklists/aa/big.json.gz": 280.0,
    mkey(NEW1): 300.0,
    P + f"uploads/{NEW1}/memories.json": 295.0,
    P + "chunklists/cc/orphan.json.gz": 350.0,
    P + "packs/p3/three": 400.0,
    mkey(NEW2): 410.0,
}


def unreadable_old2() -> list[ManifestRefs]:
    """The mixed uploads, OLD2's documents unreadable (its references unknown)."""
    lost = "index part systems/box/index/zz/lost.json.gz is missing"
    return [
        ManifestRefs(m.upload_id, m.manifest_key, unreadable=lost) if m.upload_id == OLD2 else m
        for m in mixed_refs()
    ]


def test_what_a_kept_upload_that_cannot_be_read_may_use_is_kept() -> None:
    """OLD2 is kept but its references are unknown: everything stored up to its manifest
    (and every document) stays, none of it is repacked; dropped manifests still go, and what
    was stored after it and is used by no other kept upload is swept or repacked."""
    plan = plan_prune(
        "box",
        unreadable_old2(),
        LISTING,
        {OLD2, NEW1},
        now=NOW,
        stored_bound=10,
        times=TIMES,
        fence_margin=timedelta(0),
    )
    assert plan.unreadable == (
        f"upload {OLD2}: index part systems/box/index/zz/lost.json.gz is missing",
    )
    assert plan.delete_manifests == (mkey(OLD1), mkey(NEW2))  # retention still applies
    # b.gz and OLD1's memories.json (stored before OLD2) and the orphan chunk list (a
    # document) stay; NEW2's pack, stored after OLD2 and used by nothing kept, goes
    assert plan.delete_objects == (P + "packs/p3/three",)
    # p2, stored after OLD2, is repacked as before; the index part it rewrites stays
    assert plan.old_packs == {P + "packs/p2/two"}
    assert plan.replaced == (P + "packs/p2/two",)
    assert plan.summary()["unreadable"] == list(plan.unreadable)
    # a pack stored up to OLD2 is never repacked, however little of it is known to be used
    p1_half = replace(
        mixed_refs()[2],
        chunks={P + "index/bb/part1.json.gz": (ChunkRef(P + "packs/p1/one", 0, 10),)},
    )
    refs = [p1_half if r.upload_id == NEW1 else r for r in unreadable_old2()]
    plan = plan_prune("box", refs, LISTING, {OLD2, NEW1}, now=NOW, times=TIMES,
                      fence_margin=timedelta(0))  # fmt: skip
    assert P + "packs/p1/one" not in plan.old_packs
    # the margin widens the fence: 60 s more keeps NEW1's p2 where it is
    plan = plan_prune("box", unreadable_old2(), LISTING, {OLD2, NEW1}, now=NOW,
                      stored_bound=10, times=TIMES, fence_margin=timedelta(seconds=60))  # fmt: skip
    assert plan.old_packs == frozenset() and plan.delete_objects == (P + "packs/p3/three",)


@pytest.mark.parametrize("unknown", ["manifest", "object", "no times"])
def test_an_unknown_time_keeps_more(unknown: str) -> None:
    """No stored time for the unreadable upload's manifest: every object stays (only the
    dropped manifests go); none for an object: that object stays."""
    times = dict(TIMES)
    if unknown == "manifest":
        del times[mkey(OLD2)]
    elif unknown == "object":
        times[P + "packs/p3/three"] = float("nan")
    else:
        times = {}
    plan = plan_prune("box", unreadable_old2(), LISTING, {OLD2, NEW1}, now=NOW, times=times,
                      fence_margin=timedelta(0))  # fmt: skip
    assert plan.delete_manifests == (mkey(OLD1), mkey(NEW2))
    assert plan.delete_objects == ()
    # p2 is stored after OLD2's manifest: repacked only when that manifest's time is known
    assert plan.old_packs == ({P + "packs/p2/two"} if unknown == "object" else frozenset())


def test_readable_uploads_are_planned_as_before_whatever_the_times() -> None:
    """Times matter only for an unreadable kept upload."""
    plain = plan_prune("box", mixed_refs(), LISTING, {OLD2, NEW1}, now=NOW, stored_bound=10)
    timed = plan_prune("box", mixed_refs(), LISTING, {OLD2, NEW1}, now=NOW, stored_bound=10,
                       times=TIMES, fence_margin=timedelta(0))  # fmt: skip
    assert timed == plain


def _stored_times(bucket: Bucket, garbage: float) -> dict[str, float]:
    """Stored times as a writer makes them: each upload's objects (its own, and shared ones
    it is the first to use) just before its manifest, the uploads in id order; what no
    upload names at ``garbage``."""
    times: dict[str, float] = {}
    for i, refs in enumerate(sorted(bucket.refs(), key=lambda r: r.upload_id)):
        for key in _named_by(refs) - {refs.manifest_key}:
            times.setdefault(key, 10.0 * i + 9)
        times[refs.manifest_key] = 10.0 * i + 10
    return {k: times.get(k, garbage) for k in bucket.objects}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(buckets(), st.data())
def test_random_graphs_keep_all_an_unreadable_kept_upload_uses(
    drawn: tuple[Bucket, set[str], set[str]], data: st.DataObject
) -> None:
    """One kept upload's references are unknown to the planner: nothing they name is
    deleted, replaced or moved, whatever else the plan does."""
    bucket, keep, busy = drawn
    lost = data.draw(st.sampled_from(sorted(keep)))
    truth = _named_by(bucket.manifests[mkey(lost)])
    times = _stored_times(bucket, data.draw(st.sampled_from([0.0, 5.0, 1e6])))
    refs = [
        ManifestRefs(r.upload_id, r.manifest_key, unreadable="lost") if r.upload_id == lost else r
        for r in bucket.refs()
    ]
    plan = plan_prune("box", refs, bucket.objects, keep, now=NOW, in_progress=busy,
                      times=times, fence_margin=timedelta(0))  # fmt: skip
    gone = set(plan.delete_manifests) | set(plan.delete_objects) | set(plan.replaced)
    assert not truth & gone
    assert not truth & plan.old_packs
    assert plan.unreadable == (f"upload {lost}: lost",)
    bucket.run(plan)
    assert bucket.problems(keep) == []


@pytest.mark.parametrize(
    ("changed", "trusted"),
    [
        ({P + "packs/p1/one": 300.0 + 59}, True),  # within the slack of NEW1's manifest
        ({P + "index/bb/part1.json.gz": 1000.0}, True),  # a document, written again later
        ({P + "packs/p1/one": 300.0 + 61}, False),  # NEW1 uses a pack stored after it
        ({P + f"uploads/{NEW1}/memories.json": 5000.0}, False),
    ],
)
def test_stored_times_not_made_by_the_writes_keep_everything(
    changed: dict[str, float], trusted: bool
) -> None:
    """A readable kept upload that uses an object stored after its manifest: the target's
    times were not made by its writes (a copy that did not keep them), so nothing is swept
    or repacked for the unreadable upload's sake; documents are written again, and do not
    count."""
    plan = plan_prune("box", unreadable_old2(), LISTING, {OLD2, NEW1}, now=NOW, stored_bound=10,
                      times={**TIMES, **changed}, fence_margin=timedelta(0))  # fmt: skip
    assert plan.delete_manifests == (mkey(OLD1), mkey(NEW2))
    if trusted:
        assert plan.delete_objects == (P + "packs/p3/three",)
        assert plan.old_packs == {P + "packs/p2/two"}
    else:
        assert plan.delete_objects == () and plan.old_packs == frozenset()
