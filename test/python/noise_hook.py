"""The DDP noise-scale hook against an explicit computation (test/python_client.test.ts): two
gloo ranks, a toy regression; prints one JSON line from rank 0 with the hook's sums and the
ones computed by hand from each rank's own gradient."""
import json, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import torch
import torch.distributed as td
import torch.multiprocessing as mp

from keel.dist import NoiseScaleHook


def worker(rank, port):
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 1).double()
    ref = torch.nn.Linear(6, 1).double()
    ref.load_state_dict(lin.state_dict())
    model = torch.nn.parallel.DistributedDataParallel(lin)
    hook = NoiseScaleHook(b_small=5)
    model.register_comm_hook(None, hook)
    g = torch.Generator().manual_seed(10 + rank)
    x = torch.randn(5, 6, generator=g, dtype=torch.float64)
    y = x.sum(1) + torch.randn(5, generator=g, dtype=torch.float64)
    ((model(x).squeeze(1) - y) ** 2).mean().backward()
    sums = hook.sums()
    # By hand: this rank's gradient alone, then the mean over ranks.
    ((ref(x).squeeze(1) - y) ** 2).mean().backward()
    mine = torch.cat([p.grad.flatten() for p in ref.parameters()])
    both = [torch.zeros_like(mine) for _ in range(2)]
    td.all_gather(both, mine)
    small = sum(float(b.pow(2).sum()) for b in both) / 2
    big = float(((both[0] + both[1]) / 2).pow(2).sum())
    if rank == 0:
        print(json.dumps({"hook": sums, "explicit": {"g_small_sq": small, "g_big_sq": big}}))
    td.destroy_process_group()
    # Debian's torch 1.13 sometimes hangs in its exit-time destructors after gloo: leave at once.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    mp.spawn(worker, args=(int(sys.argv[1]),), nprocs=2, join=True)
