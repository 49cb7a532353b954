"""fastText supervised-model inference compiled with numba over Arrow's UTF-8 buffers.

Gives the top label and probability that fastText's own ``predict`` gives (``FastText::predictLine``
with k=1, threshold 0) for a quantized hierarchical-softmax model such as lid.176.ftz (Joulin et
al. 2016, "Bag of Tricks for Efficient Text Classification"; Joulin et al. 2016, "FastText.zip:
Compressing text classification models"), without a Python string, a ``std::string`` per n-gram or
a hash-map lookup per n-gram. The steps follow fastText 0.9.2's sources (src/dictionary.cc,
src/quantmatrix.cc, src/productquantizer.cc, src/loss.cc, src/model.cc):

* ``Dictionary::readWord``: tokens are split on ' ', \\n, \\r, \\t, \\v, \\f and \\0 (here also on
  U+2028 and U+2029, which the operator always turned into spaces before the binding saw them);
* ``Dictionary::getLine``: a token that is a label (or starts with ``__label__``) is skipped, an
  in-vocabulary word adds its own row, every word adds the rows of its character n-grams of
  ``BOW + word + EOW`` (``computeSubwords``: minn..maxn UTF-8 characters, FNV-1a over bytes read as
  *signed* chars, modulo ``bucket``, kept only if in the pruned index of a .ftz model); the token
  ``</s>`` ends the line;
* ``Model::computeHidden``: the mean of those rows, each decoded from its product-quantizer code
  (``ProductQuantizer::addcode``), summed in float32 in the same order;
* ``HierarchicalSoftmaxLoss::dfs``: the same depth-first search of the Huffman tree with the same
  pruning (``log(p + 1e-5)`` scores, branches under ``log(1e-5)`` or under the best leaf cut), then
  ``exp`` of the best leaf's score.

The model file is read by ``load_ftz`` (fastText's binary layout: ``FastText::loadModel``); the
tests compare every decoded row with the binding's ``get_input_vector`` and every prediction with
the binding's ``multilinePredict`` on real documents.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numba import njit

FASTTEXT_MAGIC = 793712314
EOS = b"</s>"
LABEL_PREFIX = b"__label__"
_KSUB = 256  # centroids per sub-quantizer (ProductQuantizer::ksub_)
_HS = 1  # loss_name::hs


@dataclass
class FtzModel:
    """The arrays of a quantized supervised fastText model that prediction needs."""

    minn: int
    maxn: int
    bucket: int
    nwords: int
    labels: list[str]
    table_ids: np.ndarray  # open-addressing table of dictionary entries, by FNV hash (-1: empty)
    word_bytes: np.ndarray  # every entry's bytes, concatenated
    word_offsets: np.ndarray
    word_is_label: np.ndarray
    prune: np.ndarray  # bucket id -> input-matrix row (-1: pruned away)
    matrix: np.ndarray  # (rows, dim) float32: the input rows, decoded from their product-quantizer codes
    output: np.ndarray  # (nlabels - 1, dim) float32: the tree's inner nodes
    left: np.ndarray
    right: np.ndarray
    eos_id: int


class _Reader:
    def __init__(self, raw: bytes):
        self.raw, self.pos = raw, 0

    def take(self, fmt: str):
        out = struct.unpack_from("<" + fmt, self.raw, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return out if len(out) > 1 else out[0]

    def array(self, dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.raw, dtype=dtype, count=count, offset=self.pos).copy()
        self.pos += out.nbytes
        return out

    def cstring(self) -> bytes:
        end = self.raw.index(b"\0", self.pos)
        out = self.raw[self.pos:end]
        self.pos = end + 1
        return out


def _fnv(word: bytes) -> int:
    h = 2166136261
    for b in word:
        h = ((h ^ ((b - 256) & 0xFFFFFFFF if b >= 128 else b)) * 16777619) & 0xFFFFFFFF
    return h


def _huffman(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Children of each node of HierarchicalSoftmaxLoss::buildTree's tree (labels sorted by count)."""
    osz = len(counts)
    count = np.full(2 * osz - 1, 10**15, dtype=np.int64)
    count[:osz] = counts
    left = np.full(2 * osz - 1, -1, dtype=np.int32)
    right = np.full(2 * osz - 1, -1, dtype=np.int32)
    leaf, node = osz - 1, osz
    for i in range(osz, 2 * osz - 1):
        mini = [0, 0]
        for j in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                mini[j], leaf = leaf, leaf - 1
            else:
                mini[j], node = node, node + 1
        left[i], right[i] = mini
        count[i] = count[mini[0]] + count[mini[1]]
    return left, right


