"""pHash batch, radius search (exact against brute force), clusters, hash_catalog, the duplicate policy."""

from __future__ import annotations

import json

import cv2
import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rakuten.core.config import parse_section
from rakuten.core.errors import PipelineError
from rakuten.image.image_hash import COLUMNS, HashConfig, hash_catalog, hash_report
from rakuten.image.neighbours import (
    chunk_options,
    colour_differences,
    complete_clusters,
    components,
    entropy_balanced_chunks,
    groups_from_keys,
    hamming,
    near_duplicate_groups,
    radius_pairs,
)
from rakuten.image.phash import hash_variants
from rakuten.image.policy import duplicate_policy
from tests.helpers.stagerun import error_lines, run_stage_script
from tests.image.test_detectors import scene


def brute_force(index, queries, radius):
    n = len(index)
    out = set()
    for i in range(n):
        for j in range(n):
            if i != j and min(int(hamming(queries[i, v], index[j])) for v in range(queries.shape[1])) <= radius:
                out.add((min(i, j), max(i, j)))
    return out


def flip_random_bits(rows, n_bits, max_flips, rng):
    out = rows.copy()
    for row in out:
        for bit in rng.choice(n_bits, int(rng.integers(0, max_flips + 1)), replace=False):
            row[bit // 8] ^= np.uint8(1 << (bit % 8))
    return out


def test_multi_index_search_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (60, 8), dtype=np.uint8)  # 64-bit hashes
    index = np.concatenate([base, flip_random_bits(base[:20], 64, 8, rng)])
    queries = np.stack([index, np.roll(index, 1, axis=1)], axis=1)
    for radius in (0, 3, 8, 12):
        i, j, dist = radius_pairs(index, queries, radius)
        assert set(zip(i.tolist(), j.tolist())) == brute_force(index, queries, radius)
        assert (dist <= radius).all()


def test_search_is_exact_on_skewed_256_bit_hashes_whatever_the_block_size():
    """Look-alike catalog: most bits nearly constant, clusters of copies a few to ~40 bits apart."""
    rng = np.random.default_rng(1)
    bits = rng.random((150, 256)) < np.where(rng.random(256) < 0.7, 0.03, 0.5)  # 70% of bits nearly constant
    base = np.packbits(bits, axis=1)
    index = np.concatenate([base, flip_random_bits(base[:60], 256, 40, rng)])
    queries = np.stack([index, flip_random_bits(index, 256, 6, rng)], axis=1)
    expected = brute_force(index, queries, 24)
    assert len(expected) > 20
    for block in (1 << 21, 7):  # one block, and many tiny blocks
        stats: dict = {}
        i, j, _ = radius_pairs(index, queries, 24, block=block, stats=stats)
        assert set(zip(i.tolist(), j.tolist())) == expected
        assert sum(stats["chunk_bits"]) == 256 and stats["flips_per_chunk"] == 24 // stats["n_chunks"]


def test_chunking_is_chosen_for_the_catalog_size_and_balanced_by_entropy():
    assert chunk_options(256, 24) == [25, 13]  # exact 10-bit chunks or 19-20 bit chunks with one flip
    assert chunk_options(64, 12) == [13, 7, 5, 4, 3]
    rng = np.random.default_rng(2)
    bits = np.zeros((500, 64), np.uint8)
    bits[:, 32:] = rng.integers(0, 2, (500, 32))  # first half constant: zero entropy
    chunks = entropy_balanced_chunks(bits, 4)
    assert sorted(np.concatenate(chunks).tolist()) == list(range(64))
    assert [len(c) for c in chunks] == [16] * 4
    assert all((c >= 32).sum() == 8 for c in chunks)  # informative bits dealt evenly


def test_batched_phash_is_imagehash_phash_and_crops_change_it():
    grey = cv2.cvtColor(scene(64, seed=3), cv2.COLOR_BGR2GRAY)
    reference = np.packbits(np.asarray(imagehash.phash(Image.fromarray(grey), hash_size=16).hash).ravel())
    variants = hash_variants(grey, 16, (0.0, 0.05))
    assert variants.shape == (2, 32)
    assert variants[0].tobytes() == reference.tobytes()
    assert int(hamming(variants[0], variants[1])) > 0
    with pytest.raises(ValueError, match="square grey"):
        hash_variants(np.zeros((10, 12), np.uint8), 16, (0.0,))


def test_groups_and_components():
    assert groups_from_keys(["a", "b", "a", "", "", "c", "b"]).tolist() == [0, 1, 0, -1, -1, -1, 1]
    assert components(6, np.array([4, 1]), np.array([5, 2])).tolist() == [-1, 0, 0, -1, 1, 1]


