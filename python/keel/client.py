"""The client: one Run per training run. Rank 0 talks to `keel serve`; under torch.distributed
every rank calls the same methods and gets the same decision (keel/dist.py).

A training run never hangs or dies because Keel is away: each call has a short timeout, an
unreachable server makes the decision `proceed` (the report is kept in a local JSONL spill file
and sent when the server is back, with back-off between tries, marked `late`: the server records
those steps as applied and restates the batch and LR in its next decision), and a refused token
is one warning, then offline mode for the rest of the run.
"""
import json
import os
import sys
import time
import http.client
import urllib.parse

REPORT_VERSION = 1
MAX_PENDING = 100_000  # reports kept in memory for a server that is away; beyond: offline for good


class KeelError(Exception):
    """A mistake in how the client is called (never raised for an absent server)."""


class Decision:
    """What to do with this step. Apply `lr_multiplier` and `batch` whenever they are not None."""

    def __init__(self, d):
        self.raw = d
        self.kind = d["kind"]
        self.apply = bool(d["apply"])
        self.reason = d.get("reason", "")
        self.step = d.get("step")
        rb = d.get("rollback")
        self.rollback_to = rb["to_step"] if rb else None
        self.skip_data = tuple(rb["skip_data"]) if rb else None
        self.lr_multiplier = d["lr"]["multiplier"] if d.get("lr") else None
        self.lr_steps = d["lr"]["steps"] if d.get("lr") else None
        self.batch = d.get("batch")
        self.stop = d.get("stop")

    @staticmethod
    def proceed(step, attempt, reason):
        return Decision({"kind": "proceed", "apply": True, "reason": reason, "step": step, "attempt": attempt})

    def __repr__(self):
        return f"Decision({self.kind}, step={self.step}, apply={self.apply}, reason={self.reason!r})"


def _find_server(url, token):
    url = url or os.environ.get("KEEL_URL")
    token = token or os.environ.get("KEEL_TOKEN")
    if url and token:
        return url.rstrip("/"), token
    home = os.environ.get("KEEL_HOME", os.path.join(os.path.expanduser("~"), ".keel"))
    try:
        with open(os.path.join(home, "serve.json")) as f:
            info = json.load(f)
        return (url or info["url"]).rstrip("/"), token or info["token"]
    except (OSError, ValueError, KeyError):
        return (url.rstrip("/") if url else None), token