def load_ftz(path: str) -> FtzModel:
    """Read a quantized supervised fastText model (.ftz) with hierarchical softmax and a dense output."""
    with open(path, "rb") as f:
        r = _Reader(f.read())
    magic, _version = r.take("ii")
    if magic != FASTTEXT_MAGIC:
        raise ValueError(f"{path}: not a fastText model")
    dim, _ws, _epoch, _min_count, _neg, word_ngrams, loss, _model, bucket, minn, maxn, _lr, _t = r.take("12id")
    size, nwords, nlabels, _ntokens, prune_size = r.take("iiiqq")
    words, counts, types = [], [], []
    for _ in range(size):
        words.append(r.cstring())
        c, t = r.take("qb")
        counts.append(c)
        types.append(t)
    pairs = r.array(np.int32, 2 * max(prune_size, 0)).reshape(-1, 2)
    quant_input = r.take("?")
    if not quant_input or loss != _HS or word_ngrams > 1 or prune_size < 0:
        raise ValueError(f"{path}: only quantized, pruned hierarchical-softmax models with wordNgrams 1 are supported")
    qnorm, rows, cols, codesize = r.take("?qqi")
    codes = r.array(np.uint8, codesize)
    pq_dim, nsubq, dsub, lastdsub = r.take("iiii")
    centroids = r.array(np.float32, pq_dim * _KSUB)
    norm_codes, norm_centroids = np.zeros(0, np.uint8), np.zeros(1, np.float32)
    if qnorm:
        norm_codes = r.array(np.uint8, rows)
        _d, _s, _ds, _ld = r.take("iiii")
        norm_centroids = r.array(np.float32, _d * _KSUB)
    qout = r.take("?")
    if qout:
        raise ValueError(f"{path}: quantized output matrices are not supported")
    orows, ocols = r.take("qq")
    output = r.array(np.float32, orows * ocols).reshape(orows, ocols)
    if cols != dim or ocols != dim or pq_dim != dim or orows != nlabels:
        raise ValueError(f"{path}: inconsistent matrix shapes")

    cap = 1 << max(4, int(2 * size - 1).bit_length())
    table = np.full(cap, -1, dtype=np.int32)
    for i, w in enumerate(words):
        slot = _fnv(w) & (cap - 1)
        while table[slot] >= 0:
            slot = (slot + 1) & (cap - 1)
        table[slot] = i
    lens = np.array([len(w) for w in words], dtype=np.int64)
    offsets = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    prune = np.full(bucket, -1, dtype=np.int32)
    prune[pairs[:, 0]] = pairs[:, 1]
    left, right = _huffman(np.array(counts[nwords:], dtype=np.int64))
    return FtzModel(
        minn=minn, maxn=maxn, bucket=bucket, nwords=nwords,
        labels=[w.decode("utf-8") for w in words[nwords:]],
        table_ids=table, word_bytes=np.frombuffer(b"".join(words), dtype=np.uint8).copy(), word_offsets=offsets,
        word_is_label=np.array([t == 1 for t in types], dtype=np.bool_),
        prune=prune, matrix=decode_rows(codes.reshape(rows, nsubq), centroids, dsub, lastdsub, norm_codes,
                                        norm_centroids, dim),
        output=output, left=left, right=right,
        eos_id=words.index(EOS) if EOS in words else -1)


@njit(cache=True, inline="always")
def _separator(data, i, end):
    """Bytes of the token separator at data[i] (0: none): fastText's ASCII set, U+2028, U+2029."""
    b = data[i]
    if b == 32 or b == 10 or b == 13 or b == 9 or b == 11 or b == 12 or b == 0:
        return 1
    if b == 0xE2 and i + 2 < end and data[i + 1] == 0x80 and (data[i + 2] == 0xA8 or data[i + 2] == 0xA9):
        return 3
    return 0


