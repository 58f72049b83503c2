"""Keel's Python client: let Keel's controller steer a PyTorch run (see docs/serving.md#python-client).

    import keel
    run = keel.init(name="gpt", policy={"on_spike": "rollback"},
                    run={"steps": 1000, "batch": 64, "micro_batch": 8, "seq_len": 256, "params": n})
    d = run.step(step, loss=loss.item(), grad_norm=norm, lr=lr, tokens=tokens, batch=64, data=(i, j))
    if d.apply: optimizer.step()

or let keel.Steer carry the decisions out (optimizer, scheduler, rollbacks, data position):

    steer = keel.Steer(run, optimizer, scheduler=sched, batches=keel.Batches(batch_sampler), model=model, snapshot_every=100)
    d = steer.step(loss=loss.item(), grad_norm=norm)     # in place of optimizer.step(); scheduler.step()
    if d.kind == "stop": break

Standard library only; torch is imported only when torch.distributed is in use.
"""
from .client import Decision, KeelError, Run, init
from .steer import Batches, Steer

__all__ = ["Batches", "Decision", "KeelError", "Run", "Steer", "init"]
