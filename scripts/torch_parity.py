#!/usr/bin/env python3
"""Loads a Keel model.safetensors into a PyTorch GPT-2 with nanoGPT's module names and prints
the same loss `keel eval` computes: mean next-token cross-entropy (nats) over the first
floor((N-1)/T) consecutive non-overlapping windows of the file's first N tokens. The tokens are
the file's bytes for a byte-level model, or, for a model whose metadata says `tokenizer: gpt2`,
the uint16 ids of a nanoGPT-style .bin file (tokenize the text with Keel or nanoGPT first).

Regenerates test/fixtures/parity/expected.json (committed; CI never needs torch):
  /usr/bin/python3 scripts/torch_parity.py test/fixtures/parity/model.safetensors \
      test/fixtures/parity/text.txt --tokens 4097 > test/fixtures/parity/expected.json
Needs Debian's python3-torch (apt-get install python3-torch).
"""
import argparse, json, math, struct

import torch
import torch.nn as nn
import torch.nn.functional as F


def read_safetensors(path):
    """Minimal F32-only reader (enough for Keel checkpoints)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=torch.float32)
        tensors[name] = t.reshape(info["shape"])
    return tensors, meta


class CausalSelfAttention(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.n_head)
        mask = torch.ones(T, T, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        return self.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = nn.Linear(c, 4 * c)
        self.c_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, c, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c, eps=1e-5)
        self.attn = CausalSelfAttention(c, n_head)
        self.ln_2 = nn.LayerNorm(c, eps=1e-5)
        self.mlp = MLP(c)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size, vocab_size, bias=True):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd),
            wpe=nn.Embedding(block_size, n_embd),
            h=nn.ModuleList([Block(n_embd, n_head) for _ in range(n_layer)]),
            ln_f=nn.LayerNorm(n_embd, eps=1e-5),
        ))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2

    def forward(self, idx):
        T = idx.shape[1]
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(T))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--tokens", type=int, default=65536)
    a = ap.parse_args()
    tensors, meta = read_safetensors(a.model)
    cfg = json.loads(meta["config"])
    model = GPT(**cfg).double()
    missing, unexpected = model.load_state_dict({k: v.double() for k, v in tensors.items()}, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected, (missing, unexpected)
    raw = open(a.text, "rb").read()
    tokenizer = meta.get("tokenizer", "bytes")
    if tokenizer == "bytes":
        ids = list(raw[: a.tokens])
    elif tokenizer == "gpt2" and a.text.endswith(".bin"):
        ids = list(struct.unpack(f"<{len(raw) // 2}H", raw[: len(raw) // 2 * 2]))[: a.tokens]
    else:
        raise SystemExit(f"a {tokenizer} model needs its tokens as a .bin file (uint16 ids), not {a.text}")
    data = torch.tensor(ids, dtype=torch.long)
    T = cfg["block_size"]
    n = (len(data) - 1) // T
    x = torch.stack([data[i * T:i * T + T] for i in range(n)])
    y = torch.stack([data[i * T + 1:i * T + T + 1] for i in range(n)])
    with torch.no_grad():
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    print(json.dumps({"loss": loss.item(), "tokens": n * T, "tokenizer": tokenizer, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
