"""Op implementations that are more than one expression.

Each function here is both the registry's JAX function for its op and, copied verbatim with
``inspect.getsource``, the helper an exported module (``to_source``) defines — so exported code and
``to_optax`` compute with the very same code. Only ``jax``/``jnp`` may be used here.
"""
import jax
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


def row_max(x):
    return jnp.max(_need_matrix("row_max", x), axis=-1, keepdims=True)


def col_max(x):
    return jnp.max(_need_matrix("col_max", x), axis=-2, keepdims=True)


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


# --- matrix-shaped values (major/minor kinds, metaopt/dsl/matrix_kinds.py): ops on a 2-D leaf's tall view ------
def _tall(name, x):
    # The tall view of a 2-D x (x, or x^T when x has fewer rows than columns) computed in float32+ (_as_matrix),
    # whether x was transposed, and x's dtype. A square matrix (a major/minor value) is its own tall view.
    x, dtype = _as_matrix(name, x)
    wide = x.shape[0] < x.shape[1]
    return (x.T if wide else x), wide, dtype


def _first_columns(q, r):
    # q with its columns from index r on set to 0 (r may be traced): a rank-r basis in a static shape
    return q * (jnp.arange(q.shape[1]) < r).astype(q.dtype)


def _sign_fixed(q):
    # q with each column's sign chosen so that its largest-magnitude entry is positive. Singular and eigen vectors
    # are defined up to sign and LAPACK builds choose differently (numpy/JAX and torch disagree on most matrices);
    # GaLore's moments outlive a refresh of its projector, so the sign is part of the rule: fixing it makes the
    # program mean the same on every backend (to_optax, the torch export, CPU or GPU).
    pick = jnp.take_along_axis(q, jnp.argmax(jnp.abs(q), axis=0)[None], axis=0)
    return q * jnp.where(pick < 0, -1, 1).astype(q.dtype)


def gram_major(x):
    """``X~ X~ᵀ`` (M x M) of the tall view X~ of x: ``G Gᵀ`` for a tall G, ``Gᵀ G`` for a wide one."""
    xt, _, dtype = _tall("gram_major", x)
    return (xt @ xt.T).astype(dtype)


def gram_minor(x):
    """``X~ᵀ X~`` (k x k): ``Gᵀ G`` for a tall G, ``G Gᵀ`` for a wide one."""
    xt, _, dtype = _tall("gram_minor", x)
    return (xt.T @ xt).astype(dtype)


def lrmul(a, x, b):
    """``a X~ b`` mapped back to x's orientation, computed as ``(a X~) b``: for a tall leaf ``a x b`` (Shampoo's
    ``P_L G P_R``), for a wide one ``(a xᵀ b)ᵀ``; a major/minor x is its own tall view. A 0-d a or b is that
    multiple of the identity (``lrmul(1, g, p)`` is ``g p``)."""
    xt, wide, dtype = _tall("lrmul", x)
    a, b = jnp.asarray(a).astype(xt.dtype), jnp.asarray(b).astype(xt.dtype)
    y = a @ xt if a.ndim == 2 else a * xt
    y = y @ b if b.ndim == 2 else y * b
    return (y.T if wide else y).astype(dtype)


def transpose(a):
    a, dtype = _as_matrix("transpose", a)
    return a.T.astype(dtype)


def inv_root(a, p, eps):
    """``(A + eps I)^(-1/p)`` of a symmetric positive semi-definite A from its eigendecomposition (jnp.linalg.eigh;
    eigenvalues clamped at 0 first: rounding leaves ~-1e-16 ones). Shampoo's preconditioner root; the
    eigendecomposition, not optax.matrix_inverse_pth_root's coupled Newton iteration (tested against it)."""
    a, dtype = _as_matrix("inv_root", a)
    lam, q = jnp.linalg.eigh(a)
    lam = jnp.maximum(lam, 0) + jnp.asarray(eps, a.dtype)
    return ((q * lam ** (-1.0 / jnp.asarray(p, a.dtype))) @ q.T).astype(dtype)


