"""Generic, resumable trainer for regression (MSE) on chunk data.

* Adam (default betas, no weight decay) + :class:`~lieconv_runtime.train.schedule.CosineSchedule`
  stepped per iteration.
* Validation every epoch (or every ``val_every``-th and the last); early stopping on validation MSE (``patience``), the
  best weights are kept and restored at the end.
* ``<out>/metrics.jsonl``: one JSON object per epoch.
* ``<out>/checkpoint.pt`` written atomically (:func:`lieconv_runtime.io.atomic_write`) after
  every epoch: model, optimizer, schedule, epoch, best val / best weights,
  early-stopping counter and the torch / numpy / python RNG states.
  ``resume=True`` continues from it; the shuffling order of epoch ``e`` is drawn
  from a generator seeded by ``(seed, e)``, so a resumed run ends with the same
  weights as an uninterrupted one.
* MSE of a data set = total squared error / number of elements, i.e. batches
  are weighted by their size (the original averaged per-batch losses).
* A summary dict is returned and written to ``<out>/train_summary.json``.

Data sets must support ``len(data)`` and ``data[LongTensor] -> batch``
(:class:`~lieconv_runtime.data.springs.ChunkData`, ``torch.utils.data.TensorDataset``).
``predict_fn(model, batch) -> (prediction, target)``; by default ChunkData batches
are rolled out with RK4 on the chunk grid and tuple batches ``(x..., y)`` give
``(model(x...), y)``. Batches are used as stored: give them the model's dtype.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from lieconv_runtime.train.schedule import CosineSchedule
from lieconv_runtime.io import atomic_torch_save, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["Trainer", "default_predict", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def default_predict(model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x..., y) -> (model(x...), y)``; ChunkData-like batches (``.z0``) -> RK4 rollout."""
    if isinstance(batch, (tuple, list)):
        return model(*batch[:-1]), batch[-1]
    from lieconv_runtime.models.hamiltonian import predict_chunks

    return predict_chunks(model, batch)


def _rng_state() -> dict:
    npst = np.random.get_state(legacy=False)
    pyst = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": npst["bit_generator"],
            "key": torch.from_numpy(npst["state"]["key"].astype(np.int64)),
            "pos": int(npst["state"]["pos"]),
            "has_gauss": int(npst["has_gauss"]),
            "gauss": float(npst["gauss"]),
        },
        "python": {"version": pyst[0], "state": list(pyst[1]), "gauss": pyst[2]},
    }


