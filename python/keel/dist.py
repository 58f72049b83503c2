"""torch.distributed glue: every rank makes the same calls, rank 0 alone talks to the server.
Losses are averaged and non-finite flags OR-ed across ranks; rank 0's decision reaches every
rank as a fixed-size float64 tensor (broadcast works on gloo and NCCL alike)."""
import torch
import torch.distributed as td

from .client import Decision

KINDS = ["proceed", "skip", "rollback", "set_lr", "set_batch", "stop"]
NONE = -1.0


class Dist:
    def __init__(self):
        self.rank = td.get_rank()
        self.world = td.get_world_size()
        self.device = torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")

    @staticmethod
    def if_initialized():
        return Dist() if td.is_available() and td.is_initialized() else None

    def _bcast(self, values):
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        td.broadcast(t, src=0)
        return t.tolist()

    def broadcast_state(self, attempt, batch, lr):
        a, b, l = self._bcast([attempt, batch, lr])
        return int(a), int(b), l

    def reduce_loss(self, loss, nonfinite, extra=()):
        """The mean loss over ranks and whether any rank's was not finite; `extra` values are summed in the same all-reduce."""
        bad = 1.0 if (nonfinite and (nonfinite.get("loss") or nonfinite.get("grad"))) or not (loss == loss and abs(loss) != float("inf")) else 0.0
        t = torch.tensor([0.0 if bad else float(loss), bad, *extra], dtype=torch.float64, device=self.device)
        td.all_reduce(t)
        n = td.get_world_size()
        any_bad = t[1].item() > 0
        return (float("nan") if any_bad else t[0].item() / n), any_bad, t[2:].tolist()

    def broadcast_decision(self, d):
        if self.rank == 0:
            rb = d.raw.get("rollback") or {}
            skip = rb.get("skip_data", [NONE, NONE])
            lr = d.raw.get("lr") or {}
            vals = [KINDS.index(d.kind), 1.0 if d.apply else 0.0, d.step or 0, d.raw.get("attempt", 0),
                    rb.get("to_step", NONE), skip[0], skip[1],
                    lr.get("multiplier", NONE) if lr else NONE, NONE if not lr or lr.get("steps") is None else lr["steps"],
                    NONE if d.batch is None else d.batch, 1.0 if lr else 0.0]
        else:
            vals = [0.0] * 11
        v = self._bcast(vals)
        if self.rank == 0:
            return d
        raw = {"kind": KINDS[int(v[0])], "apply": v[1] > 0, "step": int(v[2]), "attempt": int(v[3]), "reason": "decided on rank 0"}
        if v[4] != NONE:
            raw["rollback"] = {"to_step": int(v[4]), "skip_data": [_num(v[5]), _num(v[6])]}
        if v[10] > 0:
            raw["lr"] = {"multiplier": v[7], "steps": None if v[8] == NONE else int(v[8])}
        if v[9] != NONE:
            raw["batch"] = int(v[9])
        return Decision(raw)


def _num(x):
    """A data position as the server sent it: integers stay integers through the float64 broadcast."""
    return int(x) if float(x).is_integer() else x


class NoiseScaleHook:
    """A DDP communication hook that measures the gradient noise scale for free: each rank's
    ‖g_rank‖² before the all-reduce (the small batch) and ‖G‖² after it (the big batch).
    The all-reduce is SUM, then divided by the world size, so it works on gloo too.

        hook = NoiseScaleHook(sequences_per_rank)
        model.register_comm_hook(None, hook)
        ... loss.backward() ...
        run.step(..., noise=hook)          # the step's sums (reduced with the loss), then the hook starts over
    """

    def __init__(self, b_small):
        self.__name__ = self.__qualname__ = "keel_noise_scale_hook"  # DDP looks a hook up by name
        self.b_small = b_small
        self.world = td.get_world_size()
        self._reset()

    def _reset(self):
        self.small = torch.zeros((), dtype=torch.float64)
        self.big = torch.zeros((), dtype=torch.float64)

    def __call__(self, state, bucket):
        t = bucket.buffer()
        local = t.detach().double().pow(2).sum().cpu()
        fut = td.all_reduce(t, async_op=True).get_future()

        def averaged(f):
            g = f.value()[0].div_(self.world)
            self.small += local
            self.big += g.detach().double().pow(2).sum().cpu()
            return g

        return fut.then(averaged)

    def sums(self):
        """This step's {g_small_sq, g_big_sq, b_small, b_big} (the mean over ranks of ‖g_rank‖²), and a reset.
        (run.step(noise=hook) does the same inside its own all-reduce: one collective fewer.)"""
        small = self.small.clone()
        td.all_reduce(small)
        return self.finish(small.item())

    def local_small(self):
        """This rank's ‖g_rank‖² of the step, to be summed over ranks (then finish())."""
        return self.small.item()

    def finish(self, small_sum):
        out = {"g_small_sq": small_sum / self.world, "g_big_sq": self.big.item(),
               "b_small": self.b_small, "b_big": self.b_small * self.world}
        self._reset()
        return out
