"""Generic, resumable trainer: a task's objective on in-memory or DataLoader data, in one or several processes.

* Adam (default betas, no weight decay) and the paper's cosine schedule (`cosine_schedule`, a LambdaLR)
  stepped per optimizer step over the run's ``S`` steps: ``S = ceil(epochs x steps per epoch)``, capped
  by ``max_steps``; ``epochs`` may be fractional.
* Batches: a `torch.utils.data.DistributedSampler` (one process: ``num_replicas=1``) seeded per epoch
  draws the order; with ``W`` processes each takes ``batch_size / W`` of it per step, so the union of
  a step's batches is the same global batch of ``batch_size`` examples whatever ``W`` is: a
  ``W``-process run takes the same optimizer steps as one process (`DistributedDataParallel`
  averages the gradients), and a run resumes with another number of processes.
* Data sets with ``batched = True`` (e.g. `ChunkData`) are indexed with a LongTensor of indices per batch;
  any other map-style data set goes through a `torch.utils.data.DataLoader` (``collate``, ``workers``,
  pinned memory on accelerators).
* Validation after every ``val_every``-th epoch and after the last: the objective's metric sums and
  counts, added over batches and processes (never a mean of per-batch means).  Early stopping on the
  objective's ``primary`` metric (lower is better) after ``patience`` epochs without improvement; the
  best weights are kept and restored at the end, and the test metrics are computed with them.
* Files (written by rank 0 only): ``metrics.jsonl`` (one line per epoch), ``checkpoint.pt`` (atomic:
  the run ``config``, model, optimizer, schedule, grad scaler, progress, best weights, and the RNG states
  of torch, numpy, python and of the layers' own generators), ``train_summary.json``.
* Resume from the checkpoint, written at the end of every epoch and, inside long epochs, every
  ``checkpoint_every_s`` seconds: the same steps as an uninterrupted run.

A task supplies an objective (see `Objective`) with ``loss(model, batch) -> mean loss`` (what is
minimised) and ``sums(model, batch) -> {metric: (sum, count)}`` (what is reported).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lieconv_runtime.io import atomic_torch_save, atomic_write_text
from lieconv_runtime.train import distributed as D
from lieconv_runtime.train.schedule import cosine_schedule

__all__ = ["CheckpointError", "Objective", "Regression", "Trainer", "adam", "module_rng_states", "read_checkpoint",
           "read_metrics", "seed_everything", "to_device"]


def read_metrics(path) -> list[dict]:
    """The epoch records of a run's ``metrics.jsonl`` (a line cut by a crash is skipped).
    Raises OSError / UnicodeDecodeError when the file cannot be read."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(r, dict) and "epoch" in r:
            records.append(r)
    return records


#: devices where torch.optim.Adam has a fused implementation for floating-point parameters
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam(params, lr: float) -> torch.optim.Adam:
    """torch.optim.Adam, fused (one kernel for every parameter instead of a dozen ops per tensor)
    wherever torch has it for the parameters' device: the update rule and the state dict are the
    same; on the CPU a QM9 step's update takes ~1.5 ms instead of ~8 at width 256, ~23 instead of
    ~90 at width 1536 (1 thread)."""
    params = list(params)
    fused = all(p.is_floating_point() and p.device.type in FUSED_ADAM_DEVICES for p in params)
    return torch.optim.Adam(params, lr=lr, fused=fused or None)


