"""The matrix-shaped ops of the op registry: ``Op`` entries on major (M x M) / minor (k x k) matrices of a 2-D
leaf's tall view (metaopt/dsl/matrix_kinds.py). metaopt/dsl/ops.py splices ``OPS`` into its table, in this order,
so there is still one registry (``ops.get``, ``ops.all_ops``); this module only keeps ops.py a readable size.
Helpers (``helper=``) are in metaopt/dsl/pyhelpers.py, torch forms (``torch=``) in metaopt/torch_runtime.py.
"""
from __future__ import annotations

from metaopt.dsl import pyhelpers as H
from metaopt.dsl.op import Op

OPS: tuple[Op, ...] = (
    # --- matrix-shaped values: major (M x M) / minor (k x k) matrices of a 2-D leaf's tall view, M = max(m, n),
    # k = min(m, n) (metaopt/dsl/matrix_kinds.py). Not searchable: eigh/SVD/QR per candidate would dominate a
    # search step, and a wrong side is a kind error rather than a numerical one.
    Op("gram_major", 1, "matrix", H.gram_major, r"{0} {0}^{{\top}}", "X X^T of the leaf's tall view (M x M): "
       "G G^T for a tall G, G^T G for a wide one (Shampoo's L, SOAP's GG_L)", searchable=False, latex_wrap=(5,),
       sig=("tensor", "major"), py="gram_major({0})", helper="gram_major", torch="_gram_major({0})"),
    Op("gram_minor", 1, "matrix", H.gram_minor, r"{0}^{{\top}} {0}", "X^T X of the leaf's tall view (k x k)",
       searchable=False, latex_wrap=(5,), sig=("tensor", "minor"),
       py="gram_minor({0})", helper="gram_minor", torch="_gram_minor({0})"),
    Op("lrmul", 3, "matrix", H.lrmul, r"{0} \, {1} \, {2}", "lrmul(a, x, b) = a x b on the tall view: a tensor x "
       "takes a major a and a minor b (Shampoo's P_L G P_R), a major/minor x the same kind on both sides; a number "
       "a or b is that multiple of the identity", searchable=False, latex_prec=2, latex_wrap=(3, 3, 3),
       sig=("sandwich",), py="lrmul({0}, {1}, {2})", helper="lrmul", torch="_lrmul({0}, {1}, {2})"),
    Op("transpose", 1, "matrix", H.transpose, r"{0}^{{\top}}", "transpose of a major/minor matrix",
       searchable=False, latex_wrap=(5,), sig=("square", "square"),
       py="transpose({0})", helper="transpose", torch="_transpose({0})"),
    Op("inv_root", 3, "matrix", H.inv_root, r"\left({0} + {2} I\right)^{{-1/{1}}}", "inv_root(a, p, eps) = "
       "(a + eps I)^(-1/p) of a symmetric PSD matrix, by eigendecomposition (Shampoo's preconditioner)",
       searchable=False, sig=("square", "number", "number", "square"),
       py="inv_root({0}, {1}, {2})", helper="inv_root", torch="_inv_root({0}, {1}, {2})"),
    Op("eigvecs", 1, "matrix", H.eigvecs, r"\operatorname{{eigvecs}}({0})", "eigenvectors of a symmetric matrix "
       "as columns, by descending eigenvalue (SOAP's basis)", searchable=False, sig=("square", "square"),
       py="eigvecs({0})", helper="eigvecs", torch="_eigvecs({0})"),
    Op("eig_perm", 2, "matrix", H.eig_perm, r"\Pi_{{{0}}}({1})", "eig_perm(a, q): the permutation matrix sorting "
       "q's columns by descending diag(q^T a q) (SOAP's refresh order)", searchable=False,
       sig=("square", "square", "square"), py="eig_perm({0}, {1})", helper="eig_perm", torch="_eig_perm({0}, {1})"),
    Op("qr_basis", 2, "matrix", H.qr_basis, r"\operatorname{{qr}}_{{{1}}}({0})", "qr_basis(a, r): Q of the QR "
       "decomposition of a, columns from r on zero (SOAP's and COSMOS's power-iteration step)", searchable=False,
       sig=("square", "number", "square"), py="qr_basis({0}, {1})", helper="qr_basis", torch="_qr_basis({0}, {1})"),
    Op("svd_major", 2, "matrix", H.svd_major, r"U_{{{1}}}({0})", "svd_major(x, r): the top r left singular "
       "vectors of the tall view, columns of an M x M matrix, the rest zero (optax GaLore's projector)",
       searchable=False, sig=("tensor", "number", "major"),
       py="svd_major({0}, {1})", helper="svd_major", torch="_svd_major({0}, {1})"),
    Op("svd_minor", 2, "matrix", H.svd_minor, r"V_{{{1}}}({0})", "svd_minor(x, r): the top r right singular "
       "vectors of the tall view, columns of a k x k matrix, the rest zero (GaLore's code, Fira)",
       searchable=False, sig=("tensor", "number", "minor"),
       py="svd_minor({0}, {1})", helper="svd_minor", torch="_svd_minor({0}, {1})"),
    # PSGD's upper-triangular factors (Li, arXiv:1512.04202; kron.opt)
    Op("eye", 1, "matrix", H.eye, "I", "eye(a): the identity shaped like the major/minor matrix a (a factor's "
       "start: `state q: major = eye(gram_major(w))`)", searchable=False, sig=("square", "square"),
       py="eye({0})", helper="eye", torch="_eye({0})"),
    Op("triu", 1, "matrix", H.triu, r"\operatorname{{triu}}({0})", "upper triangle of a major/minor matrix "
       "(diagonal included), the rest 0", searchable=False, sig=("square", "square"),
       py="triu({0})", helper="triu", torch="_triu({0})"),
    Op("tri_inv", 1, "matrix", H.tri_inv, "{0}^{{-1}}", "inverse of an upper-triangular major/minor matrix (only "
       "its upper triangle is read), by back substitution", searchable=False, latex_wrap=(5,),
       sig=("square", "square"), py="tri_inv({0})", helper="tri_inv", torch="_tri_inv({0})"),
    Op("norm_lower_bound", 1, "matrix", H.norm_lower_bound, r"\underline{{\lVert {0} \rVert}}_2",
       "Li's lower bound on the spectral norm of a major/minor matrix (one value per leaf): max|a| times the norm "
       "of a's largest row (column), normalised, multiplied by a (PSGD's step normaliser)", searchable=False,
       sig=("square", "scalar"), py="norm_lower_bound({0})", helper="norm_lower_bound",
       torch="_norm_lower_bound({0})"),
)