class Run:
    def __init__(self, name, policy, run, config=None, url=None, token=None, timeout=2.0, spill=None, resume=False, dist=None):
        self.name = name
        self.timeout = timeout
        self.url, self.token = _find_server(url, token)
        self.dist = dist
        self.rank0 = dist is None or dist.rank == 0
        self.facts = dict(run)
        self._conn = None  # kept alive between steps
        self.seconds = 0.0  # time spent in step() and checkpoint(): Keel's cost to the run
        self.attempt = 0
        self.batch = run["batch"]
        self.lr_multiplier = 1.0
        self.id = None
        self.offline = None  # why, when offline for good (a refused token)
        self.pending = []  # reports not yet acknowledged, oldest first
        self.retry_at = 0.0
        self.backoff = 1.0
        self.spill_path = spill or f"keel-{name}-spill.jsonl"
        self._create = {"name": name, "policy": policy, "run": run, "config": config or {}, "resume": bool(resume)}
        if self.rank0:
            r = self._post("/api/v1/runs", self._create)
            if r is not None:
                self.id = r["id"]
                self.attempt = r["attempt"]
                self.batch = r["batch"]
                self.lr_multiplier = r["lr_multiplier"]
            else:
                self._later()
        if dist is not None:
            self.attempt, self.batch, self.lr_multiplier = dist.broadcast_state(self.attempt, self.batch, self.lr_multiplier)

    # -- the three calls of a training loop ------------------------------------------------
    def step(self, step, loss, grad_norm, tokens, batch, data, lr=None, nonfinite=None, noise=None):
        """Reports optimizer step `step` (1-based; its gradient is computed, not applied) and returns the decision.
        noise: the step's sums {g_small_sq, g_big_sq, b_small, b_big}, or a keel.dist.NoiseScaleHook."""
        t0 = time.perf_counter()
        hook = noise if hasattr(noise, "local_small") else None  # a keel.dist.NoiseScaleHook
        if self.dist is not None:
            loss, bad, extra = self.dist.reduce_loss(loss, nonfinite, [hook.local_small()] if hook else [])
            nonfinite = {"loss": bad, "grad": bad}
            if hook:
                noise = hook.finish(extra[0])
        elif hook:
            noise = hook.finish(hook.local_small())
        finite = lambda x: x is not None and x == x and abs(x) != float("inf")
        nf = nonfinite or {"loss": not finite(loss), "grad": not finite(grad_norm)}
        report = {
            "v": REPORT_VERSION, "step": int(step), "attempt": self.attempt,
            "loss": loss if finite(loss) else None, "grad_norm": grad_norm if finite(grad_norm) else None,
            "nonfinite": {"loss": bool(nf["loss"]), "grad": bool(nf["grad"])},
            "lr": lr, "tokens": int(tokens), "batch": int(batch), "data": [data[0], data[1]],
        }
        if noise is not None:
            report["noise"] = noise
        d = self._decide(report) if self.rank0 else None
        if self.dist is not None:
            d = self.dist.broadcast_decision(d)
        self._follow(d)
        self.seconds += time.perf_counter() - t0
        return d

    def checkpoint(self, step, data, path=None):
        """The run can restore the state after `step` (it just wrote a checkpoint); `data` is where its data continues."""
        if self.rank0 and self.id is not None and self.offline is None:
            t0 = time.perf_counter()
            body = {"step": int(step), "data": data}
            if path is not None:
                body["path"] = str(path)
            self._post(f"/api/v1/runs/{self.id}/checkpoints", body)
            self.seconds += time.perf_counter() - t0

    def finish(self):
        """Sends what is still pending (one try)."""
        if self.rank0 and self.pending and self.offline is None:
            self.retry_at = 0.0
            for r in self.pending:
                r["late"] = True  # every one was answered `proceed` here already
            if self.id is not None or self._create_late():
                self._flush()

    # -- internals -----------------------------------------------------------------------
    def _decide(self, report):
        if self.offline is not None:
            self._spill(report)
            return Decision.proceed(report["step"], report["attempt"], f"keel offline ({self.offline}): proceeding")
        # A report still pending was answered `proceed` here (the server was away): it goes late.
        # (Each is marked when the next one arrives, so a long outage costs O(1) a step.)
        for r in self.pending[-1:]:
            r["late"] = True
        self.pending.append(report)
        if len(self.pending) > MAX_PENDING:
            self._spill(report)
            self.offline = f"the server was away for over {MAX_PENDING} steps"
            print(f"keel: {self.offline}; training on without Keel (reports in {self.spill_path})", file=sys.stderr)
            return Decision.proceed(report["step"], report["attempt"], f"keel offline ({self.offline}): proceeding")
        if self.id is None and not self._create_late():
            self._spill(report)
            return Decision.proceed(report["step"], report["attempt"], "keel server unreachable: proceeding (report kept, sent later)")
        decisions = self._flush()
        if decisions is None:
            return Decision.proceed(report["step"], report["attempt"], "keel server unreachable: proceeding (report kept, sent later)")
        return Decision(decisions[-1])

    def _create_late(self):
        """The server was away when the run started: create the run once it answers (its reports wait in order)."""
        if time.monotonic() < self.retry_at:
            return False
        r = self._post("/api/v1/runs", self._create)
        if r is None:
            self._later()
            return False
        self.id = r["id"]
        return True

    def _later(self):
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(60.0, self.backoff * 2)

    def _flush(self):
        """Sends the pending reports; their decisions, or None when the server is away (then they are spilled)."""
        if time.monotonic() < self.retry_at:
            self._spill(self.pending[-1])
            return None
        decisions = None
        while self.pending:  # in order, at most 1000 a request (the server's limit)
            r = self._post(f"/api/v1/runs/{self.id}/reports", {"reports": self.pending[:1000]})
            if r is None:
                if self.pending:
                    self._spill(self.pending[-1])
                self._later()
                return None
            self.pending = self.pending[1000:]
            decisions = r["decisions"]
        self.backoff = 1.0
        return decisions

    def _follow(self, d):
        if d.kind == "rollback":
            self.attempt += 1
        if d.lr_multiplier is not None:
            self.lr_multiplier = d.lr_multiplier
        if d.batch is not None:
            self.batch = d.batch

    def _spill(self, report):
        try:
            with open(self.spill_path, "a") as f:
                f.write(json.dumps(report) + "\n")
        except OSError:
            pass

    def _post(self, route, body):
        """POSTs JSON; the answer, or None when the server is away or refused (never raises for that)."""
        if self.url is None:
            return None
        try:
            status, text = self._exchange(route, json.dumps(body).encode())
        except (OSError, http.client.HTTPException, ValueError):
            return None
        if status == 200:
            try:
                return json.loads(text)
            except ValueError:
                return None
        detail = text.decode(errors="replace")
        if status == 401:
            self.offline = "the server refused the token"
            print(f"keel: {self.offline}; training on without Keel (reports in {self.spill_path})", file=sys.stderr)
        elif status == 400 and route.endswith("/reports"):
            self.offline = f"the server refused a report: {detail}"
            print(f"keel: {self.offline}; training on without Keel", file=sys.stderr)
            self.pending = []
        else:
            print(f"keel: {route}: HTTP {status} {detail}", file=sys.stderr)
        return None

    def _exchange(self, route, data):
        """One request on a kept-alive connection; a connection the server closed while idle is reopened once."""
        headers = {"content-type": "application/json", "authorization": f"Bearer {self.token}"}
        for fresh in (self._conn is None, True):
            if fresh:
                self._close()
                u = urllib.parse.urlsplit(self.url)
                cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(u.hostname, u.port, timeout=self.timeout)
            try:
                self._conn.request("POST", route, body=data, headers=headers)
                res = self._conn.getresponse()
                return res.status, res.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if fresh:
                    self._close()
                    raise
            except BaseException:
                self._close()
                raise

    def _close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

def init(name, policy, run, config=None, url=None, token=None, timeout=2.0, spill=None, resume=False):
    """Starts (or with resume=True continues) a run on the Keel server; under torch.distributed every rank calls it."""
    dist = None
    if "torch" in sys.modules:
        from . import dist as kd
        dist = kd.Dist.if_initialized()
    return Run(name, policy, run, config=config, url=url, token=token, timeout=timeout, spill=spill, resume=resume, dist=dist)
