"""Pair distances and pair embeddings of a lifted cloud, computed only where needed.

`PairGeometry(group, cloud)` answers three questions about a lifted cloud (a `Lifted`, N elements):

* `ball_pairs(qidx, r)`: the pairs (b, i, j) with d(u_{qidx[b,i]}, u_j) < r, exactly as
  `group.distance` decides, for the queries qidx (bs, c) of one chunk;
* `rows(qidx)`: distances (bs, c, N), +inf where either member is padded (kNN, FPS, radius init);
* `embed(i_idx, j_idx)`: a_ij = [log(u_i^-1 u_j), q_i, q_j] for broadcastable index tensors,
  e.g. (bs, m, 1) with (bs, m, nbhd): only the chosen pairs.

Callers loop over chunks of queries, so no (bs, N, N, d) tensor (and no (bs, N, N) one) exists.
Strategies (chosen by asking the group what it is, never its name):

* "flat", abelian without rotations (translations, trivial groups): log(u_i^-1 u_j) = a_j - a_i
  exactly, and d is the Euclidean distance of z = [a L, sqrt(alpha) q] (L L^T = Gram of the
  generators).  One batched GEMM gives |z_i - z_j|^2 up to a proven rounding margin; only pairs
  within the margin of r^2 are re-checked from differences.
* "orthogonal", linear parts orthogonal (antisymmetric generator blocks: SE2, SE3, SO2, SO3).
  With R the linear part of u_i^-1 u_j, u its translation, s = |R - I|_F / (2 sqrt 2) and
  rho = asin(s)/s:
      |R - I|_F^2 + |u|^2 + alpha |dq|^2  <=  d^2  <=  rho^2 (|R - I|_F^2 + |u|^2) + alpha |dq|^2,
  because |B|_F >= |e^B - I|_F for antisymmetric B, |V^-1 u| >= |u| (V = (e^B - I)/B has norm
  <= 1) and theta / (2 sin(theta/2)) <= rho for every rotation angle.  |R - I|_F = |R_j - R_i|_F
  and |u| = |t_j - t_i|, so one GEMM on [vec R, t, sqrt(alpha) q] bounds all pairs; pairs
  between the bounds get the exact distance (closed form `orthogonal_sq_norm_parts` for one
  rotation plane, m <= 3; the group's log beyond), densely for the whole chunk when most pairs
  are candidates (one GEMM of per-query features gives its parts, see `dense_exact_sq`).
  Embeddings use the closed-form log `orthogonal_log_parts` unless gradients must flow.
  With the "sum" distance (`sum_form`: d = |rotation part| + |rest|) the same GEMM bound finds the
  candidates (the sum is at least the quadrature), d^2 <= 2 (quadrature upper bound) decides the
  sure ones, and the closed form of each part decides the rest.
  Decisions are exact: margins (`_BAND_TOL`) only widen the band.
* "general": `group.distance` / `group.pair_embedding` (abelian groups with rotations use
  a_j - a_i re-reduced near angle pi; non-abelian groups the group's closed-form log).
"""

from __future__ import annotations

import copy
import math

import torch

from lieconv_runtime.lift import Lifted, sum_sq
from lieconv_runtime.orthogonal import (linear_block, log_from_parts, metric_weights, orthogonal_linear_parts,
                                        orthogonal_log_parts, orthogonal_sq_norm, orthogonal_sq_norm_parts,
                                        rotation_generators)
from lieconv_runtime.perf import chunk_scale

__all__ = ["PairGeometry"]

PAIRS_PER_CHUNK = {"flat": 1 << 21, "orthogonal": 1 << 19, "general": 1 << 15}
_BAND_TOL = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def band_tol(dtype: torch.dtype) -> float:
    """Relative width of the band around r^2 where ball decisions re-check the exact distance."""
    return _BAND_TOL.get(dtype, 1e-4)




