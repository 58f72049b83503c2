#!/usr/bin/env python3
"""Keel's PyTorch peer: the same GPT-2-style model in PyTorch, for bench/vs_torch.ts (speed) and
bench/quality_vs_torch.ts (quality at equal wall time).

Model, as Keel's (src/model/gpt.ts): learned token and position embeddings, pre-LayerNorm blocks
(eps 1e-5) with causal self-attention and a 4x GELU (tanh) MLP, biases everywhere, a final
LayerNorm, the output head tied to the token embedding; init N(0, 0.02), residual projections
N(0, 0.02/sqrt(2L)). AdamW betas 0.9/0.95, weight decay 0.1 on matrices only, clip 1.0.

Speed: median tokens/s of full training steps (forward, backward, AdamW) on random byte tokens,
warm-up steps excluded.
    /usr/bin/python3 bench/torch_gpt.py --config tiny --batch 8 --threads 1 --json    # Debian's 1.13
    ~/.torch2/bin/python bench/torch_gpt.py --config small --threads 2 --modern --json   # current wheel
Set-up of the current wheel (the CPU wheel these machines ship, in a venv over the pyenv python):
    python3 -m venv --system-site-packages ~/.torch2 && ~/.torch2/bin/pip install --no-deps --no-index torch
Debian's 1.13 (OpenBLAS) runs best with OPENBLAS_NUM_THREADS=2 and --threads 1.
  --modern   fused scaled_dot_product_attention and fused AdamW: what a PyTorch user writes today
  --bf16     bf16 autocast of forward and backward (fp32 master weights and optimizer state)
  --compile  torch.compile the model (needs the filelock package in the venv)

Quality: --data FILE --seconds S trains on the file's bytes (the first 95% train, the last 5%
validation, as Keel splits) for S seconds of wall time with Keel's default schedule (lr 2e-3,
100 warm-up steps, cosine to lr/10 over --steps) and reports the mean loss over the first 64
windows of the validation part.
"""
import argparse, contextlib, json, math, statistics, time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {"tiny": (4, 4, 128, 128), "small": (6, 6, 384, 256)}  # layers, heads, width, block
VOCAB = 256


class Block(nn.Module):
    def __init__(self, width, heads, fused):
        super().__init__()
        self.heads, self.fused = heads, fused
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.fc_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def attend(self, x, causal):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            w = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // self.heads))
            y = w.masked_fill(causal[:T, :T], float("-inf")).softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward(self, x, causal):
        x = x + self.attend(self.ln1(x), causal)
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, layers, heads, width, block, fused=False):
        super().__init__()
        self.tok, self.pos = nn.Embedding(VOCAB, width), nn.Embedding(block, width)
        self.blocks = nn.ModuleList(Block(width, heads, fused) for _ in range(layers))
        self.ln = nn.LayerNorm(width)
        self.register_buffer("future", torch.ones(block, block, dtype=torch.bool).triu(1), persistent=False)  # masked out
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("proj.weight", "fc_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x, self.future)
        logits = self.ln(x) @ self.tok.weight.T  # tied head
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def make(a):
    layers, heads, width, block = CONFIGS[a.config]
    model = GPT(layers, heads, width, block, fused=a.modern)
    decay = [p for p in model.parameters() if p.dim() == 2 and p is not model.pos.weight and p is not model.tok.weight]
    rest = [p for p in model.parameters() if not any(p is d for d in decay)]
    extra = {"fused": True} if a.modern else {}
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8, **extra)
    run = torch.compile(model) if a.compile else model
    return model, run, opt, block


def train_step(run, model, opt, x, y, a):
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else contextlib.nullcontext()
    with ctx:
        loss = run(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.item()


def engine(a):
    tags = [f"torch {torch.__version__}"] + [t for t, on in (("modern", a.modern), ("bf16", a.bf16), ("compile", a.compile)) if on]
    return " ".join(tags) + f", {a.threads} thread{'s' if a.threads > 1 else ''}"


def speed(a):
    model, run, opt, T = make(a)
    g = torch.Generator().manual_seed(0)
    times = []
    for i in range(a.warmup + a.steps):
        x = torch.randint(0, VOCAB, (a.batch, T), generator=g)
        y = torch.randint(0, VOCAB, (a.batch, T), generator=g)
        t0 = time.perf_counter()
        train_step(run, model, opt, x, y, a)
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    return {"engine": engine(a), "config": a.config, "batch": a.batch, "step_ms": ms, "tokens_per_s": a.batch * T / ms * 1000}


def quality(a):
    model, run, opt, T = make(a)
    data = torch.frombuffer(bytearray(open(a.data, "rb").read()), dtype=torch.uint8).long()
    cut = len(data) - max(1, round(len(data) * 0.05))
    train, val = data[:cut], data[cut:]
    g = torch.Generator().manual_seed(a.seed)
    t_end, step, tokens = time.perf_counter() + a.seconds, 0, 0
    while time.perf_counter() < t_end:
        lr = a.lr * min(1.0, (step + 1) / 100)
        if step >= 100:
            p = min(1.0, (step - 100) / max(1, a.total_steps - 100))
            lr = a.lr / 10 + (a.lr - a.lr / 10) * 0.5 * (1 + math.cos(math.pi * p))
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, len(train) - T - 1, (a.batch,), generator=g)
        x = torch.stack([train[s:s + T] for s in starts])
        y = torch.stack([train[s + 1:s + T + 1] for s in starts])
        train_step(run, model, opt, x, y, a)
        step, tokens = step + 1, tokens + a.batch * T
    model.eval()
    n = min(64, (len(val) - 1) // T)
    with torch.no_grad():
        losses = [model(val[i * T:(i + 1) * T][None], val[i * T + 1:(i + 1) * T + 1][None]).item() for i in range(n)]
    return {"engine": engine(a), "steps": step, "tokens": tokens, "val_loss": sum(losses) / n, "val_windows": n}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=30, help="timed steps (speed)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (speed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--modern", action="store_true")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--data", help="quality mode: train on this file's bytes")
    ap.add_argument("--seconds", type=float, default=120.0, help="quality mode: wall time to train")
    ap.add_argument("--total-steps", type=int, default=1400, help="quality mode: the cosine schedule's length")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    r = quality(a) if a.data else speed(a)
    print(json.dumps(r) if a.json else "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