class CheckpointError(ValueError):
    """A missing, unreadable or foreign checkpoint (one line)."""


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch, device: torch.device, non_blocking: bool = False):
    """``batch`` (tensors, tuples, lists, dicts, or objects with ``.to(device=...)``) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, (tuple, list)):
        return type(batch)(to_device(b, device, non_blocking) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, non_blocking) for k, v in batch.items()}
    if hasattr(batch, "to"):
        return batch.to(device=device)
    return batch


class Objective:
    """What a task minimises and reports.  ``loss`` returns the mean loss of a batch (a 0-d tensor);
    ``sums`` returns ``{metric: (sum, count)}`` (tensors or numbers) so that a data set's metric is
    ``total sum / total count``.  ``primary`` names the metric that picks the best epoch."""

    loss_name = "loss"
    primary = "loss"

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        raise NotImplementedError

    def sums(self, model: nn.Module, batch) -> dict:
        raise NotImplementedError

    def batch_size(self, batch) -> int:
        """Number of examples in ``batch`` (weights the loss across processes)."""
        if isinstance(batch, (tuple, list)):
            return len(batch[0])
        if isinstance(batch, dict):
            return len(next(iter(batch.values())))
        return len(batch)


def _predict_tuple(model, batch):
    return model(*batch[:-1]), batch[-1]


class Regression(Objective):
    """Mean squared error of ``predict(model, batch) -> (prediction, target)`` over all elements
    (default: ``(x..., y) -> (model(x...), y)``)."""

    loss_name = primary = "mse"
    metrics = ("mse",)

    def __init__(self, predict=None):
        self.predict = predict or _predict_tuple

    def loss(self, model, batch):
        pred, target = self.predict(model, batch)
        return (pred - target).square().mean()

    def sums(self, model, batch):
        pred, target = self.predict(model, batch)
        return {"mse": ((pred - target).square().sum(dtype=torch.float64), target.numel())}


class _LossOf(nn.Module):
    """The objective's loss of a batch as a module's forward, so that DistributedDataParallel sees one
    forward per step whatever the objective calls inside (an ODE rollout calls the model many times,
    Hamiltonian models differentiate it inside)."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch):
        return self.objective.loss(self.model, batch)


# --------------------------------------------------------------------------- RNG state
def _rng_state() -> dict:
    npst = np.random.get_state(legacy=False)
    pyst = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": npst["bit_generator"], "key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
                  "pos": int(npst["state"]["pos"]), "has_gauss": int(npst["has_gauss"]), "gauss": float(npst["gauss"])},
        "python": {"version": pyst[0], "state": list(pyst[1]), "gauss": pyst[2]},
    }


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def module_rng_states(model: nn.Module) -> dict:
    """{module name: generator state} of the layers that draw from their own generator (``_gen``)."""
    return {name: m._gen.get_state() for name, m in model.named_modules()
            if isinstance(getattr(m, "_gen", None), torch.Generator)}


def _set_module_rng_states(model: nn.Module, states: dict) -> None:
    for name, m in model.named_modules():
        if hasattr(m, "_gen"):
            if name in states:
                m._gen = torch.Generator().set_state(states[name])
            else:
                m._gen = None


