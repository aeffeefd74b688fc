"""The torch runtime of the random and objective inputs (metaopt/dsl/inputs.py) of exported optimizers.

Like ``metaopt/torch_runtime.py``, whose companion this is, ``to_torch_source`` copies the functions an exported
module needs from here verbatim, so this module imports only ``torch`` and ``math``.

Random inputs are JAX's draws reproduced bit for bit: ``jax.random`` with its default Threefry-2x32 PRNG
(partitionable mode, JAX's default) is a counter-based hash, written out below on int64 tensors that hold uint32
values. The key derivation is metaopt's (``pyhelpers.leaf_key``): ``fold_in`` of the step count, the leaf index
and the stream. Normals go through the same bits -> uniform -> ``sqrt(2) erfinv`` steps as ``jax.random.normal``
(float32, or float64 for float64 parameters); torch's ``erfinv`` and XLA's differ in the last bits (~1e-15
relative in float64, ~1e-6 in float32).

Objective inputs re-evaluate the model: ``h`` differentiates the gradients of ``loss.backward(create_graph=True)``
once more (``torch.autograd.grad`` with the Rademacher ``z`` as ``grad_outputs``); ``grad_at`` and ``loss_at``
move the parameters to the program's point, call the step's closure and put them back (``_closure_at``).
"""
import math

import torch


def _threefry2x32(k1, k2, x0, x1):
    # The Threefry-2x32 hash (5 x 4 rounds) of jax.random's default PRNG; keys are Python ints, counts int64 tensors
    # holding uint32 values (masked back to 32 bits after every addition and rotation).
    m = 0xFFFFFFFF
    ks = (k1, k2, k1 ^ k2 ^ 0x1BD11BDA)
    rotations = ((13, 15, 26, 6), (17, 29, 16, 24))
    x0, x1 = (x0 + ks[0]) & m, (x1 + ks[1]) & m
    for r in range(5):
        for rot in rotations[r % 2]:
            x0 = (x0 + x1) & m
            x1 = (((x1 << rot) | (x1 >> (32 - rot))) & m) ^ x0
        x0 = (x0 + ks[(r + 1) % 3]) & m
        x1 = (x1 + ks[(r + 2) % 3] + r + 1) & m
    return x0, x1


def _rng_key(seed):
    # jax.random.PRNGKey(seed) as two Python ints (seeds 0 <= seed < 2^32; a fraction is truncated, as in metaopt)
    s = int(seed)
    if not 0 <= s < 2 ** 32:
        raise ValueError(f"seed must be an integer in [0, 2^32), got {seed}")
    return (0, s)


def _leaf_key(key, count, i, stream):
    # fold_in(fold_in(fold_in(key, count), i), stream), jax.random.fold_in being the hash of the counts (0, data)
    for data in (count, i, stream):
        y0, y1 = _threefry2x32(key[0], key[1], torch.zeros((), dtype=torch.int64),
                               torch.tensor(int(data) & 0xFFFFFFFF, dtype=torch.int64))
        key = (int(y0), int(y1))
    return key


def _random_words(key, x):
    # jax's partitionable random bits for x's shape: the hash of the 64-bit element index (hi, lo) -> (y0, y1)
    lo = torch.arange(x.numel(), dtype=torch.int64, device=x.device).reshape(x.shape)
    return _threefry2x32(key[0], key[1], torch.zeros_like(lo), lo)


def _normal_like(key, x):
    # jax.random.normal(key, x.shape) in float32 (float64 for a float64 x), cast to x's dtype
    y0, y1 = _random_words(key, x)
    if x.dtype == torch.float64:
        u = ((y0 << 20) | (y1 >> 12) | 0x3FF0000000000000).view(torch.float64) - 1.0
        lo = torch.tensor(-1 + 2.0 ** -53, dtype=torch.float64)   # nextafter(-1, 0)
    else:
        u = ((((y0 ^ y1) >> 9) | 0x3F800000).to(torch.int32).view(torch.float32)) - 1.0
        lo = torch.tensor(-1 + 2.0 ** -24, dtype=torch.float32)
    u = torch.maximum(lo, u * (1 - lo) + lo)
    return (torch.tensor(math.sqrt(2), dtype=u.dtype) * torch.erfinv(u)).to(x.dtype)


def _rademacher_like(key, x):
    # +-1 shaped like x: 1 where the top bit of the 32 random bits is 0 (metaopt's pyhelpers.rademacher_like)
    y0, y1 = _random_words(key, x)
    return (1 - 2 * ((y0 ^ y1) >> 31)).to(x.dtype)


def _hutchinson(program, params, zs):
    # z * (H z) for these parameters: their .grad (from loss.backward(create_graph=True)) differentiated once more
    grads = [p.grad for p in params]
    if any(g is None or g.grad_fn is None for g in grads):
        raise ValueError(f"{program} reads h (Hutchinson's z * (H z)): compute the gradients with "
                         f"loss.backward(create_graph=True), in the closure passed to step() or before it")
    with torch.enable_grad():
        hz = torch.autograd.grad(grads, params, grad_outputs=zs, allow_unused=True)
    return [z * (torch.zeros_like(z) if h is None else h.detach()) for z, h in zip(zs, hz)]


def _closure_at(program, op, closure, params, points):
    # (the closure's loss, the parameters' gradients) at the parameters moved to the points (other parameters
    # stay); the parameters and their .grad are put back afterwards. Under enable_grad, as the closure of
    # step(closure) calls loss.backward().
    if closure is None:
        raise ValueError(f"{program} evaluates the objective at another point ({op}): call step(closure) with a "
                         f"closure that zeroes the gradients, computes the loss, calls loss.backward() and returns it")
    saved = [(p.detach().clone(), p.grad) for p in params]
    for p, x in zip(params, points):
        p.copy_(x)
        p.grad = None   # a fresh buffer: the closure's zero_grad must not touch the gradients the step holds
    with torch.enable_grad():
        loss = closure()
    out = [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]
    for p, (w, g) in zip(params, saved):
        p.copy_(w)
        p.grad = g
    return torch.as_tensor(loss).detach(), out


def _grad_at(program, closure, params, points):
    # The gradient of the closure's loss at the parameters moved to the points, per parameter.
    return _closure_at(program, "grad_at", closure, params, points)[1]


def _loss_at(program, closure, params, points):
    # The closure's loss at the parameters moved to the points: one 0-d tensor.
    return _closure_at(program, "loss_at", closure, params, points)[0]
