"""Lifting point clouds to group elements, pair embeddings, distances, Haar sampling.

Generic over every generated group: everything group-specific (orbit map q(x), origin o_q,
section u_x, stabilizer basis, Haar density, windows) comes from the module's ``LIFT`` data
derived by ``groupgen.lift``.  Nothing here knows any group by name.

Shapes: coords (bs, n, d), values (bs, n, c), mask (bs, n) bool; a lifted cloud has N = n * K
elements (point-major: element i * K + k is the k-th stabilizer sample of point i).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from lieconv_runtime import orthogonal

__all__ = ["Lifted", "LiftMixin", "all_valid", "haar_factor", "safe_atan2", "safe_log", "safe_sqrt"]


# --- NaN-safe elementary functions used by the emitted orbit / section code ----------------------


def safe_sqrt(z: torch.Tensor) -> torch.Tensor:
    """sqrt(max(z, tiny)): finite value and gradient at 0 (0 * 1/sqrt(tiny) = 0 for x / |x| at x = 0)."""
    return torch.sqrt(torch.clamp(z, min=torch.finfo(z.dtype).tiny))


def safe_log(z: torch.Tensor) -> torch.Tensor:
    """log(max(z, tiny)): finite at 0 (log(tiny) ~ -87 in float32, -708 in float64)."""
    return torch.log(torch.clamp(z, min=torch.finfo(z.dtype).tiny))


def safe_atan2(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """atan2 with atan2(0, 0) = 0 and a zero (not NaN, not huge) gradient there.

    "Zero" includes |.| <= 2 sqrt(tiny), the value safe_sqrt gives at 0, so that e.g.
    atan2(safe_sqrt(x0^2 + x1^2), x2) at x = 0 has gradient 0 instead of 1/sqrt(tiny).
    """
    y, x = torch.broadcast_tensors(y, x)
    small = 2 * torch.finfo(y.dtype).tiny ** 0.5
    zero = (y.abs() <= small) & (x.abs() <= small)
    return torch.atan2(torch.where(zero, torch.zeros_like(y), y), torch.where(zero, torch.ones_like(x), x))


_F_SERIES = tuple(2.0 / math.factorial(2 * j + 2) for j in range(12))  # F(d) = sum 2 d^j / (2j+2)!


def haar_factor(d: torch.Tensor) -> torch.Tensor:
    """F(d) = 2 (cosh(sqrt d) - 1) / d, entire in d: sinc^2(t/2) for d = -t^2, (2cosh t - 2)/t^2 for d = t^2.

    For ad with eigenvalues 0 and +-sqrt(delta) (multiplicity k): |det dexp(a)| = |F(delta)|^k.
    """
    series = torch.full_like(d, _F_SERIES[-1])
    for c in reversed(_F_SERIES[:-1]):
        series = series * d + c
    t_neg = torch.sqrt(torch.clamp(-d, min=0.25))
    t_pos = torch.sqrt(torch.clamp(d, min=0.25, max=1400.0))
    neg = 2.0 * (1.0 - torch.cos(t_neg)) / t_neg**2
    pos = 2.0 * (torch.cosh(t_pos) - 1.0) / t_pos**2
    return torch.where(d.abs() < 0.25, series, torch.where(d < 0, neg, pos))


def dexp_det(ad: torch.Tensor) -> torch.Tensor:
    """det((I - exp(-M)) / M) for M = ad(b) (..., h, h): the Jacobian determinant of exp at b.

    (I - e^-M) / M is the upper-right block of exp([[-M, I], [0, 0]]) (Pade, no eigensolver), and
    its determinant comes from an LU factorisation."""
    h = ad.shape[-1]
    top = torch.cat([-ad, torch.eye(h, dtype=ad.dtype, device=ad.device).expand_as(ad)], -1)
    aug = torch.cat([top, torch.zeros_like(top)], -2)
    return torch.linalg.det(torch.linalg.matrix_exp(aug)[..., :h, h:])


class Lifted(NamedTuple):
    """A lifted point cloud, N = n * K elements per batch entry."""

    coords: torch.Tensor  # (bs, N, d): the input point each element was lifted from (0 where padded)
    g: torch.Tensor  # (bs, N, r, r): u = u_x h (identity where padded)
    g_inv: torch.Tensor  # (bs, N, r, r)
    a: torch.Tensor  # (bs, N, lie_dim): log(u), principal (0 where padded)
    q: torch.Tensor  # (bs, N, q_dim): orbit embedding (0 where padded)
    values: torch.Tensor  # (bs, N, c): values repeated K times (0 where padded)
    mask: torch.Tensor  # (bs, N) bool
    nsamples: int  # K
    full: bool = False  # every element valid, known without reading the mask (no device sync; see `all_valid`)


def all_valid(cloud: Lifted) -> bool:
    """Whether every element of `cloud` is valid: from `cloud.full` when set (no look at the mask,
    so no wait for an accelerator and nothing that stops torch.compile), else from the mask."""
    return cloud.full or bool(cloud.mask.all())


def _norm_from_sq(d2: torch.Tensor) -> torch.Tensor:
    """sqrt(d2), 0 where d2 <= 0, with a finite gradient at 0."""
    pos = d2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, d2, torch.ones_like(d2))), torch.zeros_like(d2))


def sum_sq(a2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """(sqrt(a2) + sqrt(b2))^2 (negative parts count as 0): the squared "sum" distance from the
    squared norms of its two parts."""
    return (_norm_from_sq(a2) + _norm_from_sq(b2)).square()


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t (bs, N, *F), idx (bs, *S) long -> (bs, *S, *F), by one index_select on the flattened
    (bs N, *F) (several times faster than advanced indexing on the CPU)."""
    bs, n = t.shape[:2]
    idx = idx.expand((bs,) + idx.shape[1:])  # a batch dimension of 1 broadcasts
    flat = (idx.reshape(bs, -1) + n * torch.arange(bs, device=idx.device)[:, None]).reshape(-1)
    return t.reshape((bs * n,) + t.shape[2:]).index_select(0, flat).reshape(idx.shape + t.shape[2:])


