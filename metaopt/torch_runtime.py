"""The PyTorch counterparts of the DSL's op implementations, and the runtime of exported optimizers.

``to_torch_source`` copies the functions an exported module needs from here verbatim (``inspect.getsource``),
so this module imports only ``torch`` and ``math``. Each ``_name`` is the torch form that the op registry
(``Op.torch`` in ``metaopt/dsl/ops.py``) names; each mirrors the JAX function of the same op
(``metaopt/dsl/pyhelpers.py``), including its dtype rules.

Values inside an exported step are of three sorts, matching JAX's promotion: hyperparameters, literals and the
constants computed from them are Python floats (weak, as Python scalars are in JAX); ``t`` is a float32 0-d
tensor (metaopt's ``t`` is float32), as is anything computed from it; per-leaf and global values are tensors.
"""
import math

import torch


def _const(fn, *args):
    # A constant expression: all Python floats -> compute in float64 and stay a Python float (weak); otherwise
    # (it reads t) compute with the tensors as they are.
    if any(isinstance(a, torch.Tensor) for a in args):
        return fn(*args)
    return float(fn(*(torch.tensor(float(a), dtype=torch.float64) for a in args)))


def _maximum(a, b):
    # jnp.maximum for any mix of tensors and Python floats (NaN propagates, as in jnp).
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.maximum(a, b)
    if isinstance(a, torch.Tensor):
        return torch.clamp(a, min=b)
    if isinstance(b, torch.Tensor):
        return torch.clamp(b, min=a)
    return torch.maximum(torch.tensor(a), torch.tensor(b))


def _minimum(a, b):
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return torch.minimum(a, b)
    if isinstance(a, torch.Tensor):
        return torch.clamp(a, max=b)
    if isinstance(b, torch.Tensor):
        return torch.clamp(b, max=a)
    return torch.minimum(torch.tensor(a), torch.tensor(b))


def _clip(x, lo, hi):
    # jnp.clip(x, lo, hi) = minimum(maximum(x, lo), hi), also when lo > hi.
    return _minimum(_maximum(x, lo), hi)


def _where(c, a, b):
    # a where c != 0 else b, broadcast to the joint shape (a fresh tensor, never an argument itself).
    # Two Python floats (weak in JAX) become float64 0-d tensors, which do not promote the tensors they meet.
    c = torch.as_tensor(c)
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    return torch.where(c != 0, a, b)


def _mask(cond, a, b):
    # 1.0 / 0.0 in the arguments' floating dtype, so masks multiply without dtype promotion.
    dtype = torch.result_type(a, b)
    return cond.to(dtype if dtype.is_floating_point else torch.get_default_dtype())


def _gt(a, b):
    return _mask(a > b if isinstance(a, torch.Tensor) else b < a, a, b)


def _lt(a, b):
    return _mask(a < b if isinstance(a, torch.Tensor) else b > a, a, b)


def _ge(a, b):
    return _mask(a >= b if isinstance(a, torch.Tensor) else b <= a, a, b)


def _le(a, b):
    return _mask(a <= b if isinstance(a, torch.Tensor) else b >= a, a, b)


def _numel(x):
    # float32, as metaopt's numel
    return torch.tensor(float(x.numel() if isinstance(x, torch.Tensor) else 1), dtype=torch.float32)


def _need_matrix(name, x):
    if x.dim() < 2:
        raise ValueError(f"{name} needs a leaf with ndim >= 2, got shape {tuple(x.shape)} "
                         f"(add `fallback ... when ndim < 2`)")
    return x


def _row_mean(x):
    return torch.mean(_need_matrix("row_mean", x), dim=-1, keepdim=True)


def _col_mean(x):
    return torch.mean(_need_matrix("col_mean", x), dim=-2, keepdim=True)


def _row_max(x):
    return torch.amax(_need_matrix("row_max", x), dim=-1, keepdim=True)


def _col_max(x):
    return torch.amax(_need_matrix("col_max", x), dim=-2, keepdim=True)


def _atan2(a, b):
    # torch.atan2 takes tensors only: a Python float becomes a float64 0-d tensor, which (like a weak JAX scalar)
    # does not promote the tensor it meets; two floats stay a Python float.
    if not isinstance(a, torch.Tensor) and not isinstance(b, torch.Tensor):
        return math.atan2(a, b)
    a = a if isinstance(a, torch.Tensor) else torch.tensor(float(a), dtype=torch.float64)
    b = b if isinstance(b, torch.Tensor) else torch.tensor(float(b), dtype=torch.float64)
    return torch.atan2(a, b)


def _as_matrix(name, x, exactly_2d=True):
    # Matrix ops compute in float32 (float64 stays float64) and cast back to x's dtype, as metaopt's JAX ops.
    if (x.dim() != 2) if exactly_2d else (x.dim() < 2):
        need = "a 2-D leaf" if exactly_2d else "a leaf with ndim >= 2"
        raise ValueError(f"{name} needs {need}, got shape {tuple(x.shape)} (add a fallback for other leaves)")
    return x.to(torch.promote_types(x.dtype, torch.float32)), x.dtype


