"""Dynamics models ``dz/dt = F(z; m, k)``, Hamiltonian models and ODE rollouts.

State convention (as in :mod:`lieconv_runtime.data.springs`): ``z (bs, 2ND)`` is
``[q, p]``, positions then momenta, particle-major; the system parameters are
``m, k (bs, N)``.

Every model here is a :class:`DynamicsModel`: it implements
``derivative(z, m, k) -> dz/dt (bs, 2ND)``. The system parameters of the current
batch are bound explicitly: :func:`rollout` builds the closure
``lambda t, z: model.derivative(z, m, k)`` for the ODE solver, so no hidden
state is kept on the module. (For code that wants to call ``odeint(model, ...)``
itself, ``model.set_system(m, k)`` stores them and ``model(t, z)`` uses them.)

:class:`HamiltonianModel` computes ``dz/dt = J grad_z H`` with
``torch.autograd.grad(..., create_graph=True)`` whenever gradients are enabled
(double backprop for training); under ``torch.no_grad`` it still works (it
enables grad locally) and returns a detached derivative.
:class:`HamiltonianDynamics` is ``H = sum |p_i|^2/(2 m_i) + V(q, m, k)`` for any
potential module with the interface ``V(q (bs, N, D), m (bs, N), k (bs, N)) -> (bs,)``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchdiffeq import odeint

from lieconv_runtime.data.springs import kinetic_energy, spring_potential, split_state
from lieconv_runtime.nn.lieconv import frozen_radius
from lieconv_runtime.nn.resnet import LieResNet

__all__ = [
    "CompileError",
    "DynamicsModel",
    "HamiltonianModel",
    "HamiltonianDynamics",
    "LieResNetPotential",
    "SpringPotential",
    "build_hlieresnet",
    "rollout",
    "predict_chunks",
]


class CompileError(RuntimeError):
    """A model's derivative cannot be compiled (`HamiltonianModel.compile_derivative`)."""