@njit(cache=True, inline="always")
def _fnv_byte(h, b):
    """One FNV-1a step of Dictionary::hash: the byte as a signed char, 32-bit wrap-around (held in a
    uint64: numba widens uint32 products)."""
    x = np.uint64(b) if b < 128 else np.uint64(b) | np.uint64(0xFFFFFF00)
    return ((h ^ x) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF)


@njit(cache=True, inline="always")
def _add_row(hidden, row, codes, centroids, dsub, lastdsub, norm_codes, norm_centroids):
    nsubq = codes.shape[1]
    alpha = np.float32(1.0)
    if len(norm_codes):
        alpha = norm_centroids[norm_codes[row]]
    for m in range(nsubq):
        c = codes[row, m]
        if m == nsubq - 1:
            base = m * _KSUB * dsub + c * lastdsub
            d = lastdsub
        else:
            base = (m * _KSUB + c) * dsub
            d = dsub
        for k in range(d):
            hidden[m * dsub + k] += alpha * centroids[base + k]


@njit(cache=True)
def _lookup(data, lo, hi, h, table, word_bytes, word_offsets):
    """The dictionary entry whose bytes are data[lo:hi] (-1: none)."""
    mask = len(table) - 1
    slot = h & mask
    n = hi - lo
    while table[slot] >= 0:
        w = table[slot]
        a = word_offsets[w]
        if word_offsets[w + 1] - a == n:
            same = True
            for k in range(n):
                if word_bytes[a + k] != data[lo + k]:
                    same = False
                    break
            if same:
                return w
        slot = (slot + 1) & mask
    return -1


@njit(cache=True)
def decode_rows(codes, centroids, dsub, lastdsub, norm_codes, norm_centroids, dim):
    """Every input row decoded once (QuantMatrix::addRowToVector into zeros): adding a decoded row
    later is the same float32 arithmetic as decoding it into the sum (0 + a*c == a*c)."""
    out = np.zeros((codes.shape[0], dim), dtype=np.float32)
    for row in range(codes.shape[0]):
        _add_row(out[row], row, codes, centroids, dsub, lastdsub, norm_codes, norm_centroids)
    return out


@njit(cache=True, inline="always")
def _add(hidden, matrix, row):
    for k in range(matrix.shape[1]):
        hidden[k] += matrix[row, k]


@njit(cache=True)
def _add_word(hidden, buf, size, wid, minn, maxn, bucket, nwords, prune, matrix):
    """Add the word's own row (in vocabulary) and its n-gram rows (Dictionary::computeSubwords on
    buf[:size] = "<" + word + ">"); returns the rows added."""
    added = 0
    if wid >= 0:
        _add(hidden, matrix, wid)
        added += 1
    for i in range(size):
        if (buf[i] & 0xC0) == 0x80:
            continue
        h = np.uint64(2166136261)
        j = i
        n = 1
        while j < size and n <= maxn:
            h = _fnv_byte(h, buf[j])
            j += 1
            while j < size and (buf[j] & 0xC0) == 0x80:
                h = _fnv_byte(h, buf[j])
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == size)):
                row = prune[h % np.uint64(bucket)]
                if row >= 0:
                    _add(hidden, matrix, nwords + row)
                    added += 1
            n += 1
    return added


@njit(cache=True, inline="always")
def _same(data, lo, hi, word):
    if hi - lo != len(word):
        return False
    for k in range(len(word)):  # noqa: SIM110 - numba kernel: no generators
        if data[lo + k] != word[k]:
            return False
    return True


