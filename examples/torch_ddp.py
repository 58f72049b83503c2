"""A small GPT trained on a text file by 2 (or more) CPU processes with DDP, under Keel's control.

    keel serve &                                   # prints the URL and token; clients find it
    PYTHONPATH=python torchrun --nproc_per_node 2 examples/torch_ddp.py --data FILE
    PYTHONPATH=python python3 examples/torch_ddp.py --data FILE --spawn 2      # without torchrun

What Keel adds to an ordinary loop is marked "Keel:". Rollback targets are in-memory snapshots
every --snapshot-every steps (a real run would register its checkpoints the same way).
"""
import argparse, copy, math, os, sys

import torch
import torch.distributed as td
import torch.nn as nn
import torch.nn.functional as F

import keel
from keel.dist import NoiseScaleHook


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h, self.ln1, self.ln2 = h, nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c), nn.Linear(c, c)
        self.mlp = nn.Sequential(nn.Linear(c, 4 * c), nn.GELU(approximate="tanh"), nn.Linear(4 * c, c))

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in self.qkv(self.ln1(x)).split(C, 2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.h)
        att = att.masked_fill(torch.ones(T, T).tril() == 0, float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(B, T, C))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, layers=2, heads=2, c=64, block=64, vocab=256):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, c), nn.Embedding(block, c)
        self.blocks = nn.Sequential(*[Block(c, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(c)
        for e in (self.wte, self.wpe):
            nn.init.normal_(e.weight, std=0.02)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        return self.ln(self.blocks(x)) @ self.wte.weight.T


def main(rank, world, a):
    td.init_process_group("gloo", rank=rank, world_size=world, init_method=a.init)
    data = torch.frombuffer(bytearray(open(a.data, "rb").read()), dtype=torch.uint8).long()
    torch.manual_seed(a.seed)
    model = torch.nn.parallel.DistributedDataParallel(GPT(block=a.block))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    per_rank = a.batch // world
    hook = NoiseScaleHook(per_rank)                                            # Keel: noise scale for free
    model.register_comm_hook(None, hook)
    run = keel.init(name=a.name, policy={"on_spike": "rollback", "spike_window": 16},   # Keel
                    run={"steps": a.steps, "batch": a.batch, "micro_batch": per_rank, "seq_len": a.block,
                         "params": sum(p.numel() for p in model.parameters())})
    snapshots, step, cursor, lr_mult = {}, 0, 0, 1.0
    while step < a.steps:
        if step % a.snapshot_every == 0:                                       # Keel: a state to roll back to
            snapshots[step] = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), cursor)
            run.checkpoint(step, data=cursor)
        n = step + 1
        g = torch.Generator().manual_seed(a.seed * 100003 + cursor)          # batch `cursor`, the same on a replay
        starts = torch.randint(0, len(data) - a.block - 1, (a.batch,), generator=g)[rank * per_rank:(rank + 1) * per_rank]
        x = torch.stack([data[s:s + a.block] for s in starts])
        y = torch.stack([data[s + 1:s + a.block + 1] for s in starts])
        lr = a.lr * min(1.0, n / 20) * lr_mult
        for group in opt.param_groups:
            group["lr"] = lr
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        if n == a.fault_step and rank == 0:
            loss = loss * 50                                                   # a fire drill on one rank
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        d = run.step(n, loss=loss.item(), grad_norm=norm, lr=lr, tokens=n * a.batch * a.block, batch=a.batch,
                     data=(cursor, cursor + 1), noise=hook.sums())            # Keel: one report, one decision
        if rank == 0 and (n % 20 == 0 or d.kind != "proceed"):
            print(f"step {n} loss {loss.item():.4f} {d.kind}{'' if d.kind == 'proceed' else ': ' + d.reason}", flush=True)
        if d.lr_multiplier is not None:
            lr_mult = d.lr_multiplier
        if d.kind == "stop":
            if rank == 0:
                print(f"stopped by Keel at step {n}: {d.reason}\n{d.stop['advice']}")
            break
        if d.kind == "rollback":                                               # restore, skip the data
            ms, os_, _ = snapshots[d.rollback_to]
            model.load_state_dict(ms)
            opt.load_state_dict(os_)
            step, cursor = d.rollback_to, int(d.skip_data[1])
            snapshots = {k: v for k, v in snapshots.items() if k <= step}
            continue
        if d.apply:
            opt.step()
        step, cursor = n, cursor + 1
    run.finish()
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    if rank == 0 and a.out:
        with open(a.out, "w") as f:
            f.write(f'{{"steps": {step}, "checksum": {checksum!r}}}\n')
    td.destroy_process_group()
    # Debian's torch 1.13 sometimes hangs in its exit-time destructors after gloo: leave at once.
    sys.stdout.flush()
    os._exit(0)


def spawned(rank, world, a):
    main(rank, world, a)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--snapshot-every", type=int, default=10)
    p.add_argument("--fault-step", type=int, default=0, help="multiply rank 0's loss by 50 at this step (a fire drill)")
    p.add_argument("--name", default="torch-ddp")
    p.add_argument("--out", help="write {steps, checksum} here (tests)")
    p.add_argument("--spawn", type=int, help="start this many processes with torch.multiprocessing instead of torchrun")
    p.add_argument("--port", type=int, default=29533)
    a = p.parse_args()
    if a.spawn:
        a.init = f"tcp://127.0.0.1:{a.port}"
        torch.multiprocessing.spawn(spawned, args=(a.spawn, a), nprocs=a.spawn, join=True)
    else:
        a.init = "env://"
        main(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), a)