class DynamicsModel(nn.Module):
    """Base class: ``derivative(z (bs, 2ND), m (bs, N), k (bs, N)) -> (bs, 2ND)``."""

    def __init__(self, n_particles: int | None = None, dim: int | None = None):
        super().__init__()
        self.n_particles = n_particles
        self.dim = dim
        self._system: tuple[torch.Tensor, torch.Tensor] | None = None

    def derivative(self, z: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def set_system(self, m: torch.Tensor, k: torch.Tensor) -> "DynamicsModel":
        """Bind ``m, k (bs, N)`` for subsequent ``forward(t, z)`` calls."""
        self._system = (m, k)
        return self

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """ODE-function signature ``(t, z) -> dz/dt`` using :meth:`set_system`'s params."""
        if self._system is None:
            raise RuntimeError("call set_system(m, k) first, or use rollout(model, z0, ts, m, k)")
        return self.derivative(z, *self._system)

    def _shape(self, z: torch.Tensor, m: torch.Tensor) -> tuple[int, int]:
        n = m.shape[-1]
        return n, z.shape[-1] // (2 * n)


class HamiltonianModel(DynamicsModel):
    """``dz/dt = J grad_z H(z, m, k)`` with ``J = [[0, I], [-I, 0]]``.

    Subclasses implement ``hamiltonian(z (bs, 2ND), m, k) -> (bs,)``.
    """

    _compiled = None  # the compiled training derivative (`compile_derivative`)

    def hamiltonian(self, z: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compile_derivative(self, enabled: bool = True) -> "HamiltonianModel":
        """Compute training derivatives (gradients enabled) with torch.compile: J grad_z H as one
        graph, ``torch.func.grad`` of H inside it, so the compiler sees H, its gradient and (in
        the training backward) the gradient's gradient together and fuses their many small
        elementwise ops; each (batch shape, dtype, device) compiles once, on first use.  The
        model's forward pass must trace as one graph (`CompileError` otherwise).  Derivatives
        without gradients (evaluation, rollouts) stay eager.  Returns self."""
        # cpp_wrapper: the compiled graph is called from C++ (about 10 % faster steps for HLieResNet(T2) at width 128
        # and batch 25 on the CPU); cpp_wrapper_build_separate: its entry code is compiled apart from the kernels,
        # at -O1 (a first compile of 23-26 s instead of 33 s, the same step time)
        self._compiled = torch.compile(self._grad_derivative, fullgraph=True, dynamic=False,
                                       options={"cpp_wrapper": True, "cpp_wrapper_build_separate": True}
                                       ) if enabled else None
        return self

    def _grad_derivative(self, z: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return _symplectic(torch.func.grad(lambda z: self.hamiltonian(z, m, k).sum())(z))

    def derivative(self, z: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        build_graph = torch.is_grad_enabled()
        # a state that needs no gradient (the first RK4 stage's) becomes a leaf that needs one; compiled, every stage
        # then shares one graph (a second graph would double the compile time; the extra gradient costs little)
        z = z if z.requires_grad else z.detach().requires_grad_(True)
        if build_graph and self._compiled is not None:
            try:  # dynamo's recompile limit counts the graphs of every model in the process: one per model here
                with torch._dynamo.config.patch(recompile_limit=max(64, torch._dynamo.config.recompile_limit)):
                    return self._compiled(z, m, k)
            except torch._dynamo.exc.TorchDynamoException as e:
                lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
                why = next((line for line in lines if line.startswith("Caused by:")), lines[0])
                raise CompileError(f"{type(self).__name__}'s derivative does not compile as one graph "
                                   f"(torch.compile: {why[:300]}); train without compiling") from None
        with torch.enable_grad():
            (dh,) = torch.autograd.grad(self.hamiltonian(z, m, k).sum(), z, create_graph=build_graph)
        dz = _symplectic(dh)
        return dz if build_graph else dz.detach()


def _symplectic(dh: torch.Tensor) -> torch.Tensor:
    """J dH/dz = [dH/dp, -dH/dq] from dH/dz = [dH/dq, dH/dp] (..., 2ND)."""
    half = dh.shape[-1] // 2
    return torch.cat([dh[..., half:], -dh[..., :half]], dim=-1)


class HamiltonianDynamics(HamiltonianModel):
    """``H(q, p) = sum_i |p_i|^2 / (2 m_i) + V(q, m, k)``.

    ``potential``: module with ``V(q (bs, N, D), m (bs, N), k (bs, N)) -> (bs,)``.
    """

    def __init__(self, potential: nn.Module, n_particles: int | None = None, dim: int | None = None):
        super().__init__(n_particles, dim)
        self.potential = potential

    def hamiltonian(self, z: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        n, d = self._shape(z, m)
        q, p = split_state(z, n, d)
        return kinetic_energy(p, m) + self.potential(q, m, k).reshape(z.shape[0])


class SpringPotential(nn.Module):
    """The true spring potential (no parameters): ``1/2 sum_ij k_i k_j |q_i - q_j|^2``."""

    def forward(self, q: torch.Tensor, m: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return spring_potential(q, k)


def rollout(
    dynamics: Callable,
    z0: torch.Tensor,
    ts: torch.Tensor,
    m: torch.Tensor | None = None,
    k: torch.Tensor | None = None,
    method: str = "rk4",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    step_size: float | None = None,
) -> torch.Tensor:
    """Integrate ``dz/dt`` from ``z0 (bs, 2ND)`` over ``ts (T,)``: returns ``(bs, T, 2ND)``.

    ``m, k (bs, N)``: system parameters; if given, ``dynamics`` must be a
    :class:`DynamicsModel` (its ``derivative`` is closed over them); otherwise
    ``dynamics`` is called as ``dynamics(t, z)``.
    ``method='rk4'`` (default, training): fixed steps on the ``ts`` grid (or
    ``step_size``), rtol/atol unused. ``'dopri5'`` / ``'dopri8'`` (long
    rollouts): adaptive with ``rtol``/``atol``.
    """
    if m is not None or k is not None:
        if m is None or k is None:
            raise ValueError("pass both m and k, or neither")
        func = lambda t, z: dynamics.derivative(z, m, k)
    else:
        func = dynamics
    ts = ts.to(dtype=z0.dtype, device=z0.device)
    options = None
    if method in ("rk4", "euler", "midpoint", "explicit_adams", "implicit_adams") and step_size is not None:
        options = {"step_size": step_size}
    zs = odeint(func, z0, ts, method=method, rtol=rtol, atol=atol, options=options)  # (T, bs, 2ND)
    return zs.transpose(0, 1)


def predict_chunks(model: DynamicsModel, batch, method: str = "rk4") -> tuple[torch.Tensor, torch.Tensor]:
    """Trainer hook for :class:`~lieconv_runtime.data.springs.ChunkData` batches.

    Returns ``(prediction, target)``, both ``(bs, L, 2ND)``: RK4 on the chunk grid.
    """
    pred = rollout(model, batch.z0, batch.ts, batch.m, batch.k, method=method)
    return pred, batch.zs


class LieResNetPotential(LieResNet):
    """Potential V(q (bs, N, D), m (bs, N), k (bs, N)) -> (bs,) for HamiltonianDynamics.

    Values (m_i, k_i) per particle; width 384, 4 blocks, no batch norm, every particle in every
    neighbourhood, mean pooling to a scalar.  Positions are not centred: any translation
    symmetry comes from the group.  The ball radius is irrelevant (fill 1), so ODE solves never
    change the module's state.  Groups with a stabilizer lift by `group.stabilizer_frame` when
    they can (SE2, SO3, SE3): V is then a deterministic, exactly invariant function of q, which
    ODE solvers and Noether's theorem need; otherwise (Sim2) by Haar samples, redrawn per call.
    """

    def __init__(self, group, width: int = 384, num_layers: int = 4, **kw):
        if group.stabilizer_dim > 0 and group.frame_support() is None:
            kw.setdefault("lift_mode", "frame")
        super().__init__(2, group, num_outputs=1, k=width, num_layers=num_layers, nbhd=None, fill=1.0, bn=False,
                         mean=True, **kw)

    def forward(self, q: torch.Tensor, m: torch.Tensor, k: torch.Tensor, stabilizer: torch.Tensor | None = None):
        values = torch.stack([m, k], -1).to(q.dtype)
        with frozen_radius(self):
            return super().forward(q, values, None, stabilizer=stabilizer)[:, 0]


def build_hlieresnet(n_particles: int, dim: int, group: str, **kw):
    """Registry builder: HamiltonianDynamics with a LieResNetPotential over `group` (a group name).

    The paper's HLieResNet lifts each particle once (``lift_samples=1``, whatever the spec's default;
    pass ``lift_samples`` to change it)."""
    from lieconv_runtime import load_group

    kw.setdefault("lift_samples", 1)
    G = load_group(group, alpha=kw.pop("alpha", None), metric=kw.pop("metric", None),
                   distance=kw.pop("distance", None))
    return HamiltonianDynamics(LieResNetPotential(G, **kw), n_particles, dim)
