"""Closed forms for matrix groups whose linear parts are orthogonal with one rotation plane
(m <= 3: SO2, SO3, SE2, SE3, ...): the squared norm of the principal log and the principal log
itself, entrywise on (P,) vectors, accurate to roundoff up to and at rotation angle pi.

Used by the pair geometry (`nn.geometry`: ball decisions and pair embeddings) and by lifting (the
log of the lifted elements), in place of the generated group's general log, which multiplies
small matrices.  Tested against the generated log and against scipy's logm.
"""

from __future__ import annotations

import torch

__all__ = ["linear_block", "metric_weights", "orthogonal_linear_parts", "orthogonal_log", "orthogonal_log_parts", "orthogonal_sq_norm",
           "orthogonal_sq_norm_parts", "rotation_generators", "vee_maps", "log_coordinates", "log_from_parts"]


def linear_block(group) -> int:
    """Size m of the linear part: space_dim for affine groups, rep_dim for linear ones."""
    return group.space_dim if group.action == "affine" else group.rep_dim


def orthogonal_linear_parts(group) -> bool:
    """Whether every generator's linear block is antisymmetric (all linear parts orthogonal)."""
    m = linear_block(group)
    if not group.lie_dim or not m:
        return False
    B = group.generators(torch.empty(0, dtype=torch.float64))[:, :m, :m]
    return bool((B + B.transpose(1, 2)).abs().max() == 0)


def metric_weights(group) -> tuple[float, float] | None:
    """(c_rot, c_trans) with a^T M a = c_rot |B(a)|_F^2 + c_trans |t(a)|^2 for the group's metric M
    (B(a) the linear part and t(a) the translation of hat(a)); None when M is not of that form (it
    weighs rotation directions unequally, or mixes rotations and translations).  The default
    (Frobenius) metric gives (1, 1); the closed forms below then only need the two weights."""
    m = linear_block(group)
    ref = torch.empty(0, dtype=torch.float64)
    G = group.generators(ref)
    d = G.shape[0]
    if not d:
        return None
    B = G[:, :m, :m].reshape(d, -1)
    T = G[:, :m, m] if group.action == "affine" else G.new_zeros(d, 0)
    basis = [B @ B.T, T @ T.T]  # |B(a)|_F^2 = a^T Glin a, |t(a)|^2 = a^T Gt a
    M = group.metric(ref)
    used = [k for k, X in enumerate(basis) if X.numel() and float(X.abs().max()) > 0]
    A = torch.stack([basis[k].reshape(-1) for k in used], 1)  # (d^2, 1 or 2): least squares by hand (no LAPACK)
    AtA, Atb = A.T @ A, A.T @ M.reshape(-1)
    c = torch.linalg.solve(AtA, Atb) if len(used) == 2 else Atb / AtA[0, 0]
    weights = [1.0, 1.0]
    for k, v in zip(used, c.tolist()):
        weights[k] = v
    fit = sum(weights[k] * basis[k] for k in used)
    if min(weights) <= 0 or float((fit - M).abs().max()) > 1e-12 * max(1.0, float(M.abs().max())):
        return None
    return weights[0], weights[1]


_COS_FAR = -0.999  # beyond this rotation angle (sin < 0.045) the axis comes from the symmetric part


def orthogonal_sq_norm(R: torch.Tensor, u: torch.Tensor | None, rot_weight: float = 1.0) -> torch.Tensor:
    """rot_weight |B|_F^2 + |V^-1 u|^2 for log g = [[B, V^-1 u], [0, 0]], g = [[R, u], [0, 1]] (or g = R if
    u is None), R (..., m, m) orthogonal, m <= 3: |hat(log g)|_F^2 at rot_weight 1.  (A translation
    weight is applied by scaling u.)  Reads R entry by entry (any strided view); see
    `orthogonal_sq_norm_parts`."""
    m = R.shape[-1]
    e = lambda i, j: R[..., i, j]  # noqa: E731
    cos = (R.diagonal(dim1=-2, dim2=-1).sum(-1) - (m - 2)) / 2
    w = [e(2, 1) - e(1, 2), e(0, 2) - e(2, 0), e(1, 0) - e(0, 1)] if m == 3 else [e(1, 0) - e(0, 1)] if m == 2 else []
    return orthogonal_sq_norm_parts(cos, w, None if u is None else u.unbind(-1), lambda far: R[far], rot_weight)


