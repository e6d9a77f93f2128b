#!/usr/bin/env python3
"""Our fp32 graph against sentence-transformers fp32 on long documents: cosine of every 25th SciFact document
(200, with the `document` prompt), ours from `deposium-embed embed --model embeddinggemma:fp32@document`.

Needs torch and sentence-transformers (e.g. `pip install sentence-transformers`); ~10 min on 2 cores.
Usage: scripts/st-parity.py [MODEL_DIR]   (env: BIN=target/release/deposium-embed)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from sentence_transformers import SentenceTransformer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/deposium/models/embeddinggemma-300m")
BIN = os.environ.get("BIN", os.path.join(ROOT, "target/release/deposium-embed"))
with open(os.path.join(ROOT, "../shared/data/retrieval/SciFact/corpus.jsonl"), encoding="utf-8") as f:
    docs = [json.loads(line) for line in f]
step = len(docs) // 200
sample = [(d["title"] + " " + d["text"]).strip() for d in docs[::step][:200]]
with tempfile.TemporaryDirectory() as tmp:
    inp, out = os.path.join(tmp, "docs.jsonl"), os.path.join(tmp, "ours.npy")
    with open(inp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in sample)
    subprocess.run([BIN, "embed", "--model", "embeddinggemma:fp32@document", "--input", inp, "--output", out], check=True)
    ours = np.load(out).astype(np.float64)
model = SentenceTransformer(MODEL, device="cpu")
model.max_seq_length = 2048
theirs = model.encode(sample, prompt_name="document", batch_size=1, normalize_embeddings=True).astype(np.float64)
cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
tokens = [len(model.tokenizer(model.prompts["document"] + t)["input_ids"]) for t in sample]
print(f"{len(sample)} SciFact documents (every {step}th), {min(tokens)}-{max(tokens)} tokens "
      f"(median {int(np.median(tokens))}): cosine to sentence-transformers fp32 mean {cos.mean():.7f} min {cos.min():.7f}")
