"""A small GPT trained on a text file by 2 (or more) CPU processes with DDP, under Keel's control.

    keel serve &                                   # prints the URL and token; clients find it
    PYTHONPATH=python torchrun --nproc_per_node 2 examples/torch_ddp.py --data FILE
    PYTHONPATH=python python3 examples/torch_ddp.py --data FILE --spawn 2      # without torchrun

What Keel adds to an ordinary loop is marked "Keel:". keel.Steer applies each decision (the
optimizer and scheduler step, or not; rollbacks to in-memory snapshots every --snapshot-every
steps, skipping data through keel.Batches; LR and batch changes). A real run would register its
checkpoints instead: Steer(..., restore=load_fn) and steer.checkpoint(step, path).
"""
import argparse, json, math, os, sys, time

import torch
import torch.distributed as td
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DistributedSampler

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
    model = torch.nn.parallel.DistributedDataParallel(GPT(layers=a.layers, heads=max(1, a.width // 32), c=a.width, block=a.block))
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20))
    per_rank = a.batch // world
    starts = DistributedSampler(range(len(data) - a.block - 1), num_replicas=world, rank=rank, seed=a.seed)
    batches = keel.Batches(BatchSampler(starts, per_rank, drop_last=True))    # Keel: batches a rollback can skip
    if a.without_keel:  # the same loop with plain optimizer steps: bench/client_cost.ts's baseline
        hook, run, steer = None, None, Plain(opt, sched)
    else:
        hook = NoiseScaleHook(per_rank)                                        # Keel: noise scale for free
        model.register_comm_hook(None, hook)
        run = keel.init(name=a.name, policy={"on_spike": "rollback", "spike_window": 16},   # Keel
                        run={"steps": a.steps, "batch": a.batch, "micro_batch": a.batch, "seq_len": a.block,
                             "params": sum(p.numel() for p in model.parameters())})
        steer = keel.Steer(run, opt, scheduler=sched, batches=batches, model=model, snapshot_every=a.snapshot_every)  # Keel
    t0, passes = time.perf_counter(), 0
    while steer.next_step <= a.steps:
        n, passes = steer.next_step, passes + 1
        idx = batches.next()
        x = torch.stack([data[s:s + a.block] for s in idx])
        y = torch.stack([data[s + 1:s + a.block + 1] for s in idx])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        if n == a.fault_step and rank == 0 and run is not None and run.attempt == 0:
            loss = loss * 50                                                   # a fire drill on one rank
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        d = steer.step(loss=loss.item(), grad_norm=norm, noise=hook)  # Keel: in place of opt.step(); sched.step()
        if rank == 0 and (n % 20 == 0 or d.kind != "proceed"):
            print(f"step {n} loss {loss.item():.4f} {d.kind}{'' if d.kind == 'proceed' else ': ' + d.reason}", flush=True)
        if d.kind == "stop":                                                   # Keel
            if rank == 0:
                print(f"stopped by Keel at step {n}: {d.reason}\n{d.stop['advice']}")
            break
    seconds = time.perf_counter() - t0
    steps = steer.next_step - 1
    step_ms = 1000 * seconds / max(1, passes)  # per step computed: a rollback's replayed steps count too
    out = {"steps": steps, "passes": passes, "step_ms": step_ms, "checksum": sum(p.detach().double().sum().item() for p in model.parameters())}
    if run is not None:
        run.finish()
        out["report_ms"] = 1000 * run.seconds / max(1, passes)  # in run.step: collectives and the round trip
        out["snapshot_ms"] = 1000 * steer.snapshot_seconds / max(1, passes)
        if rank == 0:
            keel_ms = out["report_ms"] + out["snapshot_ms"]
            print(f"keel: {keel_ms:.2f} ms of {step_ms:.1f} ms per step ({100 * keel_ms / step_ms:.1f} %: reports, decisions, snapshots)")
    if rank == 0 and a.out:
        with open(a.out, "w") as f:
            f.write(json.dumps(out) + "\n")
    td.destroy_process_group()
    # Debian's torch 1.13 sometimes hangs in its exit-time destructors after gloo: leave at once.
    sys.stdout.flush()
    os._exit(0)


class Plain:
    """What Steer does when every decision is proceed, without Keel (--without-keel)."""

    def __init__(self, opt, sched):
        self.opt, self.sched, self.next_step = opt, sched, 1

    def step(self, **_):
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.next_step += 1
        return keel.Decision.proceed(self.next_step - 1, 0, "without keel")


def spawned(rank, world, a):
    main(rank, world, a)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--width", type=int, default=64, help="embedding width (heads of 32)")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--snapshot-every", type=int, default=10)
    p.add_argument("--fault-step", type=int, default=0, help="multiply rank 0's loss by 50 at this step (a fire drill)")
    p.add_argument("--name", default="torch-ddp")
    p.add_argument("--out", help="write {steps, passes, step_ms, checksum, report_ms, snapshot_ms} here (tests, bench; ms per step computed)")
    p.add_argument("--without-keel", action="store_true", help="the same loop without Keel (the benchmark's baseline)")
    p.add_argument("--spawn", type=int, help="start this many processes with torch.multiprocessing instead of torchrun")
    p.add_argument("--port", type=int, default=29533)
    a = p.parse_args()
    if a.spawn:
        a.init = f"tcp://127.0.0.1:{a.port}"
        torch.multiprocessing.spawn(spawned, args=(a.spawn, a), nprocs=a.spawn, join=True)
    else:
        a.init = "env://"
        main(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), a)
