"""Apply the controller's decisions to a torch training loop, so a loop needs three lines of Keel:

    steer = keel.Steer(run, optimizer, scheduler=sched, batches=batches, model=model, snapshot_every=100)
    ...forward, backward, clip...
    d = steer.step(loss=loss.item(), grad_norm=norm)      # in place of optimizer.step(); scheduler.step()
    if d.kind == "stop": break

`Steer` owns what the decisions touch: the optimizer step (or not), the LR multiplier on top of
the scheduler's LR, the step counter and data position, rollbacks (in-memory snapshots, or your
own `restore(step)` for checkpoints on disk), and the batch size in effect (`steer.batch`).
`Batches` makes any batch sampler seekable, so a rollback can skip a range of batches.

No torch import: it calls the optimizer's, scheduler's and model's own methods.
"""
import copy
import itertools
import time


class Batches:
    """A batch sampler (any iterable of index lists, e.g. torch's BatchSampler over a
    DistributedSampler) that knows its position and can seek: batch `pos` is always the same
    indices, so a rollback that skips the batches [a, b) seeks to b. Epochs follow each other
    (the sampler's set_epoch is called when it has one); seeking draws indices only, no data.
    The sampler must give the same order for the same epoch: DistributedSampler does (also for
    one process: num_replicas=1, rank=0); a RandomSampler draws a new order on every iteration.

        batches = keel.Batches(BatchSampler(DistributedSampler(ds), 8, drop_last=True))
        loader = DataLoader(ds, batch_sampler=batches)   # num_workers=0, or re-iterate after a rollback
    """

    def __init__(self, batch_sampler):
        self.sampler = batch_sampler
        self.pos = 0
        self._it = None

    def __len__(self):
        return len(self.sampler)

    def seek(self, pos):
        """The next batch drawn is batch `pos`."""
        self.pos = int(pos)
        self._it = None

    def __iter__(self):
        while True:
            yield self.next()

    def next(self):
        if self._it is None:
            self._it = self._epoch_iter()
        idx = next(self._it)
        self.pos += 1
        return idx

    def _epoch_iter(self):
        n = len(self.sampler)
        epoch, skip = divmod(self.pos, n)
        while True:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            elif hasattr(getattr(self.sampler, "sampler", None), "set_epoch"):
                self.sampler.sampler.set_epoch(epoch)  # torch's BatchSampler over a DistributedSampler
            yield from itertools.islice(iter(self.sampler), skip, None)
            epoch, skip = epoch + 1, 0


