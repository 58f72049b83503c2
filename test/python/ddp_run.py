"""Two gloo ranks train a small regression under Keel's control through keel.Steer and
keel.Batches (test/python_client.test.ts).

    python3 ddp_run.py OUT.json [--policy JSON] [--spike-step N] [--spike-rank R] [--steps N]
                                [--reference-skip S:B] [--sleep SECONDS]

KEEL_URL / KEEL_TOKEN name the server (or a dead port). Every rank writes what it saw to
OUT.json.rank<R>: per report its step, decision kind, the LR and batch it trained with, the
rollbacks' skipped data, and a checksum of its parameters. --reference-skip S:B is the run that
never saw the batches a rollback skipped: after step S it seeks its data to batch B.
"""
import argparse, faulthandler, json, os, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import torch
import torch.distributed as td
import torch.multiprocessing as mp
from torch.utils.data import BatchSampler, DistributedSampler

import keel

MICRO = 2  # sequences per rank per micro-batch: the run's micro_batch is MICRO × 2 ranks


def worker(rank, args, port):
    faulthandler.dump_traceback_later(90, exit=True)  # a hang shows where, then ends the run
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(7)
    X = torch.randn(512, 8, generator=g)
    Y = X @ (torch.arange(8, dtype=torch.float32) / 8) + 0.1 * torch.randn(512, generator=g)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    batches = keel.Batches(BatchSampler(DistributedSampler(range(len(X)), num_replicas=2, rank=rank, seed=3), MICRO, drop_last=True))
    run = keel.init(name=args.name, policy=json.loads(args.policy), timeout=0.5,
                    run={"steps": args.steps, "batch": 8, "micro_batch": 2 * MICRO, "seq_len": 1, "params": 9},
                    spill=f"{args.out}.spill{rank}")
    steer = keel.Steer(run, opt, scheduler=sched, batches=batches, model=model, snapshot_every=args.snapshot_every)
    ref = tuple(int(v) for v in args.reference_skip.split(":")) if args.reference_skip else None
    seen = []
    t0 = time.monotonic()
    while steer.next_step <= args.steps:
        n, lr, batch, k = steer.next_step, steer.lr, steer.batch, steer.micro_batches
        total = 0.0
        for i in range(k):
            idx = batches.next()
            loss = ((model(X[idx]).squeeze(1) - Y[idx]) ** 2).mean() / k
            if n == args.spike_step and rank == args.spike_rank and run.attempt == 0 and i == k - 1:
                loss = loss * 1e4  # a blow-up on one rank only, on the first pass
            loss.backward()
            total += loss.item()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item()
        d = steer.step(loss=total, grad_norm=norm)
        seen.append({"step": n, "kind": d.kind, "lr": lr, "batch": batch, "skip_data": d.skip_data, "to": d.rollback_to})
        if d.kind == "stop":
            break
        if ref and steer.next_step == ref[0] + 1 and batches.pos < ref[1]:
            batches.seek(ref[1])
        if args.sleep:
            time.sleep(args.sleep)
    run.finish()
    checksum = sum(p.detach().double().sum().item() for p in model.parameters())
    with open(f"{args.out}.rank{rank}", "w") as f:
        json.dump({"seen": seen, "kinds": [s["kind"] for s in seen], "checksum": checksum, "seconds": time.monotonic() - t0}, f)
    td.destroy_process_group()
    # Debian's torch 1.13 sometimes hangs in its exit-time destructors after gloo: leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--name", default="ddp")
    p.add_argument("--policy", default='{"on_spike": "skip", "spike_window": 8}')
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--spike-step", type=int, default=0)
    p.add_argument("--spike-rank", type=int, default=1)
    p.add_argument("--snapshot-every", type=int, default=5)
    p.add_argument("--reference-skip")
    p.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep after each step (a slower run)")
    p.add_argument("--port", type=int, default=29511)
    a = p.parse_args()
    mp.spawn(worker, args=(a, a.port), nprocs=2, join=True)
