"""Mixed precision (autocast): the kernel MLP and contraction may run in bf16, the group geometry
(lifting, logs, distances, neighbourhoods) never does, and a bf16 run's loss tracks the float32 run.
On the CPU with bf16 (fp16 needs CUDA); the same code runs under CUDA autocast."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from lieconv_runtime import load_group
from lieconv_runtime.cli import main
from lieconv_runtime.nn import LieResNet, PairGeometry
from lieconv_runtime.train import Regression, Trainer


def _data():
    gen = torch.Generator().manual_seed(0)
    x, v = torch.randn(48, 16, 2, generator=gen), torch.randn(48, 16, 1, generator=gen)
    y = (x - x.mean(1, keepdim=True)).norm(dim=-1).mean(-1, keepdim=True)  # an SE(2)-invariant target
    return TensorDataset(x, v, y)


def _fit(precision, tmp_path):
    torch.manual_seed(0)
    G = load_group("SE2", lift_samples=2)
    net = LieResNet(1, G, num_outputs=1, k=16, num_layers=2, nbhd=6, fill=0.5)
    ds = _data()
    s = Trainer(net, Regression(), ds, ds, out_dir=tmp_path / precision, epochs=4, lr=3e-3, batch_size=16,
                progress=False, precision=precision).fit()
    return s


def test_bf16_tracks_float32_and_keeps_the_geometry_exact(tmp_path, monkeypatch):
    seen = []
    real = PairGeometry.embed

    def embed(self, i_idx, j_idx):
        out = real(self, i_idx, j_idx)
        seen.append((out.dtype, torch.is_autocast_enabled("cpu")))
        return out

    monkeypatch.setattr(PairGeometry, "embed", embed)
    full, half = _fit("32", tmp_path), _fit("bf16", tmp_path)
    assert seen and all(dtype == torch.float32 and not on for dtype, on in seen)  # never in bf16
    assert abs(half["best_val_mse"] - full["best_val_mse"]) <= 0.1 * full["best_val_mse"]
    assert half["precision"] == "bf16"


def test_fp16_needs_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is there")
    assert main(["train", "springs", "--model", "HFC", "--precision", "16", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--precision 16" in err and "CUDA" in err
