"""Bounded rollouts: the dopri5 step budget counts every attempted step over the whole rollout,
a batch over it (or underflowing, or non-finite) is redone with RK4 on the data grid, and the
summary counts those trajectories."""

import json

import pytest
import torch

from lieconv_runtime.data.springs import SpringTrajectories, generate_springs
from lieconv_runtime.models.hamiltonian import HamiltonianDynamics, SpringPotential
from lieconv_runtime.tasks import springs_rollouts as E


@pytest.fixture(scope="module")
def traj():
    """6 systems of 3 particles in 2D, 41 times over [0, 2] (exact ground truth)."""
    return generate_springs(6, 3, 2, n_times=41, t_end=2.0, seed=5, progress=False)


class Decay(torch.nn.Module):
    """dz/dt = -rate z, the rate of each system in its first mass: a stiff system needs many steps."""

    def derivative(self, z, m, k):
        return -m[:, :1] * z


def _with_rates(traj, rates):
    m = traj.m.clone()
    m[:, 0] = torch.tensor(rates, dtype=m.dtype)
    return SpringTrajectories(traj.ts, traj.zs, m, traj.k, dict(traj.config))


def test_budget_counts_steps_over_the_whole_rollout(traj):
    """torchdiffeq's max_num_steps restarts at every output time: the true Hamiltonian needs only a few
    steps per interval of the 41-point grid, yet well over 30 in all, so a budget of 30 must trip."""
    model = HamiltonianDynamics(SpringPotential(), 3, 2).double()
    free = E.rollout_metrics(model, traj, rtol=1e-8, atol=1e-10, max_steps=10_000, batch_size=3)
    assert free["fallback_rollouts"] == 0 and free["evaluations"] > 2 * (2 + 6 * 30)
    tight = E.rollout_metrics(model, traj, rtol=1e-8, atol=1e-10, max_steps=30, batch_size=3)
    assert tight["fallback_rollouts"] == 6 and tight["fallback_batches"] == 2
    assert tight["fallback_reasons"] == {"step_budget": 6}
    # the bound of the docs: per batch 2 + 6 max_steps (dopri5) and 4 (T - 1) for RK4 (one batch of 6)
    assert tight["evaluations"] <= 2 * (2 + 6 * 30) + 4 * (len(traj.ts) - 1)
    # the fallback is RK4 on the data grid, exactly
    rk4 = E.integrate(model, traj.zs[:, 0], traj.m, traj.k, traj.ts, "rk4")
    assert torch.equal(torch.from_numpy(tight["pred"]), rk4)


def test_one_stiff_trajectory_sends_only_its_batch_to_rk4(traj):
    stiff = _with_rates(traj, [1.0, 1.0, 1.0, 5e3, 1.0, 1.0])
    r = E.rollout_metrics(Decay(), stiff, rtol=1e-6, atol=1e-9, max_steps=200, batch_size=2)
    assert r["fallback_rollouts"] == 2 and r["fallback_batches"] == 1  # trajectories 2 and 3
    smooth = torch.exp(-stiff.ts)[None, :, None] * stiff.zs[[0, 1, 4, 5], :1]
    assert torch.allclose(torch.from_numpy(r["pred"][[0, 1, 4, 5]]), smooth, rtol=1e-5, atol=1e-8)
    # rate 5e3 at dt = 0.05: RK4 is unstable, and the summary says so
    assert r["nonfinite_rollouts"] == 1


def test_non_finite_state_falls_back(traj):
    class Blowup(torch.nn.Module):
        def derivative(self, z, m, k):
            return z * z * 1e3

    r = E.rollout_metrics(Blowup(), traj, max_steps=500, batch_size=6)
    assert r["fallback_rollouts"] == 6 and set(r["fallback_reasons"]) <= {"non_finite", "step_underflow",
                                                                          "step_budget"}


def test_default_budget_and_worst_case_cost():
    assert E.default_max_steps(500) == 1996
    assert E.worst_case_evaluations(500) == 2 + 6 * 1996 + 4 * 499 == 13_974
    assert E.worst_case_evaluations(60, max_steps=10) == 2 + 60 + 4 * 59


def test_progress_bar_shows_the_fallback_count(traj, capsys):
    stiff = _with_rates(traj, [1.0, 5e3, 1.0, 1.0, 1.0, 1.0])
    E.rollout_metrics(Decay(), stiff, rtol=1e-6, atol=1e-9, max_steps=200, batch_size=2, progress=True)
    err = capsys.readouterr().err
    assert "rollouts" in err and "rk4=2" in err
    E.rollout_metrics(Decay(), stiff, rtol=1e-6, atol=1e-9, max_steps=200, batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


def test_cli_eval_takes_a_step_budget_and_counts_fallbacks(tmp_path, capsys):
    from lieconv_runtime.cli import main

    data, out = str(tmp_path / "data"), tmp_path / "run"
    args = ["--model", "HFC", "--n-train", "8", "--n-val", "4", "--n-test", "4", "--n-systems", "16",
            "--n-times", "30", "--t-end", "1.0", "--batch-size", "8", "--model-kw", "width=8", "n_hidden=1",
            "--data-dir", data, "--no-progress"]
    assert main(["train", "springs", *args, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", "springs", "--checkpoint", str(out), "--n-rollouts", "4", "--rollout-steps", "3",
                 "--rollout-batch", "2", "--no-plots", "--no-progress"]) == 0
    s = json.loads((out / "eval" / "summary.json").read_text())
    assert (s["max_steps"], s["rollout_batch_size"], s["rk4_fallback_rollouts"]) == (3, 2, 4)
    assert s["solver_fallback_batches"] == 2 and s["rk4_fallback_reasons"] == {"step_budget": 4}
    assert set(s["metrics"]) >= {"test_mse", *E.METRICS, "rk4_fallback_rollouts"}
    assert "4 of 4 rollouts were redone with RK4" in capsys.readouterr().err