def _set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    n = st["numpy"]
    np.random.set_state({
        "bit_generator": n["bit_generator"],
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })
    p = st["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


class Trainer:
    """Train ``model`` by MSE regression with early stopping and exact resume.

    Args:
        model: the network; its parameters' dtype/device must match the data.
        train_data, val_data, test_data: indexable data sets (see module doc);
            ``test_data`` may be ``None``.
        out_dir: folder for ``metrics.jsonl``, ``checkpoint.pt``, ``train_summary.json``.
        epochs: ``E`` of the cosine schedule and maximum number of epochs.
        lr: base learning rate. batch_size: training batch size (paper: 200).
        patience: stop after this many epochs without a val improvement (``None``: never).
        val_every: validate every this many epochs (and always after the last one); the best
            (early-stopping) weights are chosen among the validated epochs.
        warmup_frac: linear warm-up fraction of the epochs (0 = none).
        seed: seeds python/numpy/torch at a fresh start and the per-epoch shuffles.
        predict_fn: ``(model, batch) -> (pred, target)``; default :func:`default_predict`.
        eval_batch_size: batch size for val/test (default ``batch_size``).
        resume: continue from ``<out_dir>/checkpoint.pt`` if it exists.
        progress: show a tqdm bar over epochs.
        grad_clip: optional max gradient norm.
    """

    def __init__(
        self,
        model: nn.Module,
        train_data,
        val_data,
        test_data=None,
        *,
        out_dir: str | os.PathLike,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 200,
        patience: int | None = None,
        warmup_frac: float = 0.0,
        seed: int = 0,
        predict_fn: Callable | None = None,
        eval_batch_size: int | None = None,
        resume: bool = False,
        progress: bool = True,
        grad_clip: float | None = None,
        val_every: int = 1,
    ):
        if len(train_data) == 0:
            raise ValueError("empty training set")
        self.model = model
        self.train_data, self.val_data, self.test_data = train_data, val_data, test_data
        self.out_dir = Path(out_dir)
        self.epochs = int(epochs)
        self.lr = float(lr)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.patience = patience
        self.val_every = max(1, int(val_every))
        self.seed = int(seed)
        self.predict_fn = predict_fn or default_predict
        self.resume = resume
        self.progress = progress
        self.grad_clip = grad_clip
        self.steps_per_epoch = math.ceil(len(train_data) / self.batch_size)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        self.schedule = CosineSchedule(self.optimizer, self.lr, self.epochs, self.steps_per_epoch, warmup_frac)
        self.warmup_frac = float(warmup_frac)
        # training state
        self.epoch = 0
        self.best_val = math.inf
        self.best_epoch = 0
        self.best_state: dict | None = None
        self.bad_epochs = 0
        self.finished = False
        self.stopped_early = False
        self.diverged = False
        self.last_train_mse: float | None = None

    # ------------------------------------------------------------------ paths
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "checkpoint.pt"

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.out_dir / "train_summary.json"

    def _config(self) -> dict:
        return {
            "epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "seed": self.seed,
            "patience": self.patience, "warmup_frac": self.warmup_frac, "n_train": len(self.train_data),
            **({"val_every": self.val_every} if self.val_every != 1 else {}),
        }

    # ------------------------------------------------------------------ checkpoint
    def save_checkpoint(self) -> None:
        state = {
            "config": self._config(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "best_state": self.best_state,
            "bad_epochs": self.bad_epochs,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "diverged": self.diverged,
            "last_train_mse": self.last_train_mse,
            "rng": _rng_state(),
        }
        atomic_torch_save(self.checkpoint_path, state)

    def load_checkpoint(self) -> None:
        state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        if state["config"] != self._config():
            raise ValueError(
                f"checkpoint {self.checkpoint_path} was made with {state['config']}, "
                f"not {self._config()}; use another out_dir or resume=False"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for key in ("epoch", "best_val", "best_epoch", "best_state", "bad_epochs", "finished",
                    "stopped_early", "diverged", "last_train_mse"):
            setattr(self, key, state[key])
        _set_rng_state(state["rng"])
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
        atomic_write_text(self.metrics_path, "".join(l + "\n" for l in keep))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, data, batch_size: int | None = None) -> float:
        """MSE over all elements of ``data`` (batch-size weighted)."""
        bs = batch_size or self.eval_batch_size
        was_training = self.model.training
        self.model.eval()
        sq, count = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(data), bs):
                batch = data[torch.arange(s, min(s + bs, len(data)))]
                pred, target = self.predict_fn(self.model, batch)
                sq += float(((pred - target) ** 2).sum(dtype=torch.float64))
                count += target.numel()
        self.model.train(was_training)
        return sq / max(count, 1)

    # ------------------------------------------------------------------ training
    def _train_epoch(self) -> float:
        self.model.train()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.train_data), generator=gen)
        sq, count = 0.0, 0
        for s in range(0, len(order), self.batch_size):
            batch = self.train_data[order[s:s + self.batch_size]]
            self.optimizer.zero_grad(set_to_none=True)
            pred, target = self.predict_fn(self.model, batch)
            loss = ((pred - target) ** 2).mean()
            if not torch.isfinite(loss):
                self.diverged = True
                return math.nan
            loss.backward()
            if self.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            sq += float(loss.detach()) * target.numel()
            count += target.numel()
        return sq / count

    def fit(self, stop_after_epochs: int | None = None) -> dict:
        """Train; returns (and writes) the summary dict.

        ``stop_after_epochs``: leave after this many epochs of this call (simulates an
        interruption; the checkpoint allows ``resume=True`` later). The summary then
        has ``"finished": False`` and no test MSE.
        """
        from tqdm.auto import tqdm

        self.out_dir.mkdir(parents=True, exist_ok=True)
        t_start = time.time()
        if self.resume and self.checkpoint_path.exists():
            self.load_checkpoint()
            log.info("resumed from %s at epoch %d", self.checkpoint_path, self.epoch)
        else:
            seed_everything(self.seed)
            if self.metrics_path.exists():
                self.metrics_path.unlink()
        run_epochs = 0
        bar = tqdm(total=self.epochs, initial=self.epoch, desc="train", unit="ep", disable=not self.progress)
        while not self.finished and self.epoch < self.epochs:
            if stop_after_epochs is not None and run_epochs >= stop_after_epochs:
                break
            t0 = time.time()
            lr = self.schedule.get_lr()
            train_mse = self._train_epoch()
            self.epoch += 1
            run_epochs += 1
            if self.diverged:
                log.warning("non-finite training loss at epoch %d: stopping", self.epoch)
                val_mse = math.nan
            elif self.epoch % self.val_every and self.epoch < self.epochs:
                val_mse = math.nan  # not a validation epoch
            else:
                val_mse = self.evaluate(self.val_data)
                self.last_train_mse = train_mse
                if val_mse < self.best_val:
                    self.best_val, self.best_epoch, self.bad_epochs = val_mse, self.epoch, 0
                    self.best_state = copy.deepcopy(self.model.state_dict())
                else:
                    self.bad_epochs += self.val_every
            record = {
                "epoch": self.epoch, "step": self.schedule.step_count, "lr": lr,
                "train_mse": _num(train_mse), "val_mse": _num(val_mse), "best_val_mse": _num(self.best_val),
                "epoch_time_s": round(time.time() - t0, 4),
            }
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.diverged:
                self.finished = True
            elif self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped_early = True
                self.finished = True
            elif self.epoch >= self.epochs:
                self.finished = True
            self.save_checkpoint()
            bar.update(1)
            bar.set_postfix(train=f"{train_mse:.3g}", val=f"{val_mse:.3g}")
        bar.close()
        if not self.finished and self.epoch >= self.epochs:
            self.finished = True
            self.save_checkpoint()
        return self._summary(time.time() - t_start)

    def _summary(self, wall: float) -> dict:
        summary = {
            "finished": self.finished,
            "epochs_completed": self.epoch,
            "steps": self.schedule.step_count,
            "stopped_early": self.stopped_early,
            "diverged": self.diverged,
            "best_epoch": self.best_epoch,
            "best_val_mse": _num(self.best_val),
            "last_train_mse": _num(self.last_train_mse),
            "test_mse": None,
            "n_params": sum(p.numel() for p in self.model.parameters()),
            "wall_time_s": round(wall, 3),
            **self._config(),
        }
        if self.finished:
            if self.best_state is not None:
                self.model.load_state_dict(self.best_state)
            if self.test_data is not None and len(self.test_data) > 0:
                summary["test_mse"] = _num(self.evaluate(self.test_data))
            atomic_write_text(self.summary_path, json.dumps(summary, indent=1) + "\n")
        return summary


def _num(x):
    """JSON-safe float (None for NaN/inf/None)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None