def test_unreadable_rows_never_cluster_and_exact_copies_always_do():
    variants = np.zeros((5, 1, 32), np.uint8)  # identical hashes everywhere
    usable = np.array([True, True, False, True, True])
    variants[3, 0] = 255  # far from the others
    variants[4, 0, :16] = 255
    groups = near_duplicate_groups(variants, usable, radius=10, exact_groups=np.array([-1, -1, -1, 0, 0]))
    assert groups.tolist() == [0, 0, -1, 1, 1]


def test_hash_catalog_on_the_tiny_sample(tiny_catalog, tmp_path):
    rows = tiny_catalog.head(40).copy()
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    rows["image_path"] = [str(bad), str(tmp_path / "absent.jpg")] + rows["image_path"].tolist()[2:]
    rows.loc[rows.index[2], "image_path"] = rows["image_path"].iloc[3]  # one exact copy
    serial = hash_catalog(rows, HashConfig(n_jobs=1))
    assert list(serial.columns) == COLUMNS and serial["row_id"].tolist() == rows["row_id"].tolist()
    assert serial["decode_status"].tolist()[:2] == ["unreadable", "missing"]
    assert serial["sha1"].tolist()[:2] == ["", ""] and serial["phash"].tolist()[:2] == ["", ""]
    assert serial["exact_dup_group"].tolist()[:2] == [-1, -1] and serial["near_dup_group"].tolist()[:2] == [-1, -1]
    assert serial["exact_dup_group"].iloc[2] == serial["exact_dup_group"].iloc[3] >= 0
    assert serial["near_dup_group"].iloc[2] == serial["near_dup_group"].iloc[3] >= 0
    assert serial["phash"].str.len().iloc[2:].eq(64).all()
    parallel = hash_catalog(rows, HashConfig(n_jobs=2))
    pd.testing.assert_frame_equal(serial, parallel)
    report = hash_report(serial)
    assert report["rows"] == 40 and report["not_hashed"] == 2 and report["decode_status"]["missing"] == 1
    json.dumps(report)


def test_hash_params_validate_and_name_the_key():
    section = {
        "n_jobs": 1,
        "min_side": 16,
        "hash_size": 16,
        "radius": 24,
        "query_crops": [0.05],
        "verify_side": 16,
        "max_colour_difference": 6.0,
        "linkage": "complete",
    }
    assert parse_section(HashConfig, section, "image_hash").crops == (0.0, 0.05)
    with pytest.raises(PipelineError, match=r"image_hash\.query_crops\[0\] = 0\.5, expected a number in \[0\.0, 0\.25"):
        parse_section(HashConfig, {**section, "query_crops": [0.5]}, "image_hash")
    with pytest.raises(PipelineError, match=r"image_hash\.hash_size = 10, expected a multiple of 4"):
        parse_section(HashConfig, {**section, "hash_size": 10}, "image_hash")


def test_hash_stage_writes_its_outputs_and_fails_in_one_line(tiny_catalog, tmp_path):
    (tmp_path / "data" / "interim").mkdir(parents=True)
    tiny_catalog.to_parquet(tmp_path / "data" / "interim" / "catalog.parquet")
    result = run_stage_script("image_hash", tmp_path, {"image_hash.n_jobs": 1})
    assert result.returncode == 0, result.stderr[-2000:]
    table = pd.read_parquet(tmp_path / "data" / "interim" / "image_hashes.parquet")
    assert len(table) == len(tiny_catalog) and (table["near_dup_group"] >= 0).any()
    report = json.loads((tmp_path / "reports" / "image_hash.json").read_text())
    assert report["hashed"] == len(tiny_catalog) and report["near_duplicate_clusters"] > 0
    failed = run_stage_script("image_hash", tmp_path / "bad", {"image_hash.radius": -1})
    assert failed.returncode == 2
    assert error_lines(failed) == ["error: params.yaml: image_hash.radius = -1, expected an integer in [0, 64]"]


def test_policy_keeps_one_per_class_and_weights_mixed_clusters():
    groups = np.array([0, 0, 0, 1, 1, 1, -1, 0])
    labels = np.array([10, 10, 10, 40, 50, 50, 60, 10])
    train = np.array([True, True, True, True, True, True, True, False])
    sharp = np.array([5.0, 9.0, 1.0, 3.0, 2.0, 8.0, 1.0, 1.0])
    readable = np.array([True] * 7 + [True])
    keep, weight = duplicate_policy(groups, labels, train, sharp, readable, 0.5)
    assert keep.tolist() == [False, True, False, True, False, True, True, True]
    assert weight.tolist() == [1, 1, 1, 0.5, 1, 0.5, 1, 1]
    keep, _ = duplicate_policy(groups, labels, train, sharp, np.array([False] + [True] * 7), 0.5)
    assert not keep[0]