def eigvecs(a):
    """Eigenvectors of a symmetric a (jnp.linalg.eigh) as columns, by descending eigenvalue (SOAP's first basis),
    each with its largest-magnitude entry positive."""
    a, dtype = _as_matrix("eigvecs", a)
    return _sign_fixed(jnp.linalg.eigh(a)[1][:, ::-1]).astype(dtype)


def eig_perm(a, q):
    """The permutation matrix Π ordering q's columns by descending Rayleigh quotient ``diag(qᵀ a q)`` (``q Π`` is
    q so ordered): SOAP's power-iteration refresh sorts its basis, and its second moment with it, this way."""
    a, dtype = _as_matrix("eig_perm", a)
    q = jnp.asarray(q).astype(a.dtype)
    order = jnp.argsort(-jnp.sum(q * (a @ q), axis=0))   # stable: equal quotients keep their order
    return jnp.eye(a.shape[0], dtype=dtype)[:, order]


def qr_basis(a, r):
    """Q of the Householder QR of a (jnp.linalg.qr) with its columns from r on set to 0: an orthonormal basis of
    the span of a's first r columns (columns past r do not enter the first r of Q)."""
    a, dtype = _as_matrix("qr_basis", a)
    return _first_columns(jnp.linalg.qr(a)[0], r).astype(dtype)


def svd_major(x, r):
    """The top r left singular vectors of x's tall view as the first columns of an M x M matrix (the rest 0):
    U of the thin SVD of a tall x, Vh^T of a wide one (optax.contrib.galore's projector), each with its
    largest-magnitude entry positive (optax keeps LAPACK's signs)."""
    x, dtype = _as_matrix("svd_major", x)
    u, _, vh = jnp.linalg.svd(x, full_matrices=False)
    basis = _sign_fixed(vh.T if x.shape[0] < x.shape[1] else u)
    big = basis.shape[0]
    return jnp.zeros((big, big), x.dtype).at[:, :basis.shape[1]].set(_first_columns(basis, r)).astype(dtype)


def svd_minor(x, r):
    """The top r right singular vectors of x's tall view as the first columns of a k x k matrix (the rest 0): Vh^T
    of a tall x, U of a wide one (GaLore's code: ``'right' if m >= n else 'left'``), signs as svd_major's."""
    x, dtype = _as_matrix("svd_minor", x)
    u, _, vh = jnp.linalg.svd(x, full_matrices=False)
    return _first_columns(_sign_fixed(u if x.shape[0] < x.shape[1] else vh.T), r).astype(dtype)



# PSGD's triangular factors (Li, arXiv:1512.04202; kron.opt): Q starts at I, moves by triu(...) Q, and the
# noise side of its fit needs Q^-1 (Q stays upper triangular with a positive diagonal).
def eye(a):
    """The identity shaped like the square a (``state q: major = eye(gram_major(w))`` starts a factor at I)."""
    a, dtype = _as_matrix("eye", a)
    return jnp.eye(a.shape[0], dtype=dtype)


def triu(a):
    """The upper triangle of a (diagonal included), the rest 0."""
    a, dtype = _as_matrix("triu", a)
    return jnp.triu(a).astype(dtype)


def tri_inv(a):
    """``a^-1`` of an upper-triangular a (only that triangle is read) by back substitution against I."""
    a, dtype = _as_matrix("tri_inv", a)
    eye_ = jnp.eye(a.shape[0], dtype=a.dtype)
    return jax.lax.linalg.triangular_solve(a, eye_, left_side=True, lower=False).astype(dtype)


def norm_lower_bound(a):
    """Li's cheap lower bound on the spectral norm ||a||_2 (psgd_torch's norm_lower_bound, used by Kron for the
    step size of a triangular factor): with a scaled to max|a| = 1, take the row (or column) of largest 2-norm
    as x, and return max|a| * ||(x/||x||) a^T|| for a column pick (``||a^T (x/||x||)||`` for a row pick)."""
    a, dtype = _as_matrix("norm_lower_bound", a)
    top = jnp.max(jnp.abs(a))
    a = a / jnp.where(top > 0, top, 1)
    aa = a * a
    col, row = jnp.sum(aa, axis=0), jnp.sum(aa, axis=1)
    # the picked column / row as a product with a one-hot vector (exact), not a gather: half the compile time
    idx = jnp.arange(a.shape[0])
    ei, ej = (idx == jnp.argmax(col)).astype(a.dtype), (idx == jnp.argmax(row)).astype(a.dtype)
    tiny = jnp.finfo(a.dtype).tiny
    x0 = (a @ ei) @ a
    b0 = jnp.linalg.norm((x0 / jnp.maximum(jnp.linalg.norm(x0), tiny)) @ a.T)
    x1 = a @ (ej @ a)
    b1 = jnp.linalg.norm(a.T @ (x1 / jnp.maximum(jnp.linalg.norm(x1), tiny)))
    return (top * jnp.where(jnp.max(col) > jnp.max(row), b0, b1)).astype(dtype)

