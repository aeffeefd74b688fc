"""The ``torch.optim.Optimizer`` subclass of an exported program (see ``metaopt.export_torch``).

Kept apart from the statement generator: this part is plain PyTorch plumbing (parameter groups, closure,
state, routing of parameters to the program or its fallback), the same for every program.
"""
from __future__ import annotations

from metaopt.dsl.program import Program
from metaopt.export import _num

_CLASS = '''
_STEPS = {{{steps}}}
_INITS = {{{inits}}}
_INIT_GLOBALS = {{{init_globals}}}
_NEEDS_MATRIX = {needs_matrix!r}
_OBJECTIVE = {objective!r}   # programs that evaluate the objective again (h, grad_at): not with maximize=True
_HYPERPARAMETERS = {hp_names!r}


def _io_ids(groups, io_params):
    """ids of the parameters ``io_params`` names: the tensors themselves, or ``.``-joined name prefixes
    (``"embed"`` covers ``embed.weight``, not ``embedder.weight``) of parameters given by name."""
    if isinstance(io_params, (str, torch.Tensor)):
        raise TypeError("io_params takes an iterable of parameters or of parameter-name prefixes, e.g. "
                        "[model.embed.weight] or ['embed', 'head'], not a single one")
    names = {{id(p): n for group in groups
             for p, n in zip(group["params"], group.get("param_names", [None] * len(group["params"])))}}
    ids = set()
    for x in io_params:
        if isinstance(x, torch.Tensor):
            if id(x) not in names:
                raise ValueError("io_params holds a tensor that is not among the optimizer's parameters")
            ids.add(id(x))
        elif isinstance(x, str):
            hits = {{i for i, n in names.items() if n is not None and (n == x or n.startswith(x + "."))}}
            if not hits:
                raise ValueError(f"io_params name {{x!r}} matches no parameter name "
                                 f"(names come with model.named_parameters())")
            ids |= hits
        else:
            raise TypeError(f"io_params entries are parameters or names, got {{type(x).__name__}}")
    return ids


class {cls}(torch.optim.Optimizer):
    """{name}, exported by metaopt: ``w <- w - lr * u`` with ``u`` the program in this module's docstring.

    Args:
      params: an iterable of parameters or of dicts defining parameter groups (each group may set its own
        ``lr`` and hyperparameters), as for every ``torch.optim`` optimizer.
      lr: learning rate (default 1e-3).
{hp_doc}      maximize: maximize the objective instead of minimizing it (the gradient's sign is flipped).
      io_params: the parameters of the model's input and output layers (embeddings, the first layer, the
        head), where the program's fallback predicate sees ``io == 1``: the tensors, or name prefixes such as
        ``["embed", "head"]`` when ``params`` are named (``model.named_parameters()``). Default: none. It is
        not part of ``state_dict()``: pass it again when rebuilding the optimizer.

    ``step(closure=None)`` returns the closure's loss.{loss_doc} ``t`` (the program's step count) counts
    ``step()`` calls of this optimizer; it and the program's optimizer-wide values live in
    ``state["global"]``, so ``state_dict()`` / ``load_state_dict()`` round-trip them. Parameters whose
    ``grad`` is None are skipped (their state is left as it is).
    """

    # metaopt's t is float32 (so are bias corrections like 1 - b1^t computed from it); torch.float64 counts in
    # double precision as torch.optim does (differences ~1e-7 relative per step, visible only in float64 models).
    step_dtype = torch.float32

    def __init__(self, params, lr=1e-3{sig}, *, maximize=False, io_params=()):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {{lr}}")
        defaults = dict(lr=lr{kw}, maximize=maximize)
        super().__init__(params, defaults)
        self._io = _io_ids(self.param_groups, io_params)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient; returns the closure's loss (if given)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
{loss_check}        glob = {{k: dict(v) if isinstance(v, dict) else v for k, v in self.state["global"].items()}}
        self.state["global"] = glob
        glob["step"] = glob.get("step", 0) + 1
        t = torch.tensor(float(glob["step"]), dtype=self.step_dtype)
        loss_f32 = None if loss is None else torch.as_tensor(loss).detach().to(torch.float32)
        buckets = {{name: {{}} for name in _STEPS}}
        # what the random and objective inputs need: the step's closure, the count of previous steps, and each
        # parameter's position among all of them (the leaf index of the key derivation, metaopt/dsl/inputs.py)
        everyone = [p for group in self.param_groups for p in group["params"]]
        env = {{"closure": closure, "count": glob["step"] - 1, "index": {{id(p): k for k, p in enumerate(everyone)}}}}
        for k, group in enumerate(self.param_groups):
            hp = {{name: float(group[name]) for name in _HYPERPARAMETERS}}
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = _grad(p, group["maximize"])
                prog, php = _{fn}_route(tuple(p.shape), id(p) in self._io, hp)
                if prog in _OBJECTIVE and group["maximize"]:
                    raise ValueError(f"{{prog}} evaluates the objective (h, grad_at): maximize=True is not supported")
                if prog in _NEEDS_MATRIX and p.dim() < 2:
                    raise ValueError(f"{{prog}} uses matrix/factored ops or row/col state but a parameter of "
                                     f"shape {{tuple(p.shape)}} reaches it; add `fallback NAME(...) when ndim < 2`")
                st = self.state[p]
                if not st:
                    st.update(_INITS[prog](p, php))
                members = buckets[prog].setdefault(k, (php, []))[1]
                members.append((sum(len(m) for _, m in buckets[prog].values()), p, g, st))
        for prog, by_group in buckets.items():
            groups = list(by_group.values())
            if groups:
                if prog not in glob:
                    glob[prog] = _INIT_GLOBALS[prog](groups[0][0])
                _STEPS[prog](groups, glob[prog], t, loss_f32, env)
        return loss
'''


def class_source(program: Program, cls: str, chain: list[str], needs_matrix: list[str], reads_loss: bool,
                 objective: list[str] = ()) -> str:
    """The optimizer class and the tables routing parameters to ``program`` or its fallbacks."""
    from metaopt.export_torch import _name
    names = [_name(n) for n, _ in program.hyperparams]
    sig = "".join(f", {n}={_num(v)}" for n, (_, v) in zip(names, program.hyperparams))
    kw = "".join(f", {n}={n}" for n in names)
    hp_doc = "".join(f"      {n}: the program's hyperparameter {n} (default {_num(v)}).\n"
                     for n, (_, v) in zip(names, program.hyperparams))
    loss_check = ""
    loss_doc = ""
    if reads_loss:
        loss_doc = " The rule reads the loss: ``step`` needs a closure that returns it."
        loss_check = (f"        if loss is None:\n            raise ValueError(\"{program.name} reads the loss: call "
                      f"step(closure) with a closure that recomputes and returns it\")\n")
    if objective:
        loss_doc += (f" {', '.join(objective)} evaluate(s) the objective again: pass ``step(closure)`` with a "
                     f"closure that zeroes the gradients, computes the loss, calls ``loss.backward()`` "
                     f"(``create_graph=True`` for a program reading h) and returns the loss.")
    table = lambda suffix: ", ".join(f"{n!r}: _{_name(n)}_{suffix}" for n in chain)
    return _CLASS.format(
        steps=table("step"), inits=table("init"), init_globals=table("init_global"), needs_matrix=set(needs_matrix),
        hp_names=["lr"] + names, objective=set(objective), cls=cls, name=program.name, hp_doc=hp_doc, loss_doc=loss_doc,
        sig=sig, kw=kw, loss_check=loss_check, fn=_name(program.name)).lstrip("\n")