class LiftMixin:
    """Lifting, pair embeddings, distances and Haar sampling for a generated group (needs LIFT)."""

    LIFT = None

    # --- what the group can do -------------------------------------------------------------------
    def _lift_data(self) -> dict:
        data = self.LIFT
        if not data or not data.get("available"):
            reason = (data or {}).get("reason") or (
                f"its module has no lifting data; add a `lift:` block to {self.spec_path} and run `groupgen generate`")
            raise ValueError(f"{self.name} cannot lift points: {reason}")
        return data

    @property
    def can_lift(self) -> bool:
        return bool(self.LIFT and self.LIFT.get("available"))

    @property
    def q_dim(self) -> int:
        """Dimension of the orbit embedding q (0: one orbit)."""
        return int(self._lift_data()["q_dim"])

    @property
    def stabilizer_dim(self) -> int:
        return int(self._lift_data()["stabilizer"]["dim"])

    @property
    def compact(self) -> bool:
        """Whether the whole group is compact (has a Haar probability measure)."""
        return bool(self.LIFT and self.LIFT.get("haar"))

    # --- orbits and sections ---------------------------------------------------------------------
    def orbit(self, x: torch.Tensor) -> torch.Tensor:
        """Orbit embedding q(x): (..., d) -> (..., q_dim), invariant: q(g.x) = q(x)."""
        return self._lift_data()["orbit"](x)

    def origin(self, q: torch.Tensor) -> torch.Tensor:
        """Orbit origin o_q: (..., q_dim) -> (..., d)."""
        return self._lift_data()["origin"](q)

    def section(self, x: torch.Tensor) -> torch.Tensor:
        """u_x: (..., d) -> (..., r, r) with u_x . o_q(x) = x."""
        return self._lift_data()["section"](x)

    def extent(self, a: torch.Tensor) -> torch.Tensor:
        """Largest rotation angle of exp(a): (..., lie_dim) -> (...); log is principal where < pi."""
        return self.spectrum(a)[0]

    # --- Haar sampling ---------------------------------------------------------------------------
    def _density(self, s: dict, b: torch.Tensor) -> torch.Tensor:
        """|det dexp| at stabilizer coordinates b (m, h)."""
        if s["density"] == "pair":
            return haar_factor(s["delta"](b)).abs() ** s["k"]
        return dexp_det(torch.einsum("nj,jkl->nkl", b, torch.tensor(s["ad"], dtype=b.dtype))).abs()

    def _sample_coords(self, s: dict, count: int, generator: torch.Generator | None) -> torch.Tensor:
        """Exact Haar samples in exponential coordinates, (count, lie_dim) float64 on the CPU."""
        h = s["dim"]
        if count == 0 or h == 0:
            return torch.zeros(count, self.lie_dim, dtype=torch.float64)
        basis = torch.tensor(s["basis"], dtype=torch.float64)  # (h, lie_dim)
        box = torch.tensor(s["box"], dtype=torch.float64)
        chunks, have, rate = [], 0, 0.25
        while have < count:
            m = int((count - have) / rate * 1.1) + 64
            b = (2 * torch.rand(m, h, generator=generator, dtype=torch.float64) - 1) * box
            a = b @ basis
            ok = self.extent(a) < math.pi
            for i, w in s["window"]:
                ok &= a[:, i].abs() <= w
            if s["density"] != "uniform":
                u = torch.rand(m, generator=generator, dtype=torch.float64)
                ok &= u * s["density_max"] < self._density(s, b)
            chunks.append(a[ok])
            have += int(ok.sum())
            rate = max(float(ok.double().mean()), 1e-3)
        return torch.cat(chunks)[:count]

    def _sample(self, s: dict, shape, generator, dtype, device, return_log):
        shape = tuple(shape)
        a = self._sample_coords(s, math.prod(shape), generator)
        g = self.exp(a).to(dtype=dtype, device=device)
        a = a.to(dtype=dtype, device=device)
        g = g.reshape(shape + g.shape[-2:])
        return (g, a.reshape(shape + (self.lie_dim,))) if return_log else g

    def sample_stabilizer(self, shape, *, generator: torch.Generator | None = None, dtype=torch.float32,
                          device=None, return_log: bool = False):
        """Haar samples h of the stabilizer H of the orbit origins: (*shape, r, r) (and a = log h).

        Exact for compact H; for non-compact H, Haar measure restricted to the spec's window.
        Sampling runs on the CPU in float64 (seeded by `generator`) and is then cast.
        """
        s = self._lift_data()["stabilizer"]
        return self._sample(s, shape, generator, dtype, device, return_log)

    def sample_haar(self, shape, *, generator: torch.Generator | None = None, dtype=torch.float32,
                    device=None, return_log: bool = False):
        """Exact Haar samples of a compact group: (*shape, r, r) (and a = log g)."""
        data = self.LIFT or {}
        s = data.get("haar")
        if s is None:
            raise ValueError(f"{self.name} has no Haar sampler: {data.get('haar_reason') or 'no lifting data'}")
        return self._sample(s, shape, generator, dtype, device, return_log)

    # --- equivariant frames ----------------------------------------------------------------------
    def frame_support(self) -> str | None:
        """None if `stabilizer_frame` works for this group, else the one-line reason it does not."""
        try:
            self._frame_data()
        except ValueError as e:
            return str(e)
        return None

    def _frame_data(self) -> dict:
        """What `stabilizer_frame` needs, derived once from the stabilizer's generators (linear parts on R^d).

        kind "plane": one generator A with spectrum {0, +-i w}: t(v) = atan2(c2 . v, c1 . v) / w is
        the argmax over t of phi(exp(-t A) v) for a fixed covector phi, so t(exp(s A) v) = t(v) + s
        exactly (c1 = phi P, c2 = -phi A / w, P = -A^2 / w^2 the projector on the rotation plane).
        kind "space": three generators whose linear parts span the antisymmetric 3 x 3 matrices (H
        is all rotations about the origin, as for SE3): the frame is built from two reference vectors.
        """
        cached = getattr(self, "_frame_cache", None)
        if cached is not None:
            return cached
        s = self._lift_data()["stabilizer"]
        where = f"{self.name}: frame or stratified lifting"
        d = self.space_dim
        basis = torch.tensor(s["basis"], dtype=torch.float64).reshape(s["dim"], self.lie_dim)
        A = self.hat(basis) if s["dim"] else torch.zeros(0, self.rep_dim, self.rep_dim, dtype=torch.float64)
        Al = A[:, :d, :d] if self.action == "affine" else A
        if s["compact"] and s["dim"] == 3 and d == 3:
            skew = (Al + Al.transpose(1, 2)).abs().max() == 0
            axes = torch.stack([Al[:, 2, 1], Al[:, 0, 2], Al[:, 1, 0]], -1)  # (3 generators, 3)
            if skew and abs(float(torch.linalg.det(axes))) > 1e-9:
                self._frame_cache = {"kind": "space", "basis": basis, "axes": axes}
                return self._frame_cache
        if s["dim"] != 1 or not s["compact"]:
            kind = "compact" if s["compact"] else "non-compact"
            raise ValueError(f"{where} needs a one-dimensional compact stabilizer or all rotations of R^3, "
                             f"{self.name}'s is {kind} of dimension {s['dim']}; use lift='haar' "
                             "(equivariant in distribution)")
        Al = Al[0]
        # spectrum {0, +-i w} with +-i w simple  <=>  A^3 = -w^2 A (w^2 = -tr(A^2) / 2) and the
        # projector P = -A^2 / w^2 has rank tr(P) = 2: exact tests, no eigensolver
        w2 = -float(torch.trace(Al @ Al)) / 2
        w = math.sqrt(w2) if w2 > 0 else 0.0
        P = -(Al @ Al) / w2 if w > 0 else Al
        if w == 0 or float((Al @ P - Al).abs().max()) > 1e-9 * w or abs(float(torch.trace(P)) - 2) > 1e-9:
            raise ValueError(f"{where} needs the stabilizer to rotate one plane of R^{d} (eigenvalues 0, +-i w); "
                             f"its generator {Al.tolist()} does not (A^3 != -w^2 A or more than one plane)"
                             "; use lift='haar'")
        phi = P[int(P.norm(dim=1).argmax())]
        self._frame_cache = {"kind": "plane", "basis": basis[0], "c1": phi @ P, "c2": -(phi @ Al) / w, "w": w}
        return self._frame_cache

    def _seeded_stabilizer(self, K: int) -> torch.Tensor:
        """K fixed stabilizer elements (K, r, r) float64: R_0 = I, then a seeded Haar draw (cached per K)."""
        cache = self._frame_data().setdefault("seeded", {})
        if K not in cache:
            R = self.sample_stabilizer((K,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            R[0] = self.identity((), R)
            cache[K] = R
        return cache[K]

    def _frame_rotations(self, K: int) -> torch.Tensor:
        """The K fixed rotations R_k (K, 3, 3) float64 of a "space" frame: R_0 = I, then a seeded Haar draw."""
        return self._seeded_stabilizer(K)[..., :3, :3]

    def stratified_offsets(self, K: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """K fixed stabilizer elements R_k (K, r, r), R_0 = I, for stratified Haar lifting h_k = h_0 R_k.

        One-dimensional compact stabilizer (SE2, SO2, ...): R_k = exp(2 pi k / (K w) A), K evenly spaced
        turns, so h_0 R_0, ..., h_0 R_{K-1} cut the stabilizer into K equal arcs; all rotations of R^3
        (SE3, SO3): a finite subgroup for K <= 4 (turns by 2 pi k / K about e3 for K <= 3, the identity and
        the half turns about e1, e2, e3 for K = 4), else R_0 = I and K - 1 seeded Haar draws.  With h_0 Haar,
        each h_0 R_k is Haar too (right invariance).  Computed once per K (float64), then cast.
        ValueError (one line) for other stabilizers.
        """
        fd = self._frame_data()
        cache = fd.setdefault("stratified", {})
        if K not in cache:
            if fd["kind"] == "plane":
                t = torch.arange(K, dtype=torch.float64) * (2 * math.pi / (K * fd["w"]))
                cache[K] = self.exp(t[:, None] * fd["basis"])
            elif K > 4:
                cache[K] = self._seeded_stabilizer(K)
            else:  # a finite subgroup, so every two samples differ by the same large turn
                e = torch.eye(3, dtype=torch.float64)
                rot = ([(e[2], 2 * math.pi * k / K) for k in range(K)] if K <= 3  # C_K about e3
                       else [(e[0], 0.0)] + [(e[i], math.pi) for i in range(3)])  # Klein four-group: all pairs pi apart
                # the linear part of generator j is skew(axes[j]): a turn by angle about n is sum_j c_j generator_j
                coef = torch.stack([torch.linalg.solve(fd["axes"].T, angle * n) for n, angle in rot])  # (K, 3)
                cache[K] = self.exp(coef @ fd["basis"])
        return cache[K].to(dtype=dtype, device=device)

    def stabilizer_frame(self, coords: torch.Tensor, mask: torch.Tensor, nsamples: int = 1) -> torch.Tensor:
        """Equivariant stabilizer elements h (bs, n, K, r, r) for `lift(..., stabilizer=h)`.

        References: the centroid c of the valid points and (for "space") the point
        c' = sum_j w_j x_j / sum_j w_j with w_j = |x_j - c|^2, both equivariant for rigid motions
        (c for any affine action).  With v_i = u_{x_i}^-1 . c - o_{q_i}, moved by the stabilizer only:
        "plane": h_i0 = exp(t(v_i) A) turns the stabilizer's reference direction towards c, and
        h_ik = h_i0 exp(2 pi k / (K w) A); "space": h_i0 has the linear part [e1, e2, e1 x e2] from
        Gram-Schmidt on v_i, v'_i and fixes o_q, and h_ik = h_i0 R_k for K fixed rotations R_k (R_0 = I,
        the others a seeded Haar draw).  Then u_{g x_i} h_ik(g x) = g u_{x_i} h_ik(x) exactly, so a
        LieConv network over these elements is exactly invariant (not only in distribution).
        Undefined (not equivariant) only where the references degenerate: v_i = 0 (a point at the
        centroid), or v_i, v'_i parallel.
        """
        fd = self._frame_data()
        data = self._lift_data()
        mask = mask.bool()
        x = torch.where(mask[..., None], coords, torch.zeros_like(coords))
        w8 = mask[..., None].to(x.dtype)
        c = (x * w8).sum(1, keepdim=True) / w8.sum(1, keepdim=True).clamp_min(1)  # (bs, 1, d)
        u_inv = self.inv(data["section"](x))  # (bs, n, r, r)
        o = data["origin"](data["orbit"](x))
        v = self.act(u_inv, c.expand_as(x)) - o
        K = int(nsamples)
        if fd["kind"] == "plane":
            c1, c2 = fd["c1"].to(x), fd["c2"].to(x)
            t = safe_atan2(v @ c2, v @ c1) / fd["w"]  # (bs, n)
            offsets = torch.arange(K, dtype=x.dtype, device=x.device) * (2 * math.pi / (K * fd["w"]))
            tk = t[..., None] + offsets  # (bs, n, K)
            return self.exp(tk[..., None] * fd["basis"].to(x))
        wj = (x - c).square().sum(-1, keepdim=True) * w8
        c_far = (x * wj).sum(1, keepdim=True) / wj.sum(1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
        v2 = self.act(u_inv, c_far.expand_as(x)) - o
        e1 = v / safe_sqrt(v.square().sum(-1, keepdim=True))
        v2 = v2 - (v2 * e1).sum(-1, keepdim=True) * e1
        e2 = v2 / safe_sqrt(v2.square().sum(-1, keepdim=True))
        F = torch.stack([e1, e2, torch.linalg.cross(e1, e2)], -1)  # (bs, n, 3, 3), columns e1, e2, e3
        L = F[:, :, None] @ self._frame_rotations(K).to(x)  # (bs, n, K, 3, 3)
        h = self.identity(L.shape[:3], x).clone()
        h[..., :3, :3] = L
        if self.action == "affine":  # fix o_q: translation o - L o
            oq = o[:, :, None, :, None]
            h[..., :3, 3] = (oq - L @ oq)[..., 0]
        return h

    def lift_log_closed_form(self) -> bool:
        """Whether `lift_log` may use the entrywise closed form; worked out once per group object
        (LieResNet asks at construction, so a compiled forward pass only reads it)."""
        fast = self.__dict__.get("_fast_log")
        if fast is None:
            m = orthogonal.linear_block(self)
            fast = self._fast_log = (bool((self.LIFT or {}).get("has_rotation", True)) and m in (2, 3)
                                     and orthogonal.orthogonal_linear_parts(self))
        return fast

    def lift_log(self, g: torch.Tensor) -> torch.Tensor:
        """log(g) (..., r, r) -> (..., lie_dim) for lifting: for orthogonal linear parts with one
        rotation plane (SE2, SE3, SO2, SO3, ...) the entrywise closed form of
        `lieconv_runtime.orthogonal` (same values to roundoff, no small matrix products) unless
        gradients must flow to g; otherwise the generated log."""
        if self.lift_log_closed_form() and not (torch.is_grad_enabled() and g.requires_grad):
            return orthogonal.log_coordinates(self, g)
        return self.log(g)

    # --- lifting ---------------------------------------------------------------------------------
    def lift(self, coords: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, nsamples: int | None = None, *,
             stabilizer: torch.Tensor | None = None, generator: torch.Generator | None = None) -> Lifted:
        """Lift (coords (bs, n, d), values (bs, n, c), mask (bs, n)) to K = nsamples elements per point.

        u_ik = u_{x_i} h_ik with h_ik Haar samples of the stabilizer (K = nsamples or
        self.lift_samples; K = 1 when the stabilizer is trivial), or the given `stabilizer`
        (bs, n, K, r, r).  Padded points (mask False) may hold anything (even NaN): they become the
        identity with q = 0 and zero values, and never influence valid points.
        """
        data = self._lift_data()
        bs, n, _ = coords.shape
        r = self.rep_dim
        mask = mask.bool()
        x = torch.where(mask[..., None], coords, torch.zeros_like(coords))
        q = data["orbit"](x)
        u = data["section"](x)  # (bs, n, r, r)
        if stabilizer is not None:
            K = stabilizer.shape[2]
            g = u[:, :, None] @ stabilizer.to(u.dtype)
        elif data["stabilizer"]["dim"] == 0:
            K, g = 1, u[:, :, None]
        else:
            K = int(nsamples or self.lift_samples)
            # one draw per valid point (in order), so padding never changes the samples valid points get
            h = torch.eye(r, dtype=coords.dtype, device=coords.device).expand(bs, n, K, r, r).clone()
            n_valid = int(mask.sum())
            if n_valid:
                h[mask] = self.sample_stabilizer((n_valid, K), generator=generator, dtype=coords.dtype,
                                                 device=coords.device)
            g = u[:, :, None] @ h
        N = n * K
        valid = mask.repeat_interleave(K, dim=1)
        eye = torch.eye(r, dtype=coords.dtype, device=coords.device)
        g = torch.where(valid[..., None, None], g.reshape(bs, N, r, r), eye)
        a = torch.where(valid[..., None], self.lift_log(g), torch.zeros((), dtype=g.dtype, device=g.device))
        zero = torch.zeros((), dtype=coords.dtype, device=coords.device)
        return Lifted(
            coords=x.repeat_interleave(K, dim=1),
            g=g,
            g_inv=self.inv(g),
            a=a,
            q=torch.where(valid[..., None], q.repeat_interleave(K, dim=1), zero),
            values=torch.where(valid[..., None], values.repeat_interleave(K, dim=1), torch.zeros((), dtype=values.dtype,
                                                                                                   device=values.device)),
            mask=valid,
            nsamples=K,
        )

    # --- pairs -----------------------------------------------------------------------------------
    def pair_log(self, lifted: Lifted, i_idx: torch.Tensor, j_idx: torch.Tensor) -> torch.Tensor:
        """log(u_i^-1 u_j) for the requested pairs: i_idx, j_idx (bs, *S) broadcastable -> (bs, *S, lie_dim).

        Abelian groups: a_j - a_i, reduced to log's principal domain only where a rotation angle
        reaches pi.  Otherwise: log(g_inv_i @ g_j).  Pairs with a padded member give 0.
        """
        shape = torch.broadcast_shapes(i_idx.shape, j_idx.shape)
        if self.abelian:
            out = _gather(lifted.a, j_idx) - _gather(lifted.a, i_idx)
            out = out.expand(shape + out.shape[-1:])
            if (self.LIFT or {}).get("has_rotation", True) and out.numel():
                wrap = self.extent(out) >= math.pi
                if bool(wrap.any()):
                    out = out.clone()
                    out[wrap] = self.log(self.exp(out[wrap]))
        else:
            out = self.log(_gather(lifted.g_inv, i_idx) @ _gather(lifted.g, j_idx))
            out = out.expand(shape + out.shape[-1:])
        valid = _gather(lifted.mask, i_idx) & _gather(lifted.mask, j_idx)
        return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))

    def pair_embedding(self, lifted: Lifted, i_idx: torch.Tensor, j_idx: torch.Tensor) -> torch.Tensor:
        """a_ij = [log(u_i^-1 u_j), q_i, q_j] for the requested pairs: (bs, *S, lie_dim + 2 q_dim)."""
        log = self.pair_log(lifted, i_idx, j_idx)
        if lifted.q.shape[-1] == 0:
            return log
        shape = log.shape[:-1]
        valid = (_gather(lifted.mask, i_idx) & _gather(lifted.mask, j_idx))[..., None]
        qi = (_gather(lifted.q, i_idx) * valid).expand(shape + lifted.q.shape[-1:])
        qj = (_gather(lifted.q, j_idx) * valid).expand(shape + lifted.q.shape[-1:])
        return torch.cat([log, qi, qj], dim=-1)

    def pair_sq_distance(self, a: torch.Tensor, dq2: torch.Tensor | float = 0.0, form: str | None = None) -> torch.Tensor:
        """d^2 of pairs from their logs a (..., lie_dim) and alpha |q_i - q_j|^2 (...): a^T M a + dq2,
        or with the form "sum" (sqrt(r^T M r) + sqrt(s^T M s + dq2))^2 for the rotation part r of a
        and the rest s.  form: None for the group's own (`distance_form`)."""
        M = self.metric(a)
        if (form or self.distance_form) != "sum":
            return torch.einsum("...k,kl,...l->...", a, M, a) + dq2
        rot = torch.tensor(self.rotation_generators_mask(), dtype=a.dtype, device=a.device)
        r, s = a * rot, a * (1 - rot)
        return sum_sq(torch.einsum("...k,kl,...l->...", r, M, r), torch.einsum("...k,kl,...l->...", s, M, s) + dq2)

    def distance(self, lifted: Lifted, i_idx: torch.Tensor, j_idx: torch.Tensor,
                 embedding: torch.Tensor | None = None, form: str | None = None) -> torch.Tensor:
        """d_ij = sqrt(a^T M a + alpha ||q_i - q_j||^2), a = log(u_i^-1 u_j): (bs, *S); +inf if a member is padded.

        M is the group's metric (`metric()`: by default the Frobenius Gram, so a^T M a = ||hat(a)||_F^2,
        basis-independent).  With ``distance="sum"`` the rotation part r of a (`rotation_generators_mask`)
        and the rest s add as norms instead: d = sqrt(r^T M r) + sqrt(s^T M s + alpha ||q_i - q_j||^2).
        form: "quadrature" or "sum" in place of the group's own ``distance`` (None: the group's).
        Left-invariant in u; pass the `embedding` from pair_embedding to avoid recomputing the logs.
        """
        if embedding is None:
            embedding = self.pair_embedding(lifted, i_idx, j_idx)
        d, k = self.lie_dim, (embedding.shape[-1] - self.lie_dim) // 2
        a, qi, qj = embedding[..., :d], embedding[..., d:d + k], embedding[..., d + k:]
        dist = _norm_from_sq(self.pair_sq_distance(a, self.alpha * (qi - qj).pow(2).sum(-1), form))
        valid = _gather(lifted.mask, i_idx) & _gather(lifted.mask, j_idx)
        return torch.where(valid.expand(dist.shape), dist, torch.full_like(dist, math.inf))