@njit(cache=True)
def _predict(data, seg_lo, seg_hi, row_seg, table, word_bytes, word_offsets, word_is_label, eos_id, minn, maxn,
             bucket, nwords, prune, matrix, output, left, right, label_prefix, eos, out_label, out_prob):
    """Top label (-1: none) and probability of each row; row r is the text of segments
    row_seg[r]..row_seg[r+1] (data[seg_lo[s]:seg_hi[s]]), segments read as if joined by spaces."""
    dim = output.shape[1]
    osz = output.shape[0]
    hidden = np.zeros(dim, dtype=np.float32)
    stack_node = np.empty(2 * osz + 2, dtype=np.int64)
    stack_score = np.empty(2 * osz + 2, dtype=np.float32)
    floor = np.float32(np.log(0.0 + 1e-5))  # std_log(threshold 0)
    npre = len(label_prefix)
    longest = 0
    for s in range(len(seg_lo)):
        longest = max(longest, seg_hi[s] - seg_lo[s])
    buf = np.empty(longest + 2, dtype=np.uint8)  # "<" + token + ">"
    buf[0] = 60
    for r in range(len(row_seg) - 1):
        hidden[:] = 0
        count = 0
        done = False
        for s in range(row_seg[r], row_seg[r + 1]):
            i, end = seg_lo[s], seg_hi[s]
            while i < end:
                sep = _separator(data, i, end)
                if sep:
                    i += sep
                    continue
                lo = i
                h = np.uint64(2166136261)
                while i < end and _separator(data, i, end) == 0:
                    h = _fnv_byte(h, data[i])
                    i += 1
                wid = _lookup(data, lo, i, h, table, word_bytes, word_offsets)
                if wid >= 0:
                    if word_is_label[wid]:
                        continue
                elif _same(data, lo, lo + npre if i - lo >= npre else i, label_prefix):
                    continue  # Dictionary::getType: a label, not in the dictionary: skipped
                if _same(data, lo, i, eos):  # "</s>": its own row only, and the end of the line
                    if wid >= 0:
                        _add(hidden, matrix, wid)
                        count += 1
                    done = True
                    break
                size = i - lo + 2
                buf[1:size - 1] = data[lo:i]
                buf[size - 1] = 62
                count += _add_word(hidden, buf, size, wid, minn, maxn, bucket, nwords, prune, matrix)
            if done:
                break
        if count == 0:  # FastText::predict: no input rows, no prediction
            out_label[r] = -1
            out_prob[r] = 0.0
            continue
        scale = np.float32(1.0 / count)
        for k in range(dim):
            hidden[k] = hidden[k] * scale
        # HierarchicalSoftmaxLoss::dfs with k = 1 and threshold 0, left child first; a leaf scoring
        # the same as the best replaces it (std::push_heap then pop_heap drop the older one)
        best_node = -1
        best = np.float32(0.0)
        stack_node[0] = 2 * osz - 2
        stack_score[0] = np.float32(0.0)
        top = 1
        while top > 0:
            top -= 1
            node = stack_node[top]
            score = stack_score[top]
            if score < floor or (best_node >= 0 and score < best):
                continue
            if left[node] == -1 and right[node] == -1:
                best_node = node
                best = score
                continue
            d = np.float32(0.0)  # DenseMatrix::dotRow accumulates in real (float32)
            for k in range(dim):
                d += output[node - osz, k] * hidden[k]
            f = np.float32(d)
            f = np.float32(1.0 / (np.float32(1.0) + np.exp(-f)))
            stack_node[top] = right[node]
            stack_score[top] = score + np.float32(np.log(np.float64(f) + 1e-5))
            stack_node[top + 1] = left[node]
            stack_score[top + 1] = score + np.float32(np.log(np.float64(np.float32(1.0 - f)) + 1e-5))
            top += 2
        out_label[r] = best_node
        out_prob[r] = np.exp(best)


def predict(model: FtzModel, data: np.ndarray, seg_lo: np.ndarray, seg_hi: np.ndarray,
            row_seg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label index, -1 for none; probability) of each row made of the given byte segments."""
    n = len(row_seg) - 1
    label, prob = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.float64)
    _predict(data, seg_lo.astype(np.int64, copy=False), seg_hi.astype(np.int64, copy=False),
             row_seg.astype(np.int64, copy=False), model.table_ids, model.word_bytes, model.word_offsets,
             model.word_is_label, model.eos_id, model.minn, model.maxn, model.bucket, model.nwords, model.prune,
             model.matrix, model.output, model.left, model.right, _LABEL_PREFIX, _EOS, label, prob)
    return label, prob


_LABEL_PREFIX = np.frombuffer(LABEL_PREFIX, dtype=np.uint8).copy()
_EOS = np.frombuffer(EOS, dtype=np.uint8).copy()