def _row_normalize(x):
    x, dtype = _as_matrix("row_normalize", x, exactly_2d=False)
    return (x / (torch.sqrt(torch.mean(torch.square(x), dim=-1, keepdim=True)) + 1e-8)).to(dtype)


def _col_normalize(x):
    x, dtype = _as_matrix("col_normalize", x, exactly_2d=False)
    return (x / (torch.sqrt(torch.mean(torch.square(x), dim=-2, keepdim=True)) + 1e-8)).to(dtype)


def _orthogonalize(x):
    # Newton-Schulz as optax.contrib.muon: tall matrices transposed, Frobenius preconditioning (eps 1e-8),
    # 5 quintic steps X <- aX + (bA + cA^2)X with A = X X^T.
    x, dtype = _as_matrix("orthogonalize", x)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (torch.sqrt(torch.sum(torch.square(x))) + 1e-8)
    a, b, c = 3.4445, -4.7750, 2.0315
    for _ in range(5):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).to(dtype)


def _whiten(x):
    # SWAN's GradWhitening U V^T of the thin SVD, dropping singular values below sqrt(eps) * s_max.
    x, dtype = _as_matrix("whiten", x)
    u, s, vh = torch.linalg.svd(x, full_matrices=False)
    keep = (s > math.sqrt(torch.finfo(dtype).eps) * torch.max(s)).to(x.dtype)
    return ((u * keep) @ vh).to(dtype)


def _svd_basis(x):
    # Conda's basis: Vh (c x c) when rows >= cols, else U (r x r), zero-padded into x's shape.
    x, dtype = _as_matrix("svd_basis", x)
    r, c = x.shape
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    out = torch.zeros(x.shape, dtype=dtype, device=x.device)
    if r >= c:
        out[:c, :] = vh.to(dtype)
    else:
        out[:, :r] = u.to(dtype)
    return out


def _project(p, x):
    x, dtype = _as_matrix("project", x)
    p = p.to(x.dtype)
    r, c = x.shape
    return (x @ p[:c, :].T if r >= c else p[:, :r].T @ x).to(dtype)


def _unproject(p, y):
    y, dtype = _as_matrix("unproject", y)
    p = p.to(y.dtype)
    r, c = y.shape
    return (y @ p[:c, :] if r >= c else p[:, :r] @ y).to(dtype)


def _tall(name, x):
    # The tall view of a 2-D x (x^T when x has fewer rows than columns), whether x was transposed, x's dtype.
    x, dtype = _as_matrix(name, x)
    wide = x.shape[0] < x.shape[1]
    return (x.T if wide else x), wide, dtype


def _first_columns(q, r):
    # q with its columns from index r on set to 0
    return q * (torch.arange(q.shape[1], device=q.device) < r).to(q.dtype)


def _sign_fixed(q):
    # each column's largest-magnitude entry made positive, as metaopt's JAX op (LAPACK builds disagree on signs)
    pick = q.gather(0, torch.argmax(torch.abs(q), dim=0, keepdim=True))
    return q * torch.where(pick < 0, -1.0, 1.0).to(q.dtype)


def _gram_major(x):
    xt, _, dtype = _tall("gram_major", x)
    return (xt @ xt.T).to(dtype)


def _gram_minor(x):
    xt, _, dtype = _tall("gram_minor", x)
    return (xt.T @ xt).to(dtype)


def _lrmul(a, x, b):
    # a X~ b on the tall view, computed as (a X~) b; a number a or b is that multiple of the identity
    xt, wide, dtype = _tall("lrmul", x)
    y = a.to(xt.dtype) @ xt if isinstance(a, torch.Tensor) and a.dim() == 2 else a * xt
    y = y @ b.to(xt.dtype) if isinstance(b, torch.Tensor) and b.dim() == 2 else y * b
    return (y.T if wide else y).to(dtype)


def _transpose(a):
    # a copy, never a view: the exporter updates fresh results in place, and a may be a state buffer
    a, dtype = _as_matrix("transpose", a)
    return a.T.clone().to(dtype)


def _inv_root(a, p, eps):
    # (A + eps I)^(-1/p) by eigendecomposition; symmetrized as jnp.linalg.eigh does (torch reads one triangle)
    a, dtype = _as_matrix("inv_root", a)
    lam, q = torch.linalg.eigh((a + a.T) / 2)
    lam = torch.clamp(lam, min=0) + eps
    return ((q * lam ** (-1.0 / p)) @ q.T).to(dtype)


def _eigvecs(a):
    a, dtype = _as_matrix("eigvecs", a)
    return _sign_fixed(torch.flip(torch.linalg.eigh((a + a.T) / 2)[1], dims=[1])).to(dtype)