def groups_searching_every_row(variants, usable, radius, exact_groups):
    """The clusters as found before copies were collapsed: the pair search over every usable row."""
    rows = np.flatnonzero(usable)
    i, j, _ = radius_pairs(variants[rows, 0], variants[rows], radius)
    i, j = rows[i], rows[j]
    for g in range(int(exact_groups.max(initial=-1)) + 1):
        members = np.flatnonzero(exact_groups == g)
        i, j = np.concatenate([i, members[:1].repeat(len(members) - 1)]), np.concatenate([j, members[1:]])
    return components(len(usable), i, j)


def test_copies_collapse_to_one_representative_with_the_same_clusters_as_searching_every_row():
    rng = np.random.default_rng(5)
    bits = rng.random((150, 256)) < np.where(rng.random(256) < 0.7, 0.03, 0.5)
    base = np.packbits(bits, axis=1)
    index = np.concatenate([base, flip_random_bits(base[:50], 256, 40, rng)])
    variants = np.stack([index, flip_random_bits(index, 256, 6, rng), flip_random_bits(index, 256, 6, rng)], 1)
    keys = [f"f{k}" for k in range(len(variants))]
    sources = rng.choice(len(variants), 30)  # copies of a few rows, some several times
    variants = np.concatenate([variants, variants[sources]])
    keys += [keys[s] if k % 3 else f"reencoded{k}" for k, s in enumerate(sources)]  # same hash, other bytes
    keys[7] = keys[120]  # same bytes, hashes apart: still linked
    order = rng.permutation(len(variants))
    variants, keys = variants[order], [keys[k] for k in order]
    usable = rng.random(len(variants)) > 0.05
    keys = [key if ok else "" for key, ok in zip(keys, usable)]
    exact = groups_from_keys(keys)
    stats: dict = {}
    groups = near_duplicate_groups(variants, usable, 24, exact, stats=stats)
    assert groups.tolist() == groups_searching_every_row(variants, usable, 24, exact).tolist()
    assert stats["rows"] == usable.sum() and stats["representatives"] < stats["rows"]
    assert len(set(groups[groups >= 0])) > 20 and (groups[~usable] == -1).all()
    distinct = np.unique(variants[usable].reshape(int(usable.sum()), -1), axis=0)
    assert stats["representatives"] == len(distinct)


def test_a_photo_shared_by_many_rows_costs_linear_work():
    """A seller's placeholder on 20,000 rows: one cluster, and no pair of copies is ever verified
    (searching every row verified ~13 candidates per pair of copies: 5e9 here, days and TBs)."""
    rng = np.random.default_rng(6)
    distinct = rng.integers(0, 256, (200, 5, 32), dtype=np.uint8)
    for n in (400, 20_000):  # the small case fails in a second on a quadratic search
        variants = np.concatenate([distinct[:100], np.repeat(distinct[100:101], n, axis=0), distinct[101:]])
        exact = np.full(len(variants), -1)
        exact[100 : 100 + n] = 0
        stats: dict = {}
        groups = near_duplicate_groups(variants, np.ones(len(variants), bool), 24, exact, stats=stats)
        assert stats["representatives"] == 200 and stats["candidates_verified"] <= 200 * 200
        assert (groups[100 : 100 + n] == 0).all() and (np.delete(groups, np.arange(100, 100 + n)) == -1).all()


def _chain_of_three():
    """Hashes A, B, C (one variant each): A~B and B~C within radius 24, A and C 40 bits apart."""
    bits = np.zeros((3, 256), bool)
    bits[:, ::2] = True
    bits[1, 1:41:2] = True  # B: 20 bits from A
    bits[2, 1:81:2] = True  # C: 20 bits from B, 40 from A
    return np.packbits(bits, axis=1)[:, None, :]