def _gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (bs, N, *F), idx (bs, c) -> (bs, c, *F)."""
    return t[torch.arange(t.shape[0], device=t.device)[:, None], idx]


_RHO2_C3 = (math.pi**2 / 4 - 1 - 1 / 3 - 64 / 360) / 512 * (1 + 1e-6)


def _rho2_bound(x: torch.Tensor) -> torch.Tensor:
    """Upper bound on rho^2 = (asin(s)/s)^2, s^2 = x/8, for x = |R - I|_F^2 in [0, 8]: its Taylor
    polynomial 1 + x/24 + x^2/360 plus the cubic term that makes it exact at x = 8 (all
    coefficients of the series are positive, so this lies above it on [0, 8])."""
    return 1 + x * (1 / 24 + x * (1 / 360 + x * _RHO2_C3))


def _sqdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_i - y_j|^2 for x (bs, c, k), y (bs, N, k) from differences (no cancellation): (bs, c, N)."""
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist").square()


class PairGeometry:
    """Distances and embeddings of a lifted cloud `cloud` (a `Lifted`) under `group`."""

    def __init__(self, group, cloud: Lifted, form: str | None = None):
        """form: the distance form ("quadrature" or "sum"; None: the group's `distance_form`)."""
        self.group, self.cloud = group, cloud
        self.form = group.check_distance_form(form)
        self.bs, self.n = cloud.mask.shape
        self.kind, weights, m = PairGeometry.strategy(group)
        if self.kind == "orthogonal":
            self.c_rot, self.c_trans = weights  # d^2 = c_rot |B|_F^2 + c_trans |V^-1 u|^2 + alpha |dq|^2
            self.m = m
        self._features_built = self.kind == "general"  # the GEMM features below are built on first use

    @property
    def embed_dim(self) -> int:
        """D of the pair embeddings [log(u_i^-1 u_j), q_i, q_j]: lie_dim + 2 q_dim."""
        return self.group.lie_dim + 2 * self.group.q_dim

    def with_form(self, form: str | None) -> PairGeometry:
        """This geometry with the distance form `form` (None: the group's), sharing its built features."""
        form = self.group.check_distance_form(form)
        if form == self.form:
            return self
        if not self._features_built:
            self._build_features()
        other = copy.copy(self)
        other.form = form
        return other

    @property
    def sum_form(self) -> bool:
        """Distance "sum" with a rotation part: d = sqrt(c_rot |B|_F^2) + sqrt(c_trans |V^-1 u|^2 +
        alpha |dq|^2) (flat groups have no rotation part, so their sum is the quadrature)."""
        return self.form == "sum" and self.kind == "orthogonal"

    @staticmethod
    def strategy(group) -> tuple:
        """(kind, (c_rot, c_trans) or None, linear block size) of `group`, worked out once per
        group object and kept on it (LieConv asks at construction, so a compiled forward pass
        only reads it)."""
        hit = group.__dict__.get("_pair_geometry_strategy")
        if hit is not None:
            return hit
        rotation = (group.LIFT or {}).get("has_rotation", True)
        weights = orthogonal_linear_parts(group) and metric_weights(group)
        if group.abelian and not rotation:
            kind = "flat"
        elif weights:
            kind = "orthogonal"
        else:
            kind = "general"
        hit = (kind, weights or None, linear_block(group) if kind == "orthogonal" else 0)
        group.__dict__["_pair_geometry_strategy"] = hit
        return hit

    _FEATURES = frozenset({"f", "f2", "fq", "fk", "gemm_margin", "rot_margin", "n_rot", "R", "t", "qs"})

    def __getattr__(self, name: str):
        """The GEMM features (`_build_features`) on first use: a layer whose pairs need no distances
        (every element a neighbour) never builds them."""
        if name in PairGeometry._FEATURES and not self.__dict__.get("_features_built", True):
            self._build_features()
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @torch.no_grad()
    def _build_features(self) -> None:
        """f = [z] (flat) or [vec R, t, sqrt(alpha) q] (orthogonal), centred per cloud, with |f|^2,
        the GEMM operands fq, fk and the rounding margins."""
        self._features_built = True
        group, cloud = self.group, self.cloud
        mask, g = cloud.mask, cloud.g.detach()
        qs = [math.sqrt(group.alpha) * cloud.q.detach()] if cloud.q.shape[-1] else []
        if self.kind == "flat":  # z: |z_i - z_j| is the distance
            a = cloud.a.detach()
            L = torch.linalg.cholesky(group.metric(a)) if group.lie_dim else a.new_zeros(0, 0)
            parts, self.n_rot = [a @ L] + qs, 0
        else:  # [sqrt(c_rot) vec R, sqrt(c_trans) t, sqrt(alpha) q]: |f_i - f_j|^2 is the lower bound
            m = self.m
            self.R = g[..., :m, :m].reshape(self.bs, self.n, m * m)
            self.t = g[..., :m, m].contiguous() if group.action == "affine" else None  # gathers from a strided view are ~30x slower
            self.qs = qs[0] if qs else None
            sr, st = math.sqrt(self.c_rot), math.sqrt(self.c_trans)
            parts = [self.R if sr == 1 else sr * self.R] + ([] if self.t is None else [self.t if st == 1 else st * self.t])
            parts, self.n_rot = parts + qs, m * m
        f = torch.cat(parts, -1)
        w = mask[..., None].to(f.dtype)
        f = f - (f * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp_min(1)  # centre: less cancellation
        self.f = torch.where(mask[..., None], f, torch.zeros_like(f))
        f2 = self.f.square().sum(-1)
        eps = torch.finfo(f.dtype).eps
        # |f_i|^2 + |f_j|^2 - 2 f_i.f_j by GEMM errs by at most ~ (F + 2) eps (|f_i|^2 + |f_j|^2)
        self.gemm_margin = 32 * (f.shape[-1] + 2) * eps * 2 * f2.amax(1).clamp_min(1.0)  # (bs,)
        self.f2 = torch.where(mask, f2, torch.full((), math.inf, dtype=f.dtype, device=f.device))
        self.rot_margin = 32 * (self.n_rot + 2) * eps * 4 * (self.m if self.kind == "orthogonal" else 0)
        one = torch.ones_like(f2)[..., None]
        self.fq = torch.cat([self.f, self.f2[..., None], one], -1)  # [f, |f|^2, 1] . [-2 f, 1, |f|^2]
        self.fk = torch.cat([-2 * self.f, one, self.f2[..., None]], -1).transpose(1, 2).contiguous()

    def chunk(self, n_queries: int) -> int:
        """Queries per chunk so that a chunk holds about PAIRS_PER_CHUNK[kind] pairs (times
        perf.chunk_scale on an accelerator)."""
        pairs = PAIRS_PER_CHUNK[self.kind] * chunk_scale(self.cloud.mask.device)
        return max(1, min(n_queries, pairs // max(1, self.bs * self.n)))

    # --- distances ------------------------------------------------------------------------------
    @torch.no_grad()
    def rows(self, qidx: torch.Tensor) -> torch.Tensor:
        """Distances from the elements qidx (bs, c) to all N elements: (bs, c, N), +inf if padded."""
        mask = self.cloud.mask
        if self.kind == "general" or (self.kind == "orthogonal" and self.m > 3):
            j = torch.arange(self.n, device=mask.device).expand(self.bs, 1, self.n)
            return self.group.distance(self.cloud, qidx[:, :, None], j, form=self.form)
        c = qidx.shape[1]
        if self.kind == "flat":
            d = _sqdist(_gather_rows(self.f, qidx), self.f) if self.f.shape[-1] else self.f.new_zeros(self.bs, c, self.n)
        else:
            base = self.n * torch.arange(self.bs, device=mask.device)[:, None, None]
            ei = (base + qidx[:, :, None]).expand(self.bs, c, self.n).reshape(-1)
            ej = (base + torch.arange(self.n, device=mask.device)).expand(self.bs, c, self.n).reshape(-1)
            d = self.exact_sq(ei, ej).reshape(self.bs, c, self.n)
        valid = _gather_rows(mask, qidx)[:, :, None] & mask[:, None, :]
        return torch.where(valid, d.clamp_min(0).sqrt(), torch.full((), math.inf, dtype=d.dtype, device=d.device))

    def fps_row(self, c: torch.Tensor) -> torch.Tensor:
        """A monotone function of the distances from element c (bs,) to all elements: (bs, N), any
        value >= 0 (or +inf) where padded.  Flat groups: squared distances, two ops."""
        if self.kind == "flat":
            fc = self.f.gather(1, c[:, None, None].expand(-1, 1, self.f.shape[-1]))
            return (self.f - fc).square_().sum(-1)
        return self.rows(c[:, None])[:, 0]

    @torch.no_grad()
    def ball_pairs(self, qidx: torch.Tensor, radius: float):
        """Pairs (b, i, j) with d(u_{qidx[b, i]}, u_j) < radius, both valid; lexicographic order."""
        lin = self.ball_pairs_flat(qidx, radius)
        c, n = qidx.shape[1], self.n
        b, rest = lin // (c * n), lin % (c * n)
        return b, rest // n, rest % n

    @torch.no_grad()
    def ball_pairs_flat(self, qidx: torch.Tensor, radius: float) -> torch.Tensor:
        """The pairs of `ball_pairs` as ascending flat indices (b c + i) N + j into (bs, c, N), long.

        flat/orthogonal: candidates from one batched GEMM of the lower bound |f_i - f_j|^2 (with
        its rounding margin), then exact checks on the candidates only (see the module docstring).
        """
        if self.kind == "general" or math.isinf(radius):
            return (self.rows(qidx) < radius).view(-1).nonzero()[:, 0]
        r2 = radius * radius
        tol = band_tol(self.f.dtype)
        hi = (r2 + tol) / (1 - tol)  # beyond: outside for sure
        c, n = qidx.shape[1], self.n
        lb2 = _gather_rows(self.fq, qidx) @ self.fk  # |f_i|^2 + |f_j|^2 - 2 f_i.f_j: lower bound (flat: d^2) +- margin
        if self.kind == "flat":  # lb2 is d^2 up to the margin: re-check only pairs within it of r^2
            mg = float(self.gemm_margin.max()) if self.bs else 0.0  # the largest margin: only widens the re-check
            lin = (lb2 < r2 + mg).view(-1).nonzero()[:, 0]
            unsure = (lb2.view(-1).index_select(0, lin) >= r2 - mg).nonzero()[:, 0]
            if unsure.numel() == 0:
                return lin
            u = lin.index_select(0, unsure)
            keep = torch.ones_like(lin, dtype=torch.bool)
            keep[unsure] = self.exact_sq(*self._flat_elements(u, qidx)) < r2
            return lin.index_select(0, keep.nonzero()[:, 0])
        # orthogonal: candidates below the lower bound's cut; inside for sure below the upper bound's
        margin = self.gemm_margin[:, None, None]
        cand = lb2 < hi + margin
        if self.m <= 3 and float(cand.sum()) > 0.3 * cand.numel():  # most pairs are close: exact, densely
            return (self.dense_exact_sq(qidx) < r2).logical_and_(cand).view(-1).nonzero()[:, 0]
        lin = cand.view(-1).nonzero()[:, 0]
        lb = lb2.view(-1).index_select(0, lin)
        mg = self.gemm_margin.index_select(0, lin // (c * n))
        rot2 = torch.baddbmm(lb2.new_full((), 2.0 * self.m), _gather_rows(self.R, qidx), self.R.transpose(1, 2),
                             alpha=-2).view(-1).index_select(0, lin)  # |R_j - R_i|_F^2 +- rot_margin
        up2 = (lb + mg) * _rho2_bound((rot2 + self.rot_margin).clamp(0.0, 8.0))  # >= the quadrature d^2
        keep = (2 * up2 if self.sum_form else up2) < r2 * (1 - tol) - tol  # sum: d^2 <= 2 (quadrature d^2)
        unsure = (~keep).nonzero()[:, 0]
        if unsure.numel():
            keep[unsure] = self.exact_sq(*self._flat_elements(lin.index_select(0, unsure), qidx)) < r2
        return lin.index_select(0, keep.nonzero()[:, 0])

    def native_orthogonal(self):
        """(R, t, qs, scale) for the native orthogonal selection, which computes |B|_F^2 + |V^-1 u|^2 +
        |qs_i - qs_j|^2 with unit weights: the metric's weights go into t and qs, and the squared
        radius is divided by ``scale`` = c_rot."""
        f = 1 / math.sqrt(self.c_rot)
        t = self.t if self.t is None or self.c_trans == self.c_rot else math.sqrt(self.c_trans) * f * self.t
        qs = self.qs if self.qs is None or self.c_rot == 1 else f * self.qs
        return self.R, t, qs, self.c_rot

    def _flat_elements(self, lin: torch.Tensor, qidx: torch.Tensor):
        """Flat indices into (bs, c, N) -> the pairs' element indices (ei, ej) into (bs N)."""
        c, n = qidx.shape[1], self.n
        row, j = lin // n, lin % n
        b = row // c
        return b * n + qidx.reshape(-1).index_select(0, row), b * n + j

    def _relative_pairs(self, ei: torch.Tensor, ej: torch.Tensor):
        """R_i^T R_j (P, m, m) and R_i^T (t_j - t_i) (P, m) (None if linear) for the pairs of flat
        element indices ei, ej (P,): one tiny product per pair (see `_relative_per_query`)."""
        m = self.m
        R = self.R.reshape(-1, m, m)
        Ri = R.index_select(0, ei)
        u = None
        if self.t is not None:
            t = self.t.reshape(-1, m)
            u = (Ri.transpose(1, 2) @ (t.index_select(0, ej) - t.index_select(0, ei))[..., None])[..., 0]
        return Ri.transpose(1, 2) @ R.index_select(0, ej), u

    def _relative_per_query(self, qi: torch.Tensor, qj: torch.Tensor):
        """R_i^T R_j (P, m, m) (a strided view) and R_i^T (t_j - t_i) (P, m) (None if linear) for
        the flat element indices qi (Q,) and qj (Q, k), P = Q k: two batched GEMMs with one
        (m, m) factor per query instead of one tiny product per pair."""
        m = self.m
        Q, k = qj.shape
        RT = self.R.reshape(-1, m, m).transpose(1, 2).contiguous()
        Ri = self.R.reshape(-1, m, m).index_select(0, qi)  # (Q, m, m)
        # stacked R_j^T (k m, m) @ R_i = stacked (R_i^T R_j)^T
        RijT = torch.bmm(RT.index_select(0, qj.reshape(-1)).view(Q, k * m, m), Ri).view(Q * k, m, m)
        u = None
        if self.t is not None:
            t = self.t.reshape(-1, m)
            dt = t.index_select(0, qj.reshape(-1)).view(Q, k, m) - t.index_select(0, qi)[:, None, :]
            u = torch.bmm(dt, Ri).view(Q * k, m)  # rows (t_j - t_i)^T R_i
        return RijT.transpose(1, 2), u

    def _plane_coefficients(self) -> torch.Tensor:
        """(L, m, m): C_0 = I (the trace), then the generators whose coefficients are the entries
        of vee(R - R^T) (m = 3: 3, m = 2: 1, m = 1: none)."""
        I = torch.eye(self.m, dtype=self.R.dtype, device=self.R.device)
        return torch.cat([I[None], rotation_generators(self.m, self.R)])

    def dense_exact_sq(self, qidx: torch.Tensor) -> torch.Tensor:
        """Exact d^2 from the queries qidx (bs, c) to all elements, (bs, c, N) (orthogonal, m <= 3).

        The parts of g_i^-1 g_j that `orthogonal_sq_norm_parts` reads are bilinear in (R_i, R_j)
        and linear in t_j: tr(C R_i^T R_j) = vec(R_i C^T) . vec(R_j) for the trace and the entries
        of vee(R - R^T), and R_i^T (t_j - t_i) (t centred).  One batched GEMM of per-query features
        against [vec R_j, t_j] gives each part as a contiguous (bs, c, N) plane."""
        bs, c, n, m = self.bs, qidx.shape[1], self.n, self.m
        R = self.R.reshape(bs, n, m, m)
        Ri = _gather_rows(R, qidx)  # (bs, c, m, m)
        C = self._plane_coefficients()  # (L, m, m): tr(C_l^T R_i^T R_j) = sum_pq C_l[p, q] (R_i^T R_j)[p, q]
        rows = [torch.einsum("bcap,lpq->bclaq", Ri, C).reshape(bs, c, -1, m * m)]
        cols = [self.R]
        t = self.f[..., self.n_rot:self.n_rot + m] if self.t is not None else None  # centred translations
        if t is not None:
            rows = [torch.cat([rows[0], Ri.new_zeros(bs, c, C.shape[0], m)], -1),
                    torch.cat([Ri.new_zeros(bs, c, m, m * m), Ri.transpose(-1, -2)], -1)]
            cols.append(t)
        feats = torch.cat(rows, 2).transpose(1, 2)  # (bs, L [+ m], c, m^2 [+ m]): planes come out contiguous
        planes = (feats.reshape(bs, -1, feats.shape[-1]) @ torch.cat(cols, -1).transpose(1, 2).contiguous()).view(
            bs, -1, c, n)
        cos = (planes[:, 0] - (m - 2)) / 2
        w = list(planes[:, 1:C.shape[0]].unbind(1))
        u = None
        if t is not None:
            ti = (Ri.transpose(-1, -2) @ _gather_rows(t, qidx)[..., None])[..., 0]  # (bs, c, m): R_i^T t_i
            u = [planes[:, C.shape[0] + p] - ti[:, :, p, None] for p in range(m)]

        def far_R(far):
            b, i, j = far
            return R[b, qidx[b, i]].transpose(-1, -2) @ R[b, j]

        dq2 = _sqdist(_gather_rows(self.qs, qidx), self.qs) if self.qs is not None else 0
        if self.sum_form:  # u from the features: scaled by sqrt(c_trans)
            return sum_sq(orthogonal_sq_norm_parts(cos, w, None, far_R, self.c_rot),
                           orthogonal_sq_norm_parts(cos, w, u, far_R, 0.0) + dq2)
        return orthogonal_sq_norm_parts(cos, w, u, far_R, self.c_rot) + dq2

    def exact_sq(self, ei: torch.Tensor, ej: torch.Tensor) -> torch.Tensor:
        """Exact d^2 for the pairs of flat element indices (b N + i, b N + j), each (P,): the distance
        of z for flat groups; for orthogonal ones the closed form when the linear part has one
        rotation plane (m <= 3), else the group's log."""
        if self.kind == "flat":
            F = self.f.reshape(self.bs * self.n, -1)
            return (F.index_select(0, ei) - F.index_select(0, ej)).square().sum(-1)
        cl, m, bn = self.cloud, self.m, self.bs * self.n
        dq2 = 0
        if self.qs is not None:
            qs = self.qs.reshape(bn, -1)
            dq2 = (qs.index_select(0, ei) - qs.index_select(0, ej)).square().sum(-1)
        if m > 3:
            r = cl.g.shape[-1]
            emb = self.group.log(cl.g_inv.reshape(bn, r, r).index_select(0, ei) @ cl.g.reshape(bn, r, r).index_select(0, ej))
            return self.group.pair_sq_distance(emb, dq2, self.form)
        Rij, u = self._relative_pairs(ei, ej)
        u = u if u is None or self.c_trans == 1 else math.sqrt(self.c_trans) * u
        if self.sum_form:
            return sum_sq(orthogonal_sq_norm(Rij, None, self.c_rot), orthogonal_sq_norm(Rij, u, 0.0) + dq2)
        return orthogonal_sq_norm(Rij, u, self.c_rot) + dq2

    # --- embeddings -----------------------------------------------------------------------------
    def _closed_form_log(self) -> bool:
        """Whether embeddings use the closed-form log (`orthogonal_log_parts`): orthogonal linear
        parts with one rotation plane, and no gradient to flow to the group elements."""
        return (self.kind == "orthogonal" and self.m <= 3
                and not (torch.is_grad_enabled() and self.cloud.g.requires_grad))

    def embed(self, i_idx: torch.Tensor, j_idx: torch.Tensor) -> torch.Tensor:
        """[log(u_i^-1 u_j), q_i, q_j] for the requested pairs: (bs, *S, lie_dim + 2 q_dim), 0 if padded.

        Orthogonal groups with one rotation plane use the closed-form log (`orthogonal_log_parts`,
        the same values as the group's log to roundoff) unless gradients must flow to the group
        elements; for (bs, m, 1) queries with (bs, m, k) neighbours, see `embed_queries`.
        """
        cl = self.cloud
        shape = torch.broadcast_shapes(i_idx.shape, j_idx.shape)
        k = shape[-1]
        per_query = i_idx.shape == shape[:-1] + (1,) and len(shape) == 3
        if not self._closed_form_log():
            return self.group.pair_embedding(cl, i_idx, j_idx)
        bs, n = self.bs, self.n
        base = n * torch.arange(bs, device=i_idx.device).reshape((bs,) + (1,) * (len(shape) - 1))
        ei = (base + i_idx).expand(shape).reshape(-1)
        ej = (base + j_idx).expand(shape).reshape(-1)
        if per_query:
            emb = self.embed_queries(ei.view(-1, k)[:, 0], ej.view(-1, k))
            return emb.reshape(shape + emb.shape[-1:])
        Rij, u = self._relative_pairs(ei, ej)
        return self._log_embedding(Rij, u, ei, ej).reshape(shape + (-1,))

    def embed_queries(self, qi: torch.Tensor, qj: torch.Tensor) -> torch.Tensor:
        """Embeddings of queries against their neighbours, by flat element indices b N + i into
        the batch: qi (Q,), qj (Q, k) -> (Q, k, lie_dim + 2 q_dim), 0 where a member is padded.
        Closed-form log: one (m, m) GEMM factor per query; otherwise the group's own
        `pair_embedding`."""
        cl = self.cloud
        Q, k = qj.shape
        if not self._closed_form_log():  # the batch as one cloud: pairs never mix clouds
            bn = self.bs * self.n
            flat = cl._replace(**{f: getattr(cl, f).reshape((1, bn) + getattr(cl, f).shape[2:])
                                  for f in ("coords", "g", "g_inv", "a", "q", "values", "mask")})
            return self.group.pair_embedding(flat, qi.view(1, Q, 1), qj.view(1, Q, k))[0]
        if k > 1:
            Rij, u = self._relative_per_query(qi, qj)
        else:
            Rij, u = self._relative_pairs(qi, qj.reshape(-1))
        ei = qi[:, None].expand(Q, k).reshape(-1)
        return self._log_embedding(Rij, u, ei, qj.reshape(-1)).view(Q, k, -1)

    def _log_embedding(self, Rij: torch.Tensor, u: torch.Tensor | None, ei: torch.Tensor,
                       ej: torch.Tensor) -> torch.Tensor:
        """[log, q_i, q_j] (P, D) from the relative parts of the pairs (ei, ej) (P,), 0 if padded."""
        cl = self.cloud
        omega, v = orthogonal_log_parts(Rij, u)
        a = log_from_parts(self.group, self.m, omega, v)
        valid = cl.mask.reshape(-1).index_select(0, ei) & cl.mask.reshape(-1).index_select(0, ej)
        parts = [a]
        if cl.q.shape[-1]:
            q = cl.q.detach().reshape(self.bs * self.n, -1)
            parts += [q.index_select(0, ei), q.index_select(0, ej)]
        emb = torch.cat(parts, -1) if len(parts) > 1 else a
        return torch.where(valid[:, None], emb, torch.zeros((), dtype=emb.dtype, device=emb.device))