def _eig_perm(a, q):
    a, dtype = _as_matrix("eig_perm", a)
    q = q.to(a.dtype)
    order = torch.argsort(-torch.sum(q * (a @ q), dim=0), stable=True)
    return torch.eye(a.shape[0], dtype=dtype, device=a.device)[:, order]


def _qr_basis(a, r):
    a, dtype = _as_matrix("qr_basis", a)
    return _first_columns(torch.linalg.qr(a)[0], r).to(dtype)


def _svd_major(x, r):
    x, dtype = _as_matrix("svd_major", x)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    basis = _sign_fixed(vh.T if x.shape[0] < x.shape[1] else u)
    out = torch.zeros(basis.shape[0], basis.shape[0], dtype=x.dtype, device=x.device)
    out[:, :basis.shape[1]] = _first_columns(basis, r)
    return out.to(dtype)


def _svd_minor(x, r):
    x, dtype = _as_matrix("svd_minor", x)
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return _first_columns(_sign_fixed(u if x.shape[0] < x.shape[1] else vh.T), r).to(dtype)


def _eye(a):
    a, dtype = _as_matrix("eye", a)
    return torch.eye(a.shape[0], dtype=dtype, device=a.device)


def _triu(a):
    a, dtype = _as_matrix("triu", a)
    return torch.triu(a).to(dtype)


def _tri_inv(a):
    # a^-1 of an upper-triangular a by back substitution against I
    a, dtype = _as_matrix("tri_inv", a)
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    return torch.linalg.solve_triangular(a, eye, upper=True).to(dtype)


def _norm_lower_bound(a):
    # Li's lower bound on ||a||_2, as metaopt's JAX op (first maximal row/column on ties, as jnp.argmax)
    a, dtype = _as_matrix("norm_lower_bound", a)
    top = torch.max(torch.abs(a))
    a = a / torch.where(top > 0, top, torch.ones_like(top))
    aa = a * a
    col, row = torch.sum(aa, dim=0), torch.sum(aa, dim=1)
    i, j = torch.argmax(col), torch.argmax(row)
    tiny = torch.finfo(a.dtype).tiny
    x0 = a[:, i] @ a
    b0 = torch.linalg.vector_norm((x0 / torch.linalg.vector_norm(x0).clamp_min(tiny)) @ a.T)
    x1 = a @ a[j, :]
    b1 = torch.linalg.vector_norm(a.T @ (x1 / torch.linalg.vector_norm(x1).clamp_min(tiny)))
    return (top * torch.where(col[i] > row[j], b0, b1)).to(dtype)


def _combine_sum(parts):
    return sum(parts[1:], parts[0])


def _combine_max(parts):
    out = parts[0]
    for x in parts[1:]:
        out = torch.maximum(out, x)
    return out


def _new_state(value, p, kind):
    # A state buffer of this kind for parameter p (tensor: p's shape; row: [..., r, 1]; col: [..., 1, c];
    # scalar: 0-d), in p's dtype, holding value broadcast.
    if kind == "tensor":
        shape = p.shape
    elif kind == "row":
        shape = p.shape[:-1] + (1,)
    elif kind == "col":
        shape = p.shape[:-2] + (1, p.shape[-1])
    elif kind in ("major", "minor"):   # square, on the longer / shorter side of a 2-D parameter
        if p.dim() != 2:
            raise ValueError(f"a {kind} (matrix-shaped) state needs a 2-D parameter, got shape {tuple(p.shape)} "
                             f"(add `fallback NAME(...) when ndim != 2`)")
        side = max(p.shape) if kind == "major" else min(p.shape)
        shape = (side, side)
    else:
        shape = ()
    if isinstance(value, torch.Tensor):
        return value.detach().to(device=p.device, dtype=p.dtype).expand(shape).clone()
    return torch.full(shape, float(value), dtype=p.dtype, device=p.device)


def _store(buf, value):
    # The new value of a state, written into its buffer (broadcast, cast to the buffer's dtype).
    if isinstance(value, torch.Tensor):
        buf.copy_(value)
    else:
        buf.fill_(value)
    return buf


def _global(value):
    # Global states are float32 0-d tensors, as in metaopt.
    return torch.as_tensor(value).detach().to(torch.float32)


def _grad(p, maximize):
    g = p.grad
    if g.is_sparse:
        raise RuntimeError("this optimizer does not support sparse gradients")
    if torch.is_complex(p):
        raise TypeError(f"complex parameter of shape {tuple(p.shape)}: metaopt's torch export supports real "
                        f"parameters only (use metaopt.to_optax for complex ones)")
    return -g if maximize else g


def _check_uniform(groups, names, program):
    # A value shared by all parameters (a global state or statement) is computed once, so every parameter group
    # must agree on the hyperparameters it reads.
    first = groups[0][0]
    for hp, _ in groups[1:]:
        for n in names:
            if hp[n] != first[n]:
                raise ValueError(f"{program}: parameter groups disagree on {n!r} ({first[n]} vs {hp[n]}), but "
                                 f"{program} computes optimizer-wide values from it; use one value for all groups")
