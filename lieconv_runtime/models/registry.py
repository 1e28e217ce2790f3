"""Registry of spring-dynamics models: ``name -> builder + paper learning rate``.

A builder is called as ``builder(n_particles, dim, group=NAME, **kw) -> DynamicsModel``
(group-free models without ``group``, so plain classes like ``FC`` register as is).
Models that need a symmetry group are registered with ``needs_group=True``; they
receive the group *name* (validated here against :func:`lieconv_runtime.available_groups`
and the space dimension) and load it themselves with
:func:`lieconv_runtime.load_group` (or :func:`load_group_checked`).

The baselines are registered below. A LieConv model is added with one line; the
builder may be given as ``"module:function"`` (imported on first use, no cycles)::

    register("HLieResNet", "lieconv_runtime.models.hlieresnet:build_hlieresnet", lr=1e-3,
             group_lr={"SO2": 3e-4}, needs_group=True)

Lookups are case-insensitive; bad names raise :class:`RegistryError` (a
``ValueError``) with a one-line message listing what is available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from lieconv_runtime.models.dynamics_baselines import FC, HFC, HOGN, OGN, PAPER_LR

__all__ = [
    "ModelSpec",
    "RegistryError",
    "available_models",
    "build_model",
    "check_group",
    "check_model",
    "describe_models",
    "get_spec",
    "load_group_checked",
    "paper_lr",
    "register",
]


class RegistryError(ValueError):
    """Unknown model or group, or a model/group combination that does not fit."""


@dataclass(frozen=True)
class ModelSpec:
    """A registered model. ``builder``: callable or ``"module:function"``; ``group_lr`` overrides ``lr`` per group."""

    name: str
    builder: Callable | str
    lr: float
    needs_group: bool = False
    group_lr: dict = field(default_factory=dict)
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, builder: Callable | str, lr: float, *, needs_group: bool = False,
             group_lr: dict | None = None, description: str = "") -> ModelSpec:
    """Add (or replace) a model under ``name``; returns its :class:`ModelSpec`."""
    spec = ModelSpec(name, builder, float(lr), needs_group, dict(group_lr or {}), description)
    _REGISTRY[name.lower()] = spec
    return spec


def available_models() -> list[str]:
    return sorted(s.name for s in _REGISTRY.values())


def get_spec(name: str) -> ModelSpec:
    spec = _REGISTRY.get(str(name).lower())
    if spec is None:
        raise RegistryError(f"unknown model {name!r}; available models: {', '.join(available_models())}")
    return spec


def _available_groups() -> list[str]:
    from lieconv_runtime import available_groups

    return available_groups()


def check_group(group: str, dim: int | None = None) -> str:
    """Validate a group name (and that it acts on ``R^dim``); returns the name."""
    groups = _available_groups()
    if group not in groups:
        raise RegistryError(f"unknown group {group!r}; available groups: {', '.join(groups)}")
    if dim is not None:
        space_dim = getattr(load_group_checked(group), "space_dim", None)
        if space_dim and space_dim != dim:
            fits = [g for g in groups if getattr(load_group_checked(g), "space_dim", None) == dim]
            raise RegistryError(f"group {group!r} acts on R^{space_dim} but the particles live in R^{dim}; "
                                f"groups for R^{dim}: {', '.join(fits) or 'none'}")
    return group


def load_group_checked(group: str, **options):
    """:func:`lieconv_runtime.load_group` with a one-line :class:`RegistryError` for unknown names."""
    from lieconv_runtime import load_group

    try:
        return load_group(group, **options)
    except KeyError:
        raise RegistryError(f"unknown group {group!r}; available groups: {', '.join(_available_groups())}") from None


def check_model(name: str, dim: int = 2, group: str | None = None) -> ModelSpec:
    """Validate a model name and its group (without building anything); returns its spec."""
    spec = get_spec(name)
    if group is not None:
        check_group(group, dim if spec.needs_group else None)
    if spec.needs_group:
        if group is None:
            raise RegistryError(f"model {spec.name} needs a group (--group); "
                                f"available groups: {', '.join(_available_groups())}")
    elif group is not None:
        raise RegistryError(f"model {spec.name} takes no group (got {group!r}); "
                            f"group-based models: {', '.join(group_models()) or 'none registered yet'}")
    return spec


def describe_models() -> str:
    """One line per registered model: name, description, paper lr, whether it needs a group."""
    lines = []
    for name in available_models():
        s = get_spec(name)
        lr = f"lr {s.lr:g}" + "".join(f", {g} {v:g}" for g, v in sorted(s.group_lr.items()))
        lines.append(f"{s.name}{' (needs --group)' if s.needs_group else ''}: {s.description} [{lr}]")
    return "; ".join(lines)


def build_model(name: str, n_particles: int = 6, dim: int = 2, group: str | None = None, **kw):
    """Build model ``name`` for ``n_particles`` particles in ``R^dim``.

    ``group``: required (a generated group's name) for group-based models,
    must be ``None`` for the others. ``kw`` go to the builder (e.g. ``width``).
    """
    spec = check_model(name, dim, group)
    builder = spec.builder
    if isinstance(builder, str):
        import importlib

        module, _, attr = builder.partition(":")
        builder = getattr(importlib.import_module(module), attr)
    try:  # group-free builders may be plain classes such as FC(n_particles, dim, **kw)
        return builder(n_particles, dim, group=group, **kw) if group is not None else builder(n_particles, dim, **kw)
    except TypeError as e:  # e.g. an option this builder does not take
        raise RegistryError(f"cannot build {spec.name} with options {kw}: {e}") from None


def group_models() -> list[str]:
    return sorted(s.name for s in _REGISTRY.values() if s.needs_group)


def paper_lr(name: str, group: str | None = None) -> float:
    """Learning rate of the paper for ``name`` (and ``group``)."""
    spec = get_spec(name)
    return float(spec.group_lr.get(group, spec.lr)) if group is not None else spec.lr


register("FC", FC, PAPER_LR["FC"], description="MLP neural ODE on [q - mean q, p, m, k]")
register("HFC", HFC, PAPER_LR["HFC"], description="kinetic energy + MLP potential")
register("OGN", OGN, PAPER_LR["OGN"], description="ODE graph network")
register("HOGN", HOGN, PAPER_LR["HOGN"], description="Hamiltonian ODE graph network")
register("HLieResNet", "lieconv_runtime.models.hamiltonian:build_hlieresnet", lr=1e-3, group_lr={"SO2": 3e-4}, needs_group=True,
         description="kinetic energy + LieResNet potential over a generated group (paper §6)")