def test_complete_linkage_does_not_chain_a_b_c():
    variants = _chain_of_three()
    usable = np.ones(3, bool)
    assert near_duplicate_groups(variants, usable, 24, linkage="single").tolist() == [0, 0, 0]
    assert near_duplicate_groups(variants, usable, 24).tolist() == [0, 0, -1]
    # B and C closer than A and B: B pairs with C, A stays out
    bits = np.unpackbits(variants[:, 0], axis=1).astype(bool)
    bits[2] = bits[1]
    bits[2, 41:61:2] = True  # C: 10 bits from B, 30 from A
    closer = np.packbits(bits, axis=1)[:, None, :]
    assert near_duplicate_groups(closer, usable, 24).tolist() == [-1, 0, 0]
    # a fourth row near all three: it joins the closest pair it is near to both members of
    more = np.concatenate([variants, variants[1:2]])
    more[3, 0, -1] ^= 1
    assert near_duplicate_groups(more, np.ones(4, bool), 24).tolist() == [0, 0, -1, 0]
    with pytest.raises(ValueError, match="linkage"):
        near_duplicate_groups(variants, usable, 24, linkage="average")


def test_complete_clusters_merge_only_when_every_pair_is_an_edge():
    # edges 0-1 and 1-2, no 0-2: whichever edge comes first clusters, the third row stays out
    i, j = np.array([0, 1]), np.array([1, 2])
    assert complete_clusters(3, i, j, np.array([1, 0])).tolist() == [-1, 0, 0]
    assert complete_clusters(3, i, j, np.array([0, 1])).tolist() == [0, 0, -1]
    # two triangles joined by one edge (2-3): two clusters when the bridge comes last; in any order
    # every cluster is a clique of the edges
    i, j = np.array([0, 0, 1, 3, 3, 4, 2]), np.array([1, 2, 2, 4, 5, 5, 3])
    edges = set(zip(i.tolist(), j.tolist()))
    assert complete_clusters(6, i, j, np.arange(7)).tolist() == [0, 0, 0, 1, 1, 1]
    rng = np.random.default_rng(0)
    for _ in range(20):
        groups = complete_clusters(6, i, j, rng.permutation(7))
        for g in set(groups[groups >= 0].tolist()):
            rows = np.flatnonzero(groups == g).tolist()
            assert all((a, b) in edges for k, a in enumerate(rows) for b in rows[k + 1 :])


def test_colour_differences_equalise_brightness_and_are_exact():
    rng = np.random.default_rng(0)
    base = rng.integers(20, 200, (1, 2, 4, 4, 3)).astype(np.uint8)
    thumbs = np.concatenate([base, base + 8, base, base[:, ::-1]])  # a brighter copy; one value off; crops swapped
    thumbs[2, :, 0, 0, 0] += 48
    diff = colour_differences(thumbs, np.array([0, 0, 0]), np.array([1, 2, 3]))
    # one of 48 values 48 levels off: after equalising means, 47 values 1 level off and one 47 levels off
    assert diff.tolist() == [0.0, (47 * 1 + 47) / 48, 0.0]
    other = base.copy()
    other[..., 0], other[..., 2] = base[..., 2], base[..., 0]  # same grey shapes, colours swapped
    assert colour_differences(np.concatenate([base, other]), np.array([0]), np.array([1]))[0] > 6


def _look_alikes(tmp_path, n=40):
    """``n`` products of one class; for each a recoloured version (the same design in another
    colour: a look-alike, not a copy) and a re-encoded, cropped copy (a near duplicate)."""
    from rakuten.data.sample.defects import near_duplicate_of
    from rakuten.data.sample.images import render_product
    from rakuten.data.sample.render import encode_jpeg

    paths = []
    for k in range(n):
        rng = np.random.default_rng(k)
        img = render_product(2583, 128, rng)
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(40, 140))) % 180
        for name, picture in (
            ("a", img),
            ("b", cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)),
            ("c", near_duplicate_of(img, rng)),
        ):
            (tmp_path / f"{k}{name}.jpg").write_bytes(encode_jpeg(picture, 90))
            paths.append(str(tmp_path / f"{k}{name}.jpg"))
    return pd.DataFrame({"row_id": np.arange(len(paths)), "image_path": paths})


def test_near_duplicates_of_dense_look_alikes_precision_and_recall(tmp_path):
    frame = _look_alikes(tmp_path)

    def pair_scores(cfg):
        groups = hash_catalog(frame, cfg)["near_dup_group"].to_numpy()
        true = sum(groups[3 * k] >= 0 and groups[3 * k] == groups[3 * k + 2] for k in range(len(frame) // 3))
        predicted = sum(c * (c - 1) // 2 for c in np.bincount(groups[groups >= 0]))
        return true / max(predicted, 1), true / (len(frame) // 3)

    precision, recall = pair_scores(HashConfig(n_jobs=1))
    assert precision >= 0.95 and recall >= 0.95
    # the grey pHash alone groups look-alikes: the colour check is what keeps precision
    unchecked, _ = pair_scores(HashConfig(n_jobs=1, max_colour_difference=255.0, linkage="single"))
    assert unchecked < 0.9
