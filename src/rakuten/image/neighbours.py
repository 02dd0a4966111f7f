"""Near-duplicate search: every pair of hashes within a Hamming radius, without comparing all pairs.

**Multi-index hashing** (Norouzi et al., 2012). The ``B``-bit hash is cut into ``m`` disjoint chunks; two hashes
within radius ``r`` differ by at most ``r // m`` bits on at least one chunk (pigeonhole). For each chunk a
bucket table (rows sorted by chunk value; start and size per value) gives, for every query, the rows whose chunk
is within ``r // m`` bits of its own: these are the only candidates, each verified with a popcount of the whole
hash. The result is exact: the same pairs as a brute-force comparison (checked in ``tests/image/test_image_hash.py``).

Two choices keep the cost linear on catalogs of look-alike products:

* **Number of chunks, measured.** For each number of flips per chunk only the fewest chunks that guarantee it
  are worth having (the widest chunks); for 256 bits and ``r = 24`` that is 25 chunks of ~10 bits with exact
  matches, or 13 chunks of 19-20 bits with one flip (21 probes). The one with less work on the catalog's own
  hashes (probes + candidates counted from the bucket tables) is used (25 chunks on the 5,800-row default
  sample, 13 on the 10k-84,916-row bench catalogs). The 16 chunks of 16 bits used before share each chunk value
  among ``n / 65536`` random rows (16x more than 20 bits), so candidates grew as ``n**2``.
* **Which bits go in which chunk, by entropy.** pHash bits of product photos are far from fair coins (the
  low-frequency signs of centred products on white are nearly constant), and a chunk of adjacent coefficients
  (one row of the DCT block) is then nearly constant too: its buckets hold a large share of the catalog whatever
  ``n``. The bits are dealt to chunks so that each chunk gets the same total binary entropy (measured on the
  indexed hashes; greedy, highest entropy first), which evens bucket sizes. Any partition keeps the pigeonhole
  guarantee, so this is exact too.

The remaining cost is the true look-alike pairs (hashes a few bits beyond the radius): those are verified, never
missed or invented.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MAX_CHUNK_BITS = 22  # bucket tables of 2**22 int32 entries (16 MiB) at most


def groups_from_keys(keys: list[str]) -> np.ndarray:
    """Group id per row for rows sharing a non-empty key with another row; -1 otherwise.

    Ids are dense and ordered by first appearance, so they are stable for a given row order.
    """
    counts: dict[str, int] = {}
    for key in keys:
        if key:
            counts[key] = counts.get(key, 0) + 1
    first: dict[str, int] = {}
    out = np.full(len(keys), -1, dtype=np.int64)
    for i, key in enumerate(keys):
        if key and counts[key] > 1:
            out[i] = first.setdefault(key, len(first))
    return out


def _words(packed: np.ndarray) -> np.ndarray:
    """Packed uint8 hashes (..., nbytes) as uint64 words (zero-padded): popcounts 8x fewer ops."""
    pad = (-packed.shape[-1]) % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:-1] + (pad,), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distance between packed hashes of equal shape."""
    return np.bitwise_count(a ^ b).sum(axis=-1, dtype=np.int64)