# --- random inputs (metaopt/dsl/inputs.py): the key derivation, and the draws ---------------------------------
def rng_key(seed):
    # PRNGKey(seed) of a rule reading random inputs: seed a Python number in [0, 2^32) (a fraction is truncated) or
    # a JAX scalar (optax.inject_hyperparams injects a float32 array)
    if isinstance(seed, (int, float)):
        if not 0 <= seed < 2 ** 32:
            raise ValueError(f"seed must be an integer in [0, 2^32), got {seed}")
        return jax.random.PRNGKey(int(seed))
    return jax.random.PRNGKey(jnp.asarray(seed).astype(jnp.int32))


def leaf_key(key, count, i, stream):
    # The key of random stream `stream` for leaf i (position in the flattened tree) at the update that follows
    # `count` previous ones: leaves, steps and streams draw independently, reproducibly from the seed.
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, count), i), stream)


def _draw_dtype(x):
    # Draws are made in float32 (float64 for a float64 leaf) and cast to the leaf's dtype, so every leaf dtype
    # sees the same numbers (and the torch export can reproduce them bit for bit).
    return jnp.promote_types(jnp.result_type(x), jnp.float32)


def normal_like(key, x):
    # A standard-normal draw shaped like x (jax.random.normal), in x's dtype.
    return jax.random.normal(key, jnp.shape(x), _draw_dtype(x)).astype(jnp.result_type(x))


def rademacher_like(key, x):
    # +-1 shaped like x: 1 where the top bit of 32 random bits is 0 (jax.random.rademacher's draw without x64).
    bits = jax.random.bits(key, jnp.shape(x), jnp.uint32)
    return (1 - 2 * (bits >> 31).astype(jnp.int32)).astype(jnp.result_type(x))


# --- objective inputs and ops: obj = (obj_fn, treedef, the flat parameter leaves) --------------------------------
def hutchinson(obj, zs):
    # z * (H z) for the leaves i in zs (i -> Rademacher z), H the Hessian of obj_fn at the parameters: one
    # jvp of jax.grad(obj_fn) with tangent z on those leaves and 0 elsewhere, as
    # optax.contrib.hutchinson_estimator_diag_hessian.
    obj_fn, treedef, ws = obj
    tangent = [jnp.asarray(zs[i], w.dtype) if i in zs else jnp.zeros_like(w) for i, w in enumerate(ws)]
    _, hz = jax.jvp(jax.grad(obj_fn), (treedef.unflatten(ws),), (treedef.unflatten(tangent),))
    hz = treedef.flatten_up_to(hz)
    return {i: z * hz[i] for i, z in zs.items()}


def grad_at(obj, points):
    # The gradient of obj_fn at the parameters with leaf i moved to points[i] (broadcast to the leaf's shape and
    # dtype) for the leaves i in points; the other leaves stay where they are.
    obj_fn, treedef, ws = obj
    at = [jnp.broadcast_to(jnp.asarray(points[i], w.dtype), w.shape) if i in points else w for i, w in enumerate(ws)]
    grads = treedef.flatten_up_to(jax.grad(obj_fn)(treedef.unflatten(at)))
    return {i: grads[i] for i in points}


def loss_at(obj, points):
    # obj_fn at the parameters with leaf i moved to points[i] (as grad_at), the other leaves where they are: one
    # value for all leaves.
    obj_fn, treedef, ws = obj
    at = [jnp.broadcast_to(jnp.asarray(points[i], w.dtype), w.shape) if i in points else w for i, w in enumerate(ws)]
    return obj_fn(treedef.unflatten(at))