def orthogonal_sq_norm_parts(cos: torch.Tensor, w: list, u: list | None, far_R, rot_weight: float = 1.0) -> torch.Tensor:
    """rot_weight |B|_F^2 + |V^-1 u|^2 (|hat(log g)|_F^2 at rot_weight 1) from the parts of
    g = [[R, u], [0, 1]], R orthogonal (m x m, m <= 3), all (...):
    cos = cos theta = (tr R - (m - 2)) / 2, w = vee(R - R^T) as m = 3: 3 tensors (2 sin(theta) n),
    m = 2: [R_10 - R_01], m = 1: [], u: m tensors (None: g = R), far_R(index): R at the few
    entries `index` (a nonzero tuple) beyond cos theta = -0.999.

    One rotation plane with angle theta = atan2(|w| / 2, cos): |B|_F^2 = 2 theta^2, and V^-1 scales
    the plane by rho = (theta/2) / sin(theta/2) and fixes the axis n, so |V^-1 u|^2 = rho^2 |u|^2 +
    (1 - rho^2) (u.n)^2.  (u.n)^2 = (u.w)^2 / |w|^2 while cos theta > -0.999 (sin theta > 0.045:
    relative error < 25 eps), and (u^T R u - cos theta |u|^2) / (1 - cos theta) beyond (0 for m = 2).
    """
    a2 = sum(x * x for x in w) if w else torch.zeros_like(cos)  # |w|^2 = 4 sin^2 theta
    theta = torch.atan2(torch.sqrt(a2) / 2, cos)
    d2 = (2 * rot_weight) * theta * theta
    if u is None:
        return d2
    half = theta / 2
    small = half < 1e-3
    sin_half = torch.sin(half)
    rho = torch.where(small, 1 + half * half / 6, half / torch.where(small, torch.ones_like(sin_half), sin_half))
    uu = sum(x * x for x in u)
    if len(w) == 3:
        uw = u[0] * w[0] + u[1] * w[1] + u[2] * w[2]
        along = uw * uw / a2.clamp_min(torch.finfo(cos.dtype).tiny)
        far = (cos <= _COS_FAR).nonzero(as_tuple=True)
        if far[0].numel():
            Rf, cf = far_R(far), cos[far]
            uf = torch.stack([x[far] for x in u], -1)
            uRu = (uf * (Rf @ uf[..., None])[..., 0]).sum(-1)
            along = along.index_put(far, (uRu - cf * uu[far]) / (1 - cf))
    else:
        along = torch.zeros_like(uu)
    rho2 = rho * rho
    return d2 + rho2 * uu + (1 - rho2) * along


def orthogonal_log_parts(R: torch.Tensor, u: torch.Tensor | None):
    """Principal log of g = [[R, u], [0, 1]] (or of R if u is None) in coordinates, R (P, m, m)
    orthogonal (any strides), m <= 3: (omega, v) with hat(omega) = B for m = 3 (omega (P, 3)),
    B = omega [[0, -1], [1, 0]] for m = 2 (omega (P, 1)), omega (P, 0) for m = 1, and the
    translation v = V^-1 u (P, m) (None if u is None).

    omega = theta / (2 sin theta) vee(R - R^T) while cos theta > -0.999; otherwise theta times the
    unit axis (m = 3: from the symmetric part, sign from R - R^T; m = 2: the sign of R_10 - R_01).
    v = u - B u / 2 + c(theta) B^2 u, c = (1 - (theta/2) cot(theta/2)) / theta^2.  Entry-wise on
    (P,) vectors: no (P, m, m) products.
    """
    m = R.shape[-1]
    e = lambda i, j: R[:, i, j]  # noqa: E731
    if m == 3:
        w = torch.stack([e(2, 1) - e(1, 2), e(0, 2) - e(2, 0), e(1, 0) - e(0, 1)], -1)  # 2 sin(theta) n
        sin = w.norm(dim=-1) / 2
        cos = (e(0, 0) + e(1, 1) + e(2, 2) - 1) / 2
    elif m == 2:
        w = (e(1, 0) - e(0, 1))[:, None]  # 2 sin(theta)
        sin, cos = w[:, 0].abs() / 2, (e(0, 0) + e(1, 1)) / 2
    else:
        return R.new_zeros(R.shape[0], 0), (None if u is None else u)
    theta = torch.atan2(sin, cos)
    near = cos > _COS_FAR
    f = torch.where(sin > 0, theta / (2 * torch.where(sin > 0, sin, torch.ones_like(sin))), torch.full_like(sin, 0.5))
    omega = torch.where(near, f, torch.zeros_like(f))[:, None] * w
    far = (~near).nonzero()[:, 0]
    if far.numel():
        tf, cf, wf = theta[far], cos[far], w.index_select(0, far)
        if m == 2:
            axis = torch.sign(torch.where(wf == 0, torch.ones_like(wf), wf))
        else:
            Rf = R.index_select(0, far)
            S = (Rf + Rf.transpose(-1, -2) - 2 * cf[:, None, None] * torch.eye(3, dtype=R.dtype, device=R.device)) \
                / (2 * (1 - cf))[:, None, None]  # n n^T
            col = S.diagonal(dim1=-2, dim2=-1).argmax(-1)
            axis = S.gather(2, col[:, None, None].expand(-1, 3, 1))[..., 0]
            axis = axis / axis.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(R.dtype).tiny)
            axis = torch.where((axis * wf).sum(-1, keepdim=True) < 0, -axis, axis)
        omega = omega.index_copy(0, far, tf[:, None] * axis)
    if u is None:
        return omega, None
    small = theta < 1e-2
    t = torch.where(small, torch.ones_like(theta), theta)
    c = torch.where(small, 1 / 12 + theta * theta / 720, (1 - (t / 2) / torch.tan(t / 2)) / (t * t))[:, None]
    # B^2 u = omega (omega . u) - theta^2 u (m = 3; the first term is 0 for m = 2)
    if m == 3:
        (o0, o1, o2), (u0, u1, u2) = omega.unbind(-1), u.unbind(-1)
        half_Bu = torch.stack([o1 * u2 - o2 * u1, o2 * u0 - o0 * u2, o0 * u1 - o1 * u0], -1) / 2
        c_ou = c * (o0 * u0 + o1 * u1 + o2 * u2)[:, None]
        return omega, (1 - c * (theta * theta)[:, None]) * u + c_ou * omega - half_Bu
    half_Bu = omega * torch.stack([-u[:, 1], u[:, 0]], -1) / 2
    return omega, (1 - c * (omega * omega)) * u - half_Bu


