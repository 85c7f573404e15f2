"""Context trees of lossless payload version 5: each block learns how to split its contexts.

Every voxel has a few small integer *properties* computed from already decoded data (the
activity of the neighbours' residuals, local gradients, the signs of the west and north
residuals, the predicted intensity). A binary tree, grown by the encoder for each block and
stored in it, sends a voxel down by ``property <= threshold`` tests to a leaf: its context, with
its own token histogram. The encoder grows the tree greedily (the split that saves the most
estimated bits, histogram storage counted, best leaf first), as JPEG XL's MA trees do for its
modular mode. Version-4 contexts (merged activity classes times texture levels) are such a tree
too (:meth:`ContextTree.from_classes`), so one decoder loop serves both versions.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from .predict import _class_of

#: properties (their index in the tree's nodes); "class" is ``floor(2 log2(1 + x))``, capped at
#: 39 (:func:`.predict._class_of`)
P_ACTIVITY = 0  # class of 2|rW| + 2|rN| + |rNW| + |rNE| + |rP| (the version-4 activity)
P_GRADIENT = 1  # class of |W - NW| + |N - NW| + |N - NE|
P_SIGNS = 2  # |sign(rW) + sign(rN)| (0 to 2)
P_LEVEL = 3  # the prediction, shifted right by the block's level shift, capped at 31
P_W_NW = 4  # class of |W - NW|
P_N_NW = 5  # class of |N - NW|
P_RES_W = 6  # class of |rW|
P_RES_N = 7  # class of |rN|
P_RES_P = 8  # class of |rP| (the same position in the previous slice)
P_N_NE = 9  # class of |N - NE|
P_SPREAD = 10  # class of max - min of the blended sub-predictions (|W - N| without a blend)
P_PREV = 11  # class of |P - prediction|
P_FAR = 12  # class of |W - WW| + |N - NN|
P_ERROR = 13  # class of the smallest error sum of the blended sub-predictors (0 without)
N_PROPS = 14


#: at most this many contexts (the header stores the count in a byte)
MAX_LEAVES = 200


#: predicted intensities are put in at most this many levels
_LEVELS = 32


#: estimated storage of a split node, and of a histogram's nonzero entry (bits)
_NODE_BITS = 16.0
_ENTRY_BITS = 12.0


#: a split must save this many bits per voxel it tests (each test costs decoding time)
SPLIT_VOXEL_BITS = 0.005


#: the tree is grown on at most this many voxels of a block (every k-th voxel)
_GROW_VOXELS = 1 << 19


def level_shift(vmax: int) -> int:
    """Right shift that puts predictions of values up to ``vmax`` in :data:`_LEVELS` levels."""
    return max(0, int(vmax).bit_length() - 5)


def slice_properties(
    nv: np.ndarray,
    res: np.ndarray,
    pred: np.ndarray,
    shift: int,
    subs: np.ndarray,
    err_sums: np.ndarray | None,
) -> np.ndarray:
    """Properties ``(N_PROPS, m)`` (uint8) of ``m`` voxels.

    ``nv``: the 11 neighbour values ``(11, m)`` (``W, N, NW, NE, P, WW, NN, ...``); ``res``:
    the signed (capped) residuals at ``W, N, NW, NE, P`` ``(5, m)``; ``pred``: the
    predictions; ``subs``: the blended sub-predictions ``(K, m)``; ``err_sums``: their error
    sums ``(m, K)`` (None without a blend).
    """
    a = np.abs(res)
    w_nw, n_nw, n_ne = np.abs(nv[0] - nv[2]), np.abs(nv[1] - nv[2]), np.abs(nv[1] - nv[3])
    out = np.zeros((N_PROPS, nv.shape[1]), np.uint8)
    out[P_ACTIVITY] = _class_of(2 * (a[0] + a[1]) + a[2] + a[3] + a[4])
    out[P_GRADIENT] = _class_of(w_nw + n_nw + n_ne)
    out[P_SIGNS] = np.abs(np.sign(res[0]) + np.sign(res[1]))
    out[P_LEVEL] = np.minimum(np.maximum(pred, 0) >> shift, _LEVELS - 1)
    out[P_W_NW] = _class_of(w_nw)
    out[P_N_NW] = _class_of(n_nw)
    out[P_RES_W] = _class_of(a[0])
    out[P_RES_N] = _class_of(a[1])
    out[P_RES_P] = _class_of(a[4])
    out[P_N_NE] = _class_of(n_ne)
    if subs.shape[0] > 1:
        out[P_SPREAD] = _class_of(subs.max(axis=0) - subs.min(axis=0))
    else:
        out[P_SPREAD] = _class_of(np.abs(nv[0] - nv[1]))
    out[P_PREV] = _class_of(np.abs(nv[4] - pred))
    out[P_FAR] = _class_of(np.abs(nv[0] - nv[5]) + np.abs(nv[1] - nv[6]))
    if err_sums is not None:
        out[P_ERROR] = _class_of(err_sums.min(axis=1))
    return out


def flip_signs(res: np.ndarray) -> np.ndarray:
    """Where a voxel's residual is coded negated: ``sign(rW) + sign(rN) < 0`` (``res``: the
    signed residuals at ``W, N, ...``)."""
    return np.sign(res[0]) + np.sign(res[1]) < 0


@dataclass
class ContextTree:
    """A binary tree over voxel properties; its leaves are contexts.

    Nodes are in preorder: node ``i`` tests ``props[prop[i]] <= thr[i]``, true goes to node
    ``i + 1``, false to node ``right[i]``; a leaf has ``prop[i] == -1`` and context
    ``leaf[i]``. All four are int64 arrays (the decoder's loop reads them directly).
    """

    prop: np.ndarray
    thr: np.ndarray
    right: np.ndarray
    leaf: np.ndarray

    @property
    def n_leaves(self) -> int:
        """Number of contexts."""
        return int(np.count_nonzero(self.prop < 0))

    def apply(self, props: np.ndarray) -> np.ndarray:
        """Context of every voxel of ``props`` ``(N_PROPS, m)``."""
        ctx = np.empty(props.shape[1], np.int64)
        stack = [(0, np.arange(props.shape[1]))]
        while stack:
            node, idx = stack.pop()
            if self.prop[node] < 0:
                ctx[idx] = self.leaf[node]
                continue
            go_left = props[self.prop[node], idx] <= self.thr[node]
            stack.append((node + 1, idx[go_left]))
            stack.append((int(self.right[node]), idx[~go_left]))
        return ctx

    def as_table(self) -> tuple[np.ndarray, np.ndarray]:
        """The tree as a table when it tests at most two properties ``p``, ``q``: ``(lut,
        [p, q])`` with the context of values ``i``, ``j`` at ``lut[64 i + j]`` (``q = -1``:
        one property, ``j = 0``); else ``(empty, [-1, -1])``. Every property is below 64."""
        used = sorted(set(self.prop[self.prop >= 0].tolist()))
        if len(used) > 2 or not used:
            return np.zeros(1, np.int64), np.array([-1, -1], np.int64)
        p, q = used[0], used[1] if len(used) > 1 else -1
        i, j = np.divmod(np.arange(64 * 64), 64)
        props = np.zeros((N_PROPS, i.size), np.int64)
        props[p] = i
        if q >= 0:
            props[q] = j
        return self.apply(props), np.array([p, q], np.int64)

    def to_bytes(self) -> bytes:
        """Preorder bytes: ``prop, thr`` per split node, ``0xFF`` per leaf (leaves are the
        contexts ``0, 1, ...`` in preorder)."""
        out = bytearray()
        for p, t in zip(self.prop.tolist(), self.thr.tolist(), strict=True):
            out += bytes([p, t]) if p >= 0 else b"\xff"
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes, n_leaves: int) -> ContextTree:
        """Read :meth:`to_bytes`; raises :class:`FormatError` unless it is one complete tree
        of ``n_leaves`` leaves."""
        prop, thr, right = [], [], []
        open_rights: list[int] = []  # split nodes whose right subtree is still to come
        pos, leaves = 0, 0
        while True:
            if pos >= len(data) or leaves > n_leaves:
                raise FormatError("truncated context tree in a lossless block")
            p = data[pos]
            if p == 0xFF:
                prop.append(-1)
                thr.append(0)
                right.append(0)
                leaves += 1
                pos += 1
                if not open_rights:
                    break
                right[open_rights.pop()] = len(prop)
            else:
                if p >= N_PROPS or pos + 1 >= len(data):
                    raise FormatError("bad context tree in a lossless block")
                prop.append(p)
                thr.append(data[pos + 1])
                right.append(0)
                open_rights.append(len(prop) - 1)
                pos += 2
        if pos != len(data) or leaves != n_leaves:
            raise FormatError("bad context tree in a lossless block")
        return cls.in_preorder(prop, thr, right)

    @classmethod
    def in_preorder(cls, prop: list[int], thr: list[int], right: list[int]) -> ContextTree:
        """The tree of nodes listed in preorder; its leaves are contexts ``0, 1, ...`` in
        that order."""
        p = np.array(prop, np.int64)
        leaf = np.where(p < 0, np.cumsum(p < 0) - 1, 0)
        return cls(p, np.array(thr, np.int64), np.array(right, np.int64), leaf)

    @classmethod
    def from_classes(cls, kept: np.ndarray, n_tex: int) -> ContextTree:
        """The version-4 contexts as a tree: activity bins between the kept class thresholds
        (``kept``: indices ``i`` of the kept boundaries between classes ``i`` and ``i + 1``),
        each split into ``n_tex`` texture levels (``min(g, 2)`` is gradient class 0, 2, > 2);
        context ``bin * n_tex + texture``."""
        prop: list[int] = []
        thr: list[int] = []
        right: list[int] = []
        leaf: list[int] = []

        def node(p: int, t: int, lf: int = 0) -> int:
            prop.append(p)
            thr.append(t)
            right.append(0)
            leaf.append(lf)
            return len(prop) - 1

        def texture(b: int) -> None:
            if n_tex == 1:
                node(-1, 0, b)
                return
            i = node(P_GRADIENT, 0)
            node(-1, 0, b * n_tex)
            right[i] = len(prop)
            j = node(P_GRADIENT, 2)
            node(-1, 0, b * n_tex + 1)
            right[j] = len(prop)
            node(-1, 0, b * n_tex + 2)

        def bins(lo: int, hi: int) -> None:
            if lo == hi:
                texture(lo)
                return
            mid = (lo + hi) // 2
            i = node(P_ACTIVITY, int(kept[mid]))
            bins(lo, mid)
            right[i] = len(prop)
            bins(mid + 1, hi)

        bins(0, len(kept))
        return cls(*(np.array(a, np.int64) for a in (prop, thr, right, leaf)))


def _hist_bits(c: np.ndarray) -> np.ndarray:
    """Code length of histograms ``(..., ntok)`` (entropy of their counts, bits)."""
    tot = c.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(c * np.log2(np.where(c > 0, c / np.maximum(tot, 1), 1.0))).sum(axis=-1)


@dataclass
class _Leaf:
    idx: np.ndarray  # sample voxels in this leaf
    node: int  # its index in the node lists
    gain: float = 0.0
    split: tuple[int, int] | None = None


def _best_split(leaf: _Leaf, props: np.ndarray, tok: np.ndarray, ntok: int, scale: float) -> None:
    """The split of ``leaf`` that saves the most estimated bits (stored in ``leaf``)."""
    t = tok[leaf.idx]
    c = np.bincount(t, minlength=ntok)
    here = _hist_bits(c) * scale + _ENTRY_BITS * np.count_nonzero(c)
    leaf.gain, leaf.split = 0.0, None
    voxels = leaf.idx.size * scale
    if leaf.idx.size < 64:
        return
    for p in range(props.shape[0]):
        pv = props[p, leaf.idx].astype(np.int64)
        top = int(pv.max()) + 1
        if top < 2 or int(pv.min()) == top - 1:
            continue
        cnt = np.bincount(pv * ntok + t, minlength=top * ntok).reshape(top, ntok)
        left = np.cumsum(cnt, axis=0)[:-1]
        rightc = c[None] - left
        split_bits = (_hist_bits(left) + _hist_bits(rightc)) * scale + _ENTRY_BITS * (
            np.count_nonzero(left, axis=1) + np.count_nonzero(rightc, axis=1)
        )
        # the new node and leaf, and the decoder's time: one more test for every voxel here
        gain = here - split_bits - _NODE_BITS - _ENTRY_BITS - SPLIT_VOXEL_BITS * voxels
        k = int(np.argmax(gain))
        if gain[k] > leaf.gain:
            leaf.gain, leaf.split = float(gain[k]), (p, k)


def grow_sample(n: int) -> np.ndarray:
    """Indices of the voxels a tree of a block of ``n`` voxels is grown on: every k-th, at
    most :data:`_GROW_VOXELS`."""
    return np.arange(0, n, max(1, -(-n // _GROW_VOXELS)))


def grow_tree(
    props: np.ndarray, tok: np.ndarray, ntok: int, scale: float = 1.0
) -> tuple[ContextTree, float]:
    """Grow a block's context tree on (a sample of) its voxels.

    Parameters
    ----------
    props : numpy.ndarray
        ``(N_PROPS, m)`` properties of the voxels (those of :func:`grow_sample`).
    tok : numpy.ndarray
        Their ``m`` tokens.
    ntok : int
        Alphabet size.
    scale : float
        Voxels of the block per voxel given (``n / m``).

    Returns
    -------
    ContextTree, float
        The tree, and the estimated code length of the block's tokens with it (bits,
        histogram storage included).
    """
    sp, st = props, tok
    prop, thr, right = [-1], [0], [0]
    root = _Leaf(np.arange(st.size), 0)
    _best_split(root, sp, st, ntok, scale)
    heap = [(-root.gain, 0, root)]
    counter, leaves = 1, 1
    while heap and leaves < MAX_LEAVES:
        neg_gain, _k, leaf = heapq.heappop(heap)
        if leaf.split is None or -neg_gain <= 0:
            break
        p, k = leaf.split
        go_left = sp[p, leaf.idx] <= k
        # the leaf becomes a split node; its children are appended (preorder is restored
        # when the tree is written out)
        prop[leaf.node], thr[leaf.node] = p, k
        kids = []
        for part in (leaf.idx[go_left], leaf.idx[~go_left]):
            prop.append(-1)
            thr.append(0)
            right.append(0)
            kid = _Leaf(part, len(prop) - 1)
            _best_split(kid, sp, st, ntok, scale)
            heapq.heappush(heap, (-kid.gain, counter, kid))
            counter += 1
            kids.append(kid.node)
        right[leaf.node] = kids[0] * (1 << 20) + kids[1]  # both children, packed for now
        leaves += 1
    tree = _preorder(prop, thr, right)
    ctx = tree.apply(props)
    counts = np.bincount(ctx * ntok + tok, minlength=tree.n_leaves * ntok)
    counts = counts.reshape(tree.n_leaves, ntok)
    bits = float(_hist_bits(counts).sum()) * scale + _ENTRY_BITS * np.count_nonzero(counts)
    return tree, bits + _NODE_BITS * (tree.n_leaves - 1)


def _preorder(prop: list[int], thr: list[int], kids: list[int]) -> ContextTree:
    """The grown tree (children packed in ``kids``) renumbered in preorder."""
    out_p: list[int] = []
    out_t: list[int] = []
    out_r: list[int] = []

    def visit(i: int) -> None:
        me = len(out_p)
        out_p.append(prop[i])
        out_t.append(thr[i])
        out_r.append(0)
        if prop[i] >= 0:
            visit(kids[i] >> 20)
            out_r[me] = len(out_p)
            visit(kids[i] & ((1 << 20) - 1))

    visit(0)
    return ContextTree.in_preorder(out_p, out_t, out_r)
