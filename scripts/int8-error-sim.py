#!/usr/bin/env python3
"""Where EmbeddingGemma's int8 error comes from: Q8_0-style fake quantization in sentence-transformers (fp32, torch).

Every linear layer of the 24 blocks gets int8 weights (symmetric, blocks of 32 along the input, scale amax/127)
and/or int8 activations (the same, per row); the token table and the heads stay fp32. Prints the cosine of each
variant to the fp32 model over the fixture texts (20 sentences x 4 prompts, each alone): mean / min.
Calibration inputs (GPTQ Hessians, channel statistics): 199 STSBenchmark sentences and 20 SciFact abstracts.

Needs torch and sentence-transformers (e.g. `pip install sentence-transformers`); ~20 min on 2 cores.
Usage: scripts/int8-error-sim.py [MODEL_DIR]   (default ~/.cache/deposium/models/embeddinggemma-300m)
"""
import json
import os
import sys

import torch
from sentence_transformers import SentenceTransformer

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")
MODEL = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/deposium/models/embeddinggemma-300m")
torch.set_num_threads(max(1, os.cpu_count() // 2))
model = SentenceTransformer(MODEL, device="cpu")
model.max_seq_length = 2048
fixtures = json.load(open(os.path.join(SHARED, "fixtures/sentences.json")))
texts = [p + s for p in fixtures["prompts"].values() for s in fixtures["sentences"]]
sts = open(os.path.join(SHARED, "data/sts/STSBenchmark_test.tsv"), encoding="utf-8").read().splitlines()[1:200]
calibration = [line.split("\t")[1] for line in sts]
with open(os.path.join(SHARED, "data/retrieval/SciFact/corpus.jsonl"), encoding="utf-8") as f:
    calibration += [json.loads(line)["text"] for line in list(f)[:20]]

# Linear layers grouped by shared input: (layer, kind) -> [nn.Linear]; QKV and gate/up read the same activations.
groups = {}
for i, block in enumerate(model[0].auto_model.layers):
    a, f = block.self_attn, block.mlp
    groups[(i, "qkv")] = [a.q_proj, a.k_proj, a.v_proj]
    groups[(i, "o")] = [a.o_proj]
    groups[(i, "gate_up")] = [f.gate_proj, f.up_proj]
    groups[(i, "down")] = [f.down_proj]
fp32_weights = {k: [lin.weight.data.clone() for lin in v] for k, v in groups.items()}


def quantize_blocks(x, block=32, levels=127.0):
    """Symmetric round-to-nearest in blocks of `block` along the last axis."""
    shape = x.shape
    xb = x.reshape(*shape[:-1], shape[-1] // block, block)
    s = xb.abs().amax(-1, keepdim=True) / levels
    s = torch.where(s == 0, torch.ones_like(s), s)
    return (torch.round(xb / s) * s).reshape(shape)


def permuted(fn, x, perm):
    return fn(x[..., perm])[..., torch.argsort(perm)]


def gptq(w, hessian, damp=0.01, levels=127.0, block=32, lazy=128):
    """GPTQ rounding with symmetric block-32 scales taken from the updated weights as each block starts."""
    w = w.double().clone()
    n, k = w.shape
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += damp * torch.mean(torch.diag(h)) * torch.eye(k, dtype=h.dtype)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for b0 in range(0, k, lazy):
        b1 = min(b0 + lazy, k)
        wb, err = w[:, b0:b1].clone(), torch.zeros(n, b1 - b0, dtype=w.dtype)
        for j in range(b1 - b0):
            i = b0 + j
            if i % block == 0:
                s = wb[:, j:j + block].abs().amax(1) / levels
                s = torch.where(s == 0, torch.ones_like(s), s)
            q[:, i] = torch.clamp(torch.round(wb[:, j] / s), -levels, levels) * s
            e = (wb[:, j] - q[:, i]) / u[i, i]
            wb[:, j:] -= e[:, None] * u[i, i:b1][None, :]
            err[:, j] = e
        w[:, b1:] -= err @ u[b0:b1, b1:]
    return q.float()


state = {"collect": False, "act": None}
hessians, channel_energy = {}, {}


def pre_hook(key):
    def hook(_module, args):
        x = args[0]
        if state["collect"]:
            x2 = x.detach().double().reshape(-1, x.shape[-1])
            hessians[key] = hessians.get(key, 0) + x2.T @ x2
            channel_energy[key] = hessians[key].diagonal()
            return None
        return None if state["act"] is None else (state["act"](key, x),)
    return hook


for key, linears in groups.items():
    for lin in linears:
        lin.register_forward_pre_hook(pre_hook(key))


def encode(batch):
    return model.encode(batch, batch_size=1, normalize_embeddings=True, convert_to_tensor=True).double()


reference = encode(texts)
state["collect"] = True
encode(calibration)
state["collect"] = False
gptq_weights = {k: [gptq(w, hessians[k]) for w in v] for k, v in fp32_weights.items()}


def run(name, weights=None, act=None):
    """weights: None (fp32), 'rtn', 'gptq' or a function (key, w) -> w; act: None or a function (key, x) -> x."""
    for key, linears in groups.items():
        for idx, (lin, w) in enumerate(zip(linears, fp32_weights[key])):
            if weights is None:
                lin.weight.data = w.clone()
            elif weights == "rtn":
                lin.weight.data = quantize_blocks(w)
            elif weights == "gptq":
                lin.weight.data = gptq_weights[key][idx].clone()
            else:
                lin.weight.data = weights(key, w)
    state["act"] = act
    cos = (encode(texts) * reference).sum(1)
    state["act"] = None
    print(f"{name:58s} mean {cos.mean():.5f}  min {cos.min():.5f}  (worst: fixture text {int(cos.argmin())})", flush=True)


def int8(_key, x):
    return quantize_blocks(x)


def keep_first_row(_key, x):
    q = quantize_blocks(x)
    q[..., 0, :] = x[..., 0, :]
    return q


sorted_channels = {k: torch.argsort(e, descending=True) for k, e in channel_energy.items()}

run("int8 weights only (round to nearest)", weights="rtn")
run("int8 activations only", act=int8)
run("int8 weights + activations (Q8_0: what we ship)", weights="rtn", act=int8)
for kind in ("qkv", "o", "gate_up", "down"):
    run(f"  same, {kind} activations kept fp32", weights="rtn", act=lambda k, x, kind=kind: x if k[1] == kind else int8(k, x))
run("  same, channels sorted by energy in each layer", weights=lambda k, w: permuted(quantize_blocks, w, sorted_channels[k]),
    act=lambda k, x: permuted(quantize_blocks, x, sorted_channels[k]))
run("  same, activations in blocks of 16", weights="rtn", act=lambda k, x: quantize_blocks(x, block=16))
run("  same, activations at 9 bits", weights="rtn", act=lambda k, x: quantize_blocks(x, levels=255.0))
run("  same, first row (BOS) activations kept fp32", weights="rtn", act=keep_first_row)
run("int8 weights by GPTQ only", weights="gptq")
run("int8 weights by GPTQ + int8 activations", weights="gptq", act=int8)
run("  same, first row (BOS) activations kept fp32", weights="gptq", act=keep_first_row)