def rotation_generators(m: int, ref: torch.Tensor) -> torch.Tensor:
    """The basis of so(m) that `orthogonal_log_parts` uses: (3, 3, 3) hat(e_k) for m = 3,
    (1, 2, 2) [[0, -1], [1, 0]] for m = 2, (0, 1, 1) for m = 1."""
    if m == 3:
        G = ref.new_zeros(3, 3, 3)
        for k, (i, j) in enumerate([(2, 1), (0, 2), (1, 0)]):
            G[k, i, j], G[k, j, i] = 1.0, -1.0
        return G
    if m == 2:
        return torch.tensor([[[0.0, -1.0], [1.0, 0.0]]], dtype=ref.dtype, device=ref.device)
    return ref.new_zeros(0, 1, 1)


def orthogonal_log(R: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """`orthogonal_log_parts` as a matrix: (P, r, r) with r = m + 1 (u given) or m."""
    P, m = R.shape[0], R.shape[-1]
    omega, v = orthogonal_log_parts(R, u)
    B = torch.einsum("pk,kij->pij", omega, rotation_generators(m, R))
    if v is None:
        return B
    X = R.new_zeros(P, m + 1, m + 1)
    X[:, :m, :m] = B
    X[:, :m, m] = v
    return X


def vee_maps(group, m: int, affine: bool, ref: torch.Tensor):
    """(vee of the rotation generators (n_omega, lie_dim), vee of the translation units (m, lie_dim))
    of `group`, in ref's dtype and device: log coordinates = omega @ first + v @ second for the
    (omega, v) of `orthogonal_log_parts`."""
    B = rotation_generators(m, ref)
    r = m + 1 if affine else m
    X = ref.new_zeros(B.shape[0] + m, r, r)
    X[:B.shape[0], :m, :m] = B
    if affine:
        X[B.shape[0] + torch.arange(m), torch.arange(m), m] = 1.0
    V = group.vee(X)
    return V[:B.shape[0]], V[B.shape[0]:]


def log_from_parts(group, m: int, omega: torch.Tensor, v: torch.Tensor | None) -> torch.Tensor:
    """The algebra coordinates omega @ v_rot + v @ v_trans (`vee_maps`) of the (omega, v) of
    `orthogonal_log_parts` (v None: a linear group), (P, lie_dim).  When the maps only pick one
    entry per coordinate (SE3, SO3, SE2, SO2, SO2z with their usual generators), those columns of
    [omega, v]: the same values, without two products of inner dimension m."""
    affine = v is not None
    key = ("_log_from_parts_order", m, affine)
    order = group.__dict__.get(key)
    if order is None:  # worked out once per group: the column of [omega, v] behind each coordinate, or ()
        maps = vee_maps(group, m, affine, torch.zeros((), dtype=torch.float64))
        V = torch.cat(maps) if affine else maps[0]
        placing = bool(((V == 0) | (V == 1)).all()) and bool(((V == 1).sum(0) == 1).all())  # one 1 per column
        order = tuple(int(i) for i in V.argmax(0)) if placing else ()
        group.__dict__[key] = order
    if order:
        parts = torch.cat([omega, v], -1) if affine else omega
        return parts if order == tuple(range(len(order))) else parts[:, list(order)]
    v_rot, v_trans = vee_maps(group, m, affine, omega)
    return omega @ v_rot + (0 if v is None else v @ v_trans)


def log_coordinates(group, g: torch.Tensor) -> torch.Tensor:
    """Principal log of elements g (..., r, r) of a group with orthogonal linear parts and m <= 3,
    in the group's algebra coordinates (..., lie_dim): the same values as group.log(g) to
    roundoff, without small matrix products.  (Differentiable, but with branches: use group.log
    where gradients must flow.)"""
    m = linear_block(group)
    affine = group.action == "affine"
    lead = g.shape[:-2]
    R = g[..., :m, :m].reshape(-1, m, m)
    u = g[..., :m, m].reshape(-1, m) if affine else None
    omega, v = orthogonal_log_parts(R, u)
    return log_from_parts(group, m, omega, v).reshape(lead + (group.lie_dim,))
