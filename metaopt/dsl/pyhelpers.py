"""Op implementations that are more than one expression.

Each function here is both the registry's JAX function for its op and, copied verbatim with
``inspect.getsource``, the helper an exported module (``to_source``) defines — so exported code and
``to_optax`` compute with the very same code. Only ``jax``/``jnp`` may be used here.
"""
import jax.numpy as jnp


def abs_sq(x):
    # |x|^2, real even for complex x (optax's numerics.abs_sq); a real x takes exactly jnp.square's path.
    return jnp.real(jnp.conj(x) * x) if jnp.iscomplexobj(x) else jnp.square(x)


def dot(a, b):
    # The real inner product of C^n viewed as R^2n, sum(Re(conj(a) * b)): what optax takes of its tree_vdot
    # (tree.real(tree.vdot(...))), so <g, g> = |g|^2 and a Polyak/trust-ratio step stays real.
    if jnp.iscomplexobj(a) or jnp.iscomplexobj(b):
        return jnp.sum(jnp.real(jnp.conj(a) * b))
    return jnp.sum(a * b)


def clip(x, lo, hi):
    # jnp.clip refuses complex input; a complex x is ordered as jnp.maximum/jnp.minimum order it (real part
    # first), which is exact for the real-valued moments optax (and metaopt) keep in a complex parameter's
    # dtype. Bounding a genuinely complex value's magnitude is `sign(x) * min(abs(x), c)` (see adopt.opt).
    if jnp.iscomplexobj(x) or jnp.iscomplexobj(lo) or jnp.iscomplexobj(hi):
        return jnp.minimum(jnp.maximum(x, lo), hi)
    return jnp.clip(x, lo, hi)


def _mask(cond, a, b):
    # 1.0 / 0.0 in the arguments' floating dtype, so masks multiply without dtype promotion.
    return jnp.where(cond, 1.0, 0.0).astype(jnp.result_type(a, b, 1.0))


def gt(a, b):
    return _mask(jnp.greater(a, b), a, b)


def lt(a, b):
    return _mask(jnp.less(a, b), a, b)


def ge(a, b):
    return _mask(jnp.greater_equal(a, b), a, b)


def le(a, b):
    return _mask(jnp.less_equal(a, b), a, b)


def _need_matrix(name, x):
    if jnp.ndim(x) < 2:
        raise ValueError(f"{name} needs a leaf with ndim >= 2, got shape {jnp.shape(x)} "
                         f"(add `fallback ... when ndim < 2`)")
    return jnp.asarray(x)


def row_mean(x):
    return jnp.mean(_need_matrix("row_mean", x), axis=-1, keepdims=True)


def col_mean(x):
    return jnp.mean(_need_matrix("col_mean", x), axis=-2, keepdims=True)


def _as_matrix(name, x, exactly_2d=True):
    # Matrix ops compute in float32 (float64 stays float64) and cast their result back to x's dtype (returned
    # with the cast x): CPU LAPACK has no bfloat16/float16 SVD, and a bf16 Newton-Schulz iteration or row RMS keeps
    # only ~3 significant digits.
    x = jnp.asarray(x)
    if (x.ndim != 2) if exactly_2d else (x.ndim < 2):
        need = "a 2-D leaf" if exactly_2d else "a leaf with ndim >= 2"
        raise ValueError(f"{name} needs {need}, got shape {x.shape} (add a fallback for other leaves)")
    return x.astype(jnp.promote_types(x.dtype, jnp.float32)), x.dtype


def row_normalize(x):
    # Each row divided by its RMS; 1e-8 keeps an all-zero row at zero.
    x, dtype = _as_matrix("row_normalize", x, exactly_2d=False)
    return (x / (jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True)) + 1e-8)).astype(dtype)


def col_normalize(x):
    x, dtype = _as_matrix("col_normalize", x, exactly_2d=False)
    return (x / (jnp.sqrt(jnp.mean(jnp.square(x), axis=-2, keepdims=True)) + 1e-8)).astype(dtype)


def orthogonalize(x):
    """Newton–Schulz orthogonalization exactly as optax.contrib.muon (``orthogonalize_via_newton_schulz``
    with its defaults: 'frobenius' preconditioning, 5 steps, quintic coefficients (3.4445, -4.7750, 2.0315),
    eps 1e-8): a tall matrix is transposed, divided by ``‖X‖_F + eps``, iterated
    ``X ← a X + (b A + c A²) X`` with ``A = X Xᵀ``, and transposed back (Jordan et al. 2024, "Muon")."""
    x, dtype = _as_matrix("orthogonalize", x)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (jnp.linalg.norm(x, ord="fro") + 1e-8)
    a, b, c = (jnp.asarray(k, x.dtype) for k in (3.4445, -4.7750, 2.0315))
    for _ in range(5):   # unrolled, as optax's fori_loop(unroll=True)
        gram = x @ x.T.conj()   # conjugate transpose, as optax (no-op for real x)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if transposed else x).astype(dtype)


def whiten(x):
    """Exact GradWhitening of SWAN (Ma et al. 2024, arXiv:2412.13148), ``(X Xᵀ)^{-1/2} X``, via the thin SVD
    ``X = U S Vᵀ``: ``U Vᵀ`` over the singular values above ``sqrt(eps) * s_max`` (the pseudo-inverse root;
    a null direction maps to 0, as it does under the Newton–Schulz iteration). Tall and wide alike.

    The SVD of X itself, never an eigendecomposition of X Xᵀ: a null singular value comes out at
    ~eps * s_max, while squaring puts null eigenvalues at ~eps * s_max², right at the cutoff. eps is the
    input dtype's: a bf16 matrix that is rank-deficient in exact arithmetic (SWAN's row-centred gradient)
    has null singular values ~eps_bf16 * s_max, above a float32 cutoff."""
    x, dtype = _as_matrix("whiten", x)
    u, s, vh = jnp.linalg.svd(x, full_matrices=False)
    keep = jnp.where(s > jnp.sqrt(jnp.finfo(dtype).eps) * jnp.max(s), 1.0, 0.0).astype(x.dtype)
    return ((u * keep) @ vh).astype(dtype)


def svd_basis(x):
    """Conda's projection basis (official code, proj_type 'std'), from the thin SVD ``x = U S Vh``: ``Vh``
    (c×c) when rows >= cols, else ``U`` (r×r), zero-padded into x's shape (top rows / left columns)."""
    x, dtype = _as_matrix("svd_basis", x)
    r, c = x.shape
    u, _, vh = jnp.linalg.svd(x, full_matrices=False)
    if r >= c:
        return jnp.zeros_like(x, dtype).at[:c, :].set(vh.astype(dtype))
    return jnp.zeros_like(x, dtype).at[:, :r].set(u.astype(dtype))


def project(p, x):
    """Into the basis stored by ``svd_basis``: ``x Vhᵀ`` (rows >= cols) or ``Uᵀ x`` (wide); shape of x."""
    x, dtype = _as_matrix("project", x)
    p = jnp.asarray(p).astype(x.dtype)
    r, c = x.shape
    return (x @ p[:c, :].T if r >= c else p[:, :r].T @ x).astype(dtype)


def unproject(p, y):
    """Back from the basis stored by ``svd_basis``: ``y Vh`` (rows >= cols) or ``U y`` (wide)."""
    y, dtype = _as_matrix("unproject", y)
    p = jnp.asarray(p).astype(y.dtype)
    r, c = y.shape
    return (y @ p[:c, :] if r >= c else p[:, :r] @ y).astype(dtype)