class Steer:
    """Carries out the decisions of one run on every rank alike (the decision is the same everywhere).

    run:            the keel.Run from keel.init
    optimizer:      a torch optimizer; `step()` calls its step() when the decision applies the update
    scheduler:      an LR scheduler stepped once per counted step; Keel's multiplier goes on top of its LR
    batches:        a keel.Batches; each step consumes `steer.micro_batches` batches from it unless
                    `data=(from, to)` is given; a rollback seeks it past the skipped range
    model:          with snapshot_every: in-memory snapshots (model, optimizer, scheduler, position)
                    every that many steps, registered with the server as restore points
    restore:        instead of snapshots: restore(step) loads the state after `step` from your
                    checkpoint (register it with steer.checkpoint(step, path) when you write it)
    micro_batch:    sequences per rank per batch drawn (default: the run's micro_batch // world)
    """

    def __init__(self, run, optimizer, scheduler=None, batches=None, model=None, snapshot_every=None, restore=None, micro_batch=None):
        if snapshot_every and model is None:
            raise ValueError("snapshot_every needs model=")
        self.run, self.optimizer, self.scheduler, self.batches = run, optimizer, scheduler, batches
        self.model, self.snapshot_every, self.restore_fn = model, snapshot_every, restore
        world = run.dist.world if run.dist is not None else 1
        self.micro_batch = micro_batch or max(1, run.facts["micro_batch"] // world)
        self.world = world
        self.next_step = 1  # the step the next report is about
        self.stopped = None
        self.snapshots = {}
        self.snapshot_seconds = 0.0  # time spent copying snapshots (the price of in-memory rollback)
        self._unscaled = [g["lr"] for g in optimizer.param_groups]
        self._scale(run.lr_multiplier)
        self._snapshot_if_due()

    @property
    def batch(self):
        """Sequences per step in effect (set by set_batch decisions), over all ranks."""
        return self.run.batch

    @property
    def micro_batches(self):
        """Batches of `micro_batch` sequences each rank draws per step for the batch in effect."""
        return max(1, self.run.batch // (self.micro_batch * self.world))

    @property
    def lr(self):
        return self.optimizer.param_groups[0]["lr"]

    def step(self, loss, grad_norm, tokens=None, data=None, noise=None, nonfinite=None):
        """Reports the step whose gradient is in the parameters, carries out the decision and returns it."""
        n = self.next_step
        if data is None:
            to = self.batches.pos if self.batches is not None else n
            data = (to - self.micro_batches if self.batches is not None else n - 1, to)
        tokens = tokens if tokens is not None else n * self.run.batch * self.run.facts["seq_len"]
        d = self.run.step(n, loss=loss, grad_norm=grad_norm, lr=self.lr, tokens=tokens, batch=self.run.batch,
                          data=data, noise=noise, nonfinite=nonfinite)
        if d.kind == "rollback":
            self._roll_back(d)
        elif d.kind == "stop":
            self.stopped = d
        else:
            if d.apply:
                self.optimizer.step()
            self._advance()
        self.optimizer.zero_grad(set_to_none=True)
        self._scale(self.run.lr_multiplier)
        if d.kind != "stop":
            self._snapshot_if_due()
        return d

    def checkpoint(self, step, path=None):
        """Registers your checkpoint of the state after `step` as a restore point (with restore=)."""
        pos = self.batches.pos if self.batches is not None else step
        self.run.checkpoint(step, data=pos, path=path)

    # -- internals -------------------------------------------------------------------------------
    def _advance(self):
        if self.scheduler is not None:
            for g, lr in zip(self.optimizer.param_groups, self._unscaled):
                g["lr"] = lr  # the scheduler sees its own LR, never Keel's multiple of it
            self.scheduler.step()
            self._unscaled = [g["lr"] for g in self.optimizer.param_groups]
        self.next_step += 1

    def _scale(self, multiplier):
        for g, lr in zip(self.optimizer.param_groups, self._unscaled):
            g["lr"] = lr * multiplier

    def _roll_back(self, d):
        to = d.rollback_to
        if self.restore_fn is not None:
            self.restore_fn(to)
            self._unscaled = [g["lr"] for g in self.optimizer.param_groups]
        else:
            if to not in self.snapshots:
                raise RuntimeError(f"keel: rollback to step {to}, but no snapshot of it (snapshots: {sorted(self.snapshots)})")
            model, opt, sched, unscaled, _ = self.snapshots[to]
            self.model.load_state_dict(model)
            self.optimizer.load_state_dict(copy.deepcopy(opt))  # torch 2 keeps the tensors it is given
            if self.scheduler is not None:
                self.scheduler.load_state_dict(copy.deepcopy(sched))
            self._unscaled = list(unscaled)
            self.snapshots = {k: v for k, v in self.snapshots.items() if k <= to}
        if self.batches is not None:
            self.batches.seek(int(d.skip_data[1]))
        self.next_step = to + 1

    def _snapshot_if_due(self):
        done = self.next_step - 1
        if not self.snapshot_every or done % self.snapshot_every != 0 or done in self.snapshots:
            return
        t0 = time.perf_counter()
        pos = self.batches.pos if self.batches is not None else done
        sched = copy.deepcopy(self.scheduler.state_dict()) if self.scheduler is not None else None
        self.snapshots[done] = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                                sched, list(self._unscaled), pos)
        self.snapshot_seconds += time.perf_counter() - t0
        self.run.checkpoint(done, data=pos)
