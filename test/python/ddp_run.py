"""Two gloo ranks train a small regression under Keel's control (test/python_client.test.ts).

    python3 ddp_run.py OUT.json [--spike-step N] [--spike-rank R] [--steps N]

KEEL_URL / KEEL_TOKEN name the server (or a dead port). Every rank writes what it saw to
OUT.json.rank<R>: the decisions' kinds per step and a checksum of its parameters.
"""
import argparse, faulthandler, json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import torch
import torch.distributed as td
import torch.multiprocessing as mp

import keel


def worker(rank, args, port):
    faulthandler.dump_traceback_later(90, exit=True)  # a hang shows where, then ends the run
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(100 + rank)
    w_true = torch.arange(8, dtype=torch.float32) / 8
    run = keel.init(name=args.name, policy={"on_spike": "skip", "spike_window": 8}, timeout=0.5,
                    run={"steps": args.steps, "batch": 8, "micro_batch": 4, "seq_len": 1, "params": 9},
                    spill=f"{args.out}.spill{rank}")
    kinds = []
    t0 = time.monotonic()
    for step in range(1, args.steps + 1):
        x = torch.randn(4, 8, generator=g)
        y = x @ w_true
        loss = ((model(x).squeeze(1) - y) ** 2).mean()
        if step == args.spike_step and rank == args.spike_rank:
            loss = loss * 1e4  # a blow-up on one rank only
        opt.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        d = run.step(step, loss=loss.item(), grad_norm=norm, lr=0.05, tokens=step * 8, batch=8, data=(step - 1, step))
        kinds.append(d.kind)
        if d.apply:
            opt.step()
    run.finish()
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    with open(f"{args.out}.rank{rank}", "w") as f:
        json.dump({"kinds": kinds, "checksum": checksum, "seconds": time.monotonic() - t0}, f)
    td.destroy_process_group()
    # Debian's torch 1.13 sometimes hangs in its exit-time destructors after gloo: leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--name", default="ddp")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--spike-step", type=int, default=0)
    p.add_argument("--spike-rank", type=int, default=1)
    p.add_argument("--port", type=int, default=29511)
    a = p.parse_args()
    mp.spawn(worker, args=(a, a.port), nprocs=2, join=True)
