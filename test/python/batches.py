"""keel.Batches: batch `pos` is always the same indices, across epochs and after seeks (test/python_client.test.ts)."""
import json, os, sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from torch.utils.data import BatchSampler, DistributedSampler

import keel

def make():
    return keel.Batches(BatchSampler(DistributedSampler(range(10), num_replicas=1, rank=0, seed=5), 3, drop_last=True))

b = make()
drawn = [b.next() for _ in range(8)]  # 3 batches an epoch: crosses two epoch boundaries
b.seek(4)
after_seek = [b.next() for _ in range(3)]
b.seek(0)
again = [b.next() for _ in range(8)]
fresh = make()
fresh.seek(7)
print(json.dumps({"drawn": drawn, "after_seek": after_seek, "again": again, "seek7": fresh.next(), "pos": fresh.pos, "len": len(b)}))