def chunk_options(nbits: int, radius: int) -> list[int]:
    """Chunk counts worth trying: for each number of flips ``t`` per chunk, the fewest chunks that
    guarantee it (``radius // m == t``), i.e. the widest chunks, as long as they fit a table."""
    options = []
    for flips in range(radius + 1):
        m = radius // (flips + 1) + 1
        if m <= nbits and -(-nbits // m) <= MAX_CHUNK_BITS and m not in options:
            options.append(m)
        if nbits // m > MAX_CHUNK_BITS:
            break
    return options or [-(-nbits // MAX_CHUNK_BITS)]


def entropy_balanced_chunks(bits: np.ndarray, n_chunks: int) -> list[np.ndarray]:
    """Partition bit positions into ``n_chunks`` chunks of near-equal size (sizes differ by at most
    one) and near-equal total binary entropy; ``bits`` is the unpacked (n, nbits) index."""
    nbits = bits.shape[1]
    p = bits.mean(axis=0) if len(bits) else np.full(nbits, 0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.nan_to_num(p * np.log2(p)) + np.nan_to_num((1 - p) * np.log2(1 - p)))
    capacity = np.full(n_chunks, nbits // n_chunks)
    capacity[: nbits % n_chunks] += 1
    total = np.zeros(n_chunks)
    members: list[list[int]] = [[] for _ in range(n_chunks)]
    for b in np.argsort(-h, kind="stable"):
        open_ = np.flatnonzero(capacity > 0)
        c = open_[np.argmin(total[open_])]
        members[c].append(int(b))
        total[c] += h[b]
        capacity[c] -= 1
    return [np.array(sorted(m), dtype=np.int64) for m in members]


def _flip_masks(bits: int, flips: int) -> np.ndarray:
    """All ``bits``-wide masks with at most ``flips`` bits set."""
    masks = [0]
    for r in range(1, flips + 1):
        masks += [sum(1 << b for b in chosen) for chosen in combinations(range(bits), r)]
    return np.array(masks, dtype=np.int64)


def _chunk_values(bits: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return bits[:, positions].astype(np.int64) @ (np.int64(1) << np.arange(len(positions), dtype=np.int64))


def _bucket_table(keys: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by chunk value, and the start and size of each value's run."""
    order = np.argsort(keys, kind="stable")
    sizes = np.bincount(keys, minlength=1 << bits).astype(np.int64)
    return order, np.cumsum(sizes) - sizes, sizes


def choose_chunks(index_bits: np.ndarray, radius: int) -> tuple[list[np.ndarray], int]:
    """The entropy-balanced chunking with the least work on *these* hashes, and its flips per chunk.

    For each option of :func:`chunk_options` the work is counted, not modelled: probes
    (rows x chunks x masks) plus the candidates the un-cropped hashes would draw from the bucket
    tables; an option is abandoned as soon as it costs more than the best so far.
    """
    n, nbits = index_bits.shape
    best: tuple[float, list[np.ndarray], int] | None = None
    for m in chunk_options(nbits, radius):
        chunks = entropy_balanced_chunks(index_bits, m)
        flips = radius // m
        work = 0.0
        for positions in chunks:
            keys = _chunk_values(index_bits, positions)
            _, _, sizes = _bucket_table(keys, len(positions))
            masks = _flip_masks(len(positions), flips)
            work += n * len(masks) + float(sizes[keys[:, None] ^ masks[None, :]].sum())
            if best is not None and work >= best[0]:
                break
        if best is None or work < best[0]:
            best = (work, chunks, flips)
    return best[1], best[2]


def radius_pairs(
    index: np.ndarray, queries: np.ndarray, radius: int, block: int = 1 << 21, stats: dict | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, ``i < j``, with ``min_v hamming(queries[i, v], index[j]) <= radius`` or
    the same with ``i`` and ``j`` swapped; returns ``(i, j, distance)`` (distance: the smaller).

    ``index`` is (n, nbytes) packed hashes; ``queries`` (n, n_variants, nbytes) the variants of
    the same rows (variant 0 usually equal to the index). ``block`` bounds the candidates held in
    memory at once; ``stats`` (optional) receives the chunking and the number of candidates verified.
    """
    n = len(index)
    empty = np.zeros(0, np.int64)
    if n < 2:
        if stats is not None:
            stats.update(candidates_verified=0)
        return empty, empty, empty
    index_bits = np.unpackbits(index, axis=1)
    chunks, flips = choose_chunks(index_bits, radius)
    index_words, query_words = _words(index), _words(queries)
    query_keys = np.stack(
        [
            np.stack([_chunk_values(np.unpackbits(queries[:, v], axis=1), pos) for pos in chunks], 1)
            for v in range(queries.shape[1])
        ]
    )  # (n_variants, n, n_chunks)
    found: list[np.ndarray] = []
    verified = 0
    for c, positions in enumerate(chunks):
        table = _bucket_table(_chunk_values(index_bits, positions), len(positions))
        masks = _flip_masks(len(positions), flips)
        for v in range(queries.shape[1]):
            keys = query_keys[v, :, c][:, None] ^ masks[None, :]  # (n, probes)
            for qi, j in _candidate_blocks(keys, table, block):
                verified += len(qi)
                close = hamming(query_words[qi, v], index_words[j]) <= radius
                if close.any():
                    a, b = qi[close], j[close]
                    found.append(np.minimum(a, b) * n + np.maximum(a, b))
    if stats is not None:
        stats.update(
            n_chunks=len(chunks),
            chunk_bits=[len(p) for p in chunks],
            flips_per_chunk=flips,
            candidates_verified=int(verified),
        )
    if not found:
        return empty, empty, empty
    codes = np.unique(np.concatenate(found))
    i, j = codes // n, codes % n
    dist = np.minimum(
        np.min([hamming(query_words[i, v], index_words[j]) for v in range(queries.shape[1])], axis=0),
        np.min([hamming(query_words[j, v], index_words[i]) for v in range(queries.shape[1])], axis=0),
    )
    return i, j, dist


def _candidate_blocks(
    keys: np.ndarray, table: tuple[np.ndarray, np.ndarray, np.ndarray], block: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Candidate pairs ``(query row, index row)``, never a row with itself, that probe ``keys`` (n, probes)
    draw from a chunk's bucket ``table``, in blocks of whole query rows holding about ``block`` candidates."""
    order, starts, sizes = table
    n, probes = keys.shape
    counts = sizes[keys]
    per_row = np.cumsum(counts.sum(axis=1))
    lo = 0
    while lo < n:
        base = per_row[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(per_row, base + block, side="right")))
        cnt, k = counts[lo:hi].ravel(), keys[lo:hi].ravel()
        nz = cnt > 0
        cnt, k = cnt[nz], k[nz]
        rows = np.repeat(np.arange(lo, hi), probes)[nz]
        lo = hi
        if not len(cnt):
            continue
        qi = np.repeat(rows, cnt)
        offsets = np.arange(len(qi)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        j = order[np.repeat(starts[k], cnt) + offsets]
        keep = qi != j
        yield qi[keep], j[keep]


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Cluster id per node for the graph with edges ``(i, j)``; -1 for nodes without an edge.

    Ids are dense and ordered by each cluster's smallest node.
    """
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(i) == 0:
        return out
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    linked = np.zeros(n, bool)
    linked[i] = linked[j] = True
    roots: dict[int, int] = {}
    for node in np.flatnonzero(linked):
        out[node] = roots.setdefault(int(labels[node]), len(roots))
    return out


def colour_differences(thumbs: np.ndarray, i: np.ndarray, j: np.ndarray, block: int = 4096) -> np.ndarray:
    """For each pair ``(i, j)``: the smallest brightness-equalised mean absolute difference between a
    crop variant of one row's colour thumbnails and the other's un-cropped thumbnail (variant 0),
    both ways round, in grey levels (0-255).

    ``thumbs`` is (n, n_variants, ...) uint8. Brightness is equalised by subtracting each thumbnail's
    mean (a re-encode often shifts it by a few levels). Computed in integers
    (``sum |K (a - b) - (S_a - S_b)| / K**2`` over the ``K`` values of a thumbnail), so the
    result does not depend on the CPU's floating-point kernels.
    """
    n = len(thumbs)
    flat = thumbs.reshape(n, thumbs.shape[1], -1)
    k = flat.shape[2]
    out = np.zeros(len(i), np.float64)
    for lo in range(0, len(i), block):
        a, b = i[lo : lo + block], j[lo : lo + block]
        best = None
        for q, r in ((a, b), (b, a)):
            query = flat[q].astype(np.int32)  # (p, variants, K)
            ref = flat[r, 0].astype(np.int32)[:, None, :]  # (p, 1, K)
            shift = query.sum(axis=2, keepdims=True) - ref.sum(axis=2, keepdims=True)
            total = np.abs(k * (query - ref) - shift).sum(axis=2, dtype=np.int64).min(axis=1)
            best = total if best is None else np.minimum(best, total)
        out[lo : lo + len(a)] = best / float(k * k)
    return out


def complete_clusters(n: int, i: np.ndarray, j: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Cluster id per node from near-duplicate edges ``(i, j)``, without chaining; -1 when alone.
    Ids are dense and ordered by each cluster's smallest node (:func:`complete_linkage_edges`)."""
    return components(n, *complete_linkage_edges(n, i, j, order))


def complete_linkage_edges(n: int, i: np.ndarray, j: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(root, node)`` linking every clustered node to its cluster's smallest node.

    Edges are taken in ``order`` (closest first); two clusters merge on an edge only when every
    pair across them is itself an edge (complete linkage), so every two rows of a cluster are near
    duplicates of each other. Single linkage would also merge A~B~C when A and C differ: on a large
    catalog of look-alike products that chained unrelated photos into clusters of hundreds of rows.
    The checks stop at the first missing pair; a merge costs the pairs it adds, so the work stays
    linear in the number of edges.
    """
    parent = np.arange(n)
    members: dict[int, list[int]] = {}
    edges = {(int(a), int(b)) if a < b else (int(b), int(a)) for a, b in zip(i.tolist(), j.tolist())}

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    def all_edges(xs: list[int], ys: list[int]) -> bool:
        return all(((x, y) if x < y else (y, x)) in edges for x in xs for y in ys)

    for e in order.tolist():
        ra, rb = find(int(i[e])), find(int(j[e]))
        if ra == rb:
            continue
        lo, hi = min(ra, rb), max(ra, rb)
        if (lo, hi) in edges and all_edges(members.get(lo, [lo]), members.get(hi, [hi])):
            parent[hi] = lo
            members[lo] = members.get(lo, [lo]) + members.pop(hi, [hi])
    roots = np.array([find(x) for x in range(n)], dtype=np.int64)
    moved = roots != np.arange(n)
    return roots[moved], np.flatnonzero(moved)


def near_duplicate_groups(
    variants: np.ndarray,
    usable: np.ndarray,
    radius: int,
    exact_groups: np.ndarray | None = None,
    stats: dict | None = None,
    thumbs: np.ndarray | None = None,
    max_difference: float = 255.0,
    linkage: str = "complete",
) -> np.ndarray:
    """Near-duplicate cluster per row (-1 none) from hash variants (n, n_variants, nbytes).

    Rows with ``usable=False`` (no decodable image) never join a cluster. Rows of one exact duplicate group are
    always in the same cluster (distance 0).

    Two rows are near duplicates when some crop variant of one is within ``radius`` bits of the other's hash (the
    candidate search) *and*, when ``thumbs`` (n, n_variants, side, side, 3) is given, their colour thumbnails differ
    by at most ``max_difference`` grey levels (:func:`colour_differences`): an independent check, because look-alike
    products share a grey pHash far more often than a colour picture. Clusters are then built with ``linkage``:
    ``complete`` (:func:`complete_clusters`: every two rows of a cluster are near duplicates) or ``single``
    (connected components, the former behaviour).

    Rows whose variants are byte-identical (the same file many times over, e.g. a seller's placeholder photo, or
    re-encodings that hash alike) are at distance 0 of each other and at the same distance of every other row: they
    collapse to one representative (their first row) before the pair search, which then runs over representatives
    only, and each row is linked to its representative. The pairs found and the candidates verified no longer grow
    as the square of the number of copies. ``stats`` also receives ``rows`` (usable rows), ``representatives``
    (distinct variant sets searched), ``candidate_pairs`` (within the radius) and ``verified_pairs``.
    """
    if linkage not in ("complete", "single"):
        raise ValueError(f"linkage must be 'complete' or 'single', got {linkage!r}")
    rows = np.flatnonzero(usable)
    reps, member_of = _representatives(variants[rows])
    i, j, dist = radius_pairs(variants[rows[reps], 0], variants[rows[reps]], radius, stats=stats)
    candidates = len(i)
    diff = dist.astype(np.float64)
    if thumbs is not None and len(i):
        diff = colour_differences(thumbs, rows[reps[i]], rows[reps[j]])  # rows indexed, no copy of the thumbnails
        keep = diff <= max_difference
        i, j, dist, diff = i[keep], j[keep], dist[keep], diff[keep]
    if linkage == "complete":
        edge_order = np.lexsort((j, i, dist, diff))  # closest first; ties by rows: the same on any machine
        i, j = complete_linkage_edges(len(reps), i, j, edge_order)  # the clusters, as star edges for `components`
    copies = np.flatnonzero(reps[member_of] != np.arange(len(rows)))  # rows that are not their own representative
    i = np.concatenate([rows[reps[i]], rows[reps[member_of[copies]]]])
    j = np.concatenate([rows[reps[j]], rows[copies]])
    if stats is not None:
        stats.update(
            rows=int(len(rows)),
            representatives=int(len(reps)),
            candidate_pairs=int(candidates),
            verified_pairs=int(len(diff)),
        )
    if exact_groups is not None and (exact_groups >= 0).any():
        first, members = _exact_group_edges(exact_groups)
        i, j = np.concatenate([i, first]), np.concatenate([j, members])
    return components(len(usable), i, j)


def _representatives(variants: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Collapse rows whose variants (n, n_variants, nbytes) are byte-identical: the representatives
    (each set's first row, in row order) and each row's representative, as an index into them."""
    flat = np.ascontiguousarray(variants).reshape(len(variants), int(np.prod(variants.shape[1:])))
    _, first, inverse = np.unique(
        flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel(), return_index=True, return_inverse=True
    )
    order = np.argsort(first, kind="stable")  # representatives in row order, as the rows themselves
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return first[order], rank[inverse.reshape(-1)]


def _exact_group_edges(exact_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges ``(first member, member)`` joining every other row of an exact duplicate group to its first row."""
    members = np.flatnonzero(exact_groups >= 0)
    groups = exact_groups[members]
    order = np.argsort(groups, kind="stable")
    members, groups = members[order], groups[order]
    first = members[np.searchsorted(groups, groups)]  # first member of each row's group
    link = members != first
    return first[link], members[link]