def read_checkpoint(path, task: str | None = None) -> dict:
    """A checkpoint of `Trainer` (``path`` or ``path/checkpoint.pt``) with ``state["path"]``; with
    ``task``, it must record a run of that task (``state["config"]["task"]``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / not a torch file / foreign pickle
        raise CheckpointError(f"cannot read checkpoint {path}: corrupt, truncated or not a torch checkpoint "
                              f"({type(e).__name__})") from None
    config = state.get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of `lieconv train` (no run config)")
    if task is not None and config.get("task") != task:
        raise CheckpointError(f"{path} is a checkpoint of task {config.get('task')!r}, not {task!r}")
    state["path"] = str(path)
    return state


def _num(x):
    """JSON-safe float (None for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


class Trainer:
    """Train ``model`` on ``objective`` with a cosine schedule, early stopping and exact resume.

    Args:
        model: the network (on ``device`` after construction; wrapped in DDP in a process group).
        objective: an `Objective` (loss and metric sums of a batch).
        train_data, val_data, test_data: map-style data sets (``test_data`` may be None).
        out_dir: run folder (``metrics.jsonl``, ``checkpoint.pt``, ``train_summary.json``).
        epochs: length of the run in (possibly fractional) epochs; max_steps caps it.
        lr: base learning rate; batch_size: global batch size (over all processes).
        seed: seeds python/numpy/torch at a fresh start and the per-epoch permutations.
        patience: stop after this many epochs without a validation improvement (None: never).
        val_every: validate every this many epochs and after the last.
        warmup_frac: linear warm-up over this fraction of the steps.
        grad_clip: optional max gradient norm.  eval_batch_size: default batch_size.
        collate, workers: for DataLoader data sets.  device: "cpu", "cuda", "cuda:N".
        precision: "32", or on CUDA "bf16" / "16" (autocast; "16" with loss scaling).
        config: the run description stored in every checkpoint; resuming needs the same one.
        resume: continue from ``out_dir/checkpoint.pt`` if it exists.
        progress: a tqdm bar (rank 0).  checkpoint_every_s: checkpoint inside an epoch this often.
    """

    def __init__(self, model: nn.Module, objective: Objective, train_data, val_data, test_data=None, *,
                 out_dir, epochs: float = 100, lr: float = 1e-3, batch_size: int = 200, seed: int = 0,
                 patience: int | None = None, val_every: int = 1, warmup_frac: float = 0.0,
                 max_steps: int | None = None, grad_clip: float | None = None, eval_batch_size: int | None = None,
                 collate=None, workers: int = 0, device="cpu", precision: str = "32", config: dict | None = None,
                 resume: bool = False, progress: bool = True, checkpoint_every_s: float = 600.0):
        if len(train_data) == 0:
            raise ValueError("empty training set")
        if not epochs > 0:
            raise ValueError(f"epochs must be > 0, got {epochs}")
        self.device = torch.device(device)
        self.model = model
        self.objective = objective
        self.train_data, self.val_data, self.test_data = train_data, val_data, test_data
        self.out_dir = Path(out_dir)
        self.epochs = float(epochs)
        self.lr, self.batch_size, self.seed = float(lr), int(batch_size), int(seed)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.patience, self.val_every = patience, max(1, int(val_every))
        self.warmup_frac, self.max_steps, self.grad_clip = float(warmup_frac), max_steps, grad_clip
        self.collate, self.workers = collate, int(workers)
        self.precision = str(precision)
        self.config = dict(config or {})
        self.resume, self.progress = resume, progress
        self.checkpoint_every_s = float(checkpoint_every_s)
        self.world, self.rank = D.world_size(), D.rank()
        if self.batch_size % self.world:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by the {self.world} processes; "
                             f"choose a multiple of {self.world}")
        self.rank_batch = self.batch_size // self.world
        self.steps_per_epoch = math.ceil(len(self._sampler(0)) / self.rank_batch)
        self.total_steps = max(1, math.ceil(self.epochs * self.steps_per_epoch))
        if max_steps is not None:
            self.total_steps = min(self.total_steps, int(max_steps))
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.ddp = None  # several processes: the loss of a batch, in one DDP forward (gradients all-reduced)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(_LossOf(model, objective), device_ids=ids,
                                                           find_unused_parameters=True)  # e.g. biases a gradient removes
        self.optimizer = adam(model.parameters(), self.lr)
        self.schedule = cosine_schedule(self.optimizer, self.total_steps, self.warmup_frac)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16")
        # progress
        self.step = 0
        self.epoch = 0  # completed epochs
        self.step_in_epoch = 0
        self.partial = {"sum": 0.0, "count": 0}  # training loss of the current epoch so far
        self.best_val = math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.finished = self.stopped_early = self.diverged = False
        self.last_train: float | None = None

    # ------------------------------------------------------------------ paths and config
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "train_summary.json"

    def settings(self) -> dict:
        """The training settings that define the run (checked on resume), merged into the config."""
        return {"epochs": self.epochs if self.epochs != int(self.epochs) else int(self.epochs), "lr": self.lr,
                "batch_size": self.batch_size, "seed": self.seed, "patience": self.patience,
                "warmup_frac": self.warmup_frac, "n_train": len(self.train_data),
                **({"val_every": self.val_every} if self.val_every != 1 else {}),
                **({"max_steps": self.max_steps} if self.max_steps is not None else {}),
                **({"grad_clip": self.grad_clip} if self.grad_clip is not None else {}),
                **({"precision": self.precision} if self.precision != "32" else {})}

    def full_config(self) -> dict:
        return {**self.config, **self.settings()}

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self) -> None:
        if not D.is_main():
            return
        state = {
            "config": self.full_config(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "partial": dict(self.partial),
            "best_val": self.best_val, "best_epoch": self.best_epoch, "best_state": self.best_state,
            "bad_epochs": self.bad_epochs, "finished": self.finished, "stopped_early": self.stopped_early,
            "diverged": self.diverged, "last_train": self.last_train, "rng": _rng_state(),
            "module_rng": module_rng_states(self.model),
        }
        atomic_torch_save(self.checkpoint_path, state)

    def load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state.get("config") != self.full_config():
            raise ValueError(f"checkpoint {self.checkpoint_path} was made with {state.get('config')}, "
                             f"not {self.full_config()}; use another out_dir or resume=False")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        for key in ("step", "epoch", "step_in_epoch", "partial", "best_val", "best_epoch", "best_state", "bad_epochs",
                    "finished", "stopped_early", "diverged", "last_train"):
            setattr(self, key, state[key])
        _set_rng_state(state["rng"])
        _set_module_rng_states(self.model, state["module_rng"])
        if D.is_main():
            self._truncate_metrics(self.epoch)

    def _truncate_metrics(self, upto_epoch: int) -> None:
        """Drop metric lines of epochs after the checkpoint (a crash between the two writes)."""
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                if json.loads(line).get("epoch", 0) <= upto_epoch:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in keep))

    # ------------------------------------------------------------------ data
    def _sampler(self, epoch: int):
        """This process's DistributedSampler of the training set for ``epoch`` (shuffled, seeded per epoch)."""
        from torch.utils.data import DistributedSampler

        sampler = DistributedSampler(self.train_data, num_replicas=self.world, rank=self.rank, shuffle=True,
                                     seed=self.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return sampler

    def _rank_slice(self, idx: torch.Tensor) -> torch.Tensor:
        return idx[self.rank::self.world] if self.world > 1 else idx

    def _batches(self, data, index_batches: list):
        """Batches (on the device) for lists of indices (LongTensors)."""
        if getattr(data, "batched", False):
            for idx in index_batches:
                yield to_device(data[idx], self.device)
            return
        from torch.utils.data import DataLoader

        pin = self.device.type == "cuda"
        loader = DataLoader(data, batch_sampler=[idx.tolist() for idx in index_batches], collate_fn=self.collate,
                            num_workers=self.workers, pin_memory=pin, persistent_workers=False)
        for batch in loader:
            yield to_device(batch, self.device, non_blocking=pin)

    def _autocast(self):
        if self.precision == "32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size: int | None = None) -> dict:
        """``{metric: total sum / total count}`` over ``data`` (every process evaluates its share)."""
        bs = batch_size or self.eval_batch_size
        was_training = self.model.training
        self.model.eval()
        totals: dict[str, torch.Tensor] = {}
        idx = [self._rank_slice(torch.arange(s, min(s + bs, len(data)))) for s in range(0, len(data), bs)]
        with torch.no_grad(), self._autocast():
            for batch in self._batches(data, [i for i in idx if len(i)]):
                for name, (s, c) in self.objective.sums(self.model, batch).items():
                    pair = torch.stack([torch.as_tensor(s, dtype=torch.float64, device=self.device).reshape(()),
                                        torch.as_tensor(c, dtype=torch.float64, device=self.device).reshape(())])
                    totals[name] = totals[name] + pair if name in totals else pair
        self.model.train(was_training)
        if not totals:  # an empty split (or an empty share): still take part in the reduction
            names = getattr(self.objective, "metrics", (self.objective.primary,))
            totals = {name: torch.zeros(2, dtype=torch.float64, device=self.device) for name in names}
        out = {}
        for name in sorted(totals):
            s, c = D.all_reduce_sum(totals[name]).tolist()
            out[name] = s / c if c else math.nan
        return out

    # ------------------------------------------------------------------ training
    def _train_step(self, batch) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            loss = self.ddp(batch) if self.ddp is not None else self.objective.loss(self.model, batch)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.step()
        return loss.detach()

    def _run_epoch(self, bar) -> None:
        """Train until the end of the current epoch (or the run), checkpointing inside long epochs."""
        self.model.train()
        order = torch.tensor(list(self._sampler(self.epoch)), dtype=torch.long)
        end = min(self.steps_per_epoch, self.total_steps - (self.step - self.step_in_epoch))
        steps = range(self.step_in_epoch, end)
        b = self.rank_batch
        last_ckpt = time.time()
        for k, batch in zip(steps, self._batches(self.train_data, [order[k * b:(k + 1) * b] for k in steps])):
            loss = self._train_step(batch)
            size = float(self.objective.batch_size(batch))
            total = D.all_reduce_sum(torch.stack([loss.double() * size, loss.new_tensor(size, dtype=torch.float64)]))
            if not bool(torch.isfinite(total[0])):
                self.diverged = True
                return
            self.partial["sum"] += float(total[0])
            self.partial["count"] += int(total[1])
            self.step += 1
            self.step_in_epoch = k + 1
            bar.update(1)
            if time.time() - last_ckpt > self.checkpoint_every_s and self.step_in_epoch < end:
                self.save_checkpoint()
                last_ckpt = time.time()

    def fit(self, stop_after_epochs: int | None = None) -> dict:
        """Train; returns (and rank 0 writes) the summary dict.  ``stop_after_epochs``: leave after this
        many epochs of this call (the checkpoint allows ``resume=True`` later; the summary then has
        ``"finished": False`` and no test metrics)."""
        from tqdm.auto import tqdm

        if D.is_main():
            self.out_dir.mkdir(parents=True, exist_ok=True)
        t_start = time.time()
        if self.resume and self.checkpoint_path.exists():
            self.load_checkpoint()
        else:
            seed_everything(self.seed)
            if D.is_main() and self.metrics_path.exists():
                self.metrics_path.unlink()
        run_epochs, timed = 0, [0.0, 0]
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not (self.progress and D.is_main()))
        while not self.finished and self.step < self.total_steps:
            if stop_after_epochs is not None and run_epochs >= stop_after_epochs:
                break
            t0, s0 = time.time(), self.step
            lr = self.schedule.get_last_lr()[0]
            self._run_epoch(bar)
            timed[0] += time.time() - t0  # training steps only (s_per_step)
            timed[1] += self.step - s0
            train = self.partial["sum"] / max(self.partial["count"], 1)
            self.epoch += 1
            run_epochs += 1
            self.step_in_epoch, self.partial = 0, {"sum": 0.0, "count": 0}
            last = self.step >= self.total_steps
            val: dict = {}
            if self.diverged:
                train = math.nan
            elif self.epoch % self.val_every == 0 or last:
                val = self.evaluate(self.val_data)
                self.last_train = train
                score = val.get(self.objective.primary, math.nan)
                if score < self.best_val:
                    self.best_val, self.best_epoch, self.bad_epochs = score, self.epoch, 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                else:
                    self.bad_epochs += self.val_every
            dt = time.time() - t0
            record = {"epoch": self.epoch, "step": self.step, "lr": lr, f"train_{self.objective.loss_name}": _num(train),
                      **{f"val_{k}": _num(v) for k, v in val.items()},
                      **({} if val else {f"val_{self.objective.primary}": None}),
                      f"best_val_{self.objective.primary}": _num(self.best_val), "epoch_time_s": round(dt, 4)}
            if D.is_main():
                with open(self.metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
            if self.diverged or last:
                self.finished = True
            elif self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped_early = self.finished = True
            self.save_checkpoint()
            bar.set_postfix({"train": f"{train:.3g}", **({f"val_{self.objective.primary}":
                                                           f"{val[self.objective.primary]:.3g}"} if val else {})})
        bar.close()
        return self._summary(time.time() - t_start, timed[0] / timed[1] if timed[1] else None)

    def _summary(self, wall: float, s_per_step: float | None) -> dict:
        p = self.objective.primary
        summary = {"finished": self.finished, "epochs_completed": self.epoch, "steps": self.step,
                   "stopped_early": self.stopped_early, "diverged": self.diverged, "best_epoch": self.best_epoch,
                   f"best_val_{p}": _num(self.best_val), f"last_train_{self.objective.loss_name}": _num(self.last_train),
                   **{f"test_{name}": None for name in getattr(self.objective, "metrics", (p,))},
                   "n_params": sum(q.numel() for q in self.model.parameters()), "wall_time_s": round(wall, 3),
                   "s_per_step": None if s_per_step is None else round(s_per_step, 5),
                   **self.settings()}
        if self.finished:
            if self.best_state is not None:
                self.model.load_state_dict(self.best_state)
            if self.test_data is not None and len(self.test_data) > 0:
                summary.update({f"test_{k}": _num(v) for k, v in self.evaluate(self.test_data).items()})
            if D.is_main():
                atomic_write_text(self.summary_path, json.dumps(summary, indent=1) + "\n")
        return summary
