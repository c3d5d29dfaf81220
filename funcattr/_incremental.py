"""Exact incremental occlusion (Krypton: Nakandala et al., SIGMOD 2019).

An occlusion window changes a small box of the input; through a convolution or a pooling
the changed region grows by the op's receptive field, and position-wise ops keep it. So
instead of evaluating every window on full maps, the model's ``torch.fx`` graph is run node
by node on **patches**: per node, every window of a chunk holds only a box ⊇ the region
where its activation differs from the unoccluded one (the same box size for all windows, so
the patches of a chunk are one batch). A convolution gathers, for each window, its input box
with the halo it needs — from the window's patch where the box overlaps it, from the cached
unoccluded activation elsewhere, and zeros (−inf for max pooling) outside the map — and runs
once on all gathered boxes. Once a box covers ``FULL_AT`` of its map, or at an op whose
locality is unknown (global pooling, flatten, linear, ...), the window's full map is
materialized (the cached map with the patch pasted in) and the rest of the graph runs
exactly as the plain path does.

The result equals plain occlusion up to float rounding: every value in a box is computed by
the same op from the same inputs; only the shapes the kernels see differ::

    scores(c, plans, bases, incremental)   # [1 + n, B, K] scores (item 0: unoccluded), or None

Qualifies: a score function built by ``fa.target``/``fa.outputs`` on an ``nn.Module`` with
one input ``[B, C, H, W]`` and no extra arguments, traceable by ``torch.fx`` (no
data-dependent control flow), whose in-place ops are known, without forward hooks; and the
traced graph must reproduce the model's own scores on the unoccluded input. ``None``
(the default) also requires the plan to save enough multiply-adds to pay for its gathers.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import threading
import weakref
from typing import Any

import torch
import torch.fx as fx
from torch import Tensor, nn

from . import _fold
from ._autodiff import evaluate
from ._locality import NotQualified, Op, classify

__all__ = ["scores", "check_flag", "NotQualified", "flops", "FULL_AT"]

# A patch whose box covers at least this fraction of its map becomes a full map: above it a
# patch convolution plus its gathers cost about as much as the plain convolution (try others
# with ``python -m benchmarks.incremental --full-at F``).
FULL_AT = 0.5
# ``incremental=None`` takes the incremental path when it saves at least this share of the
# convolution/linear multiply-adds, and at least MIN_SAVED_MACS of them per call (below that
# the per-node gathers and Python work of a chunk cost more than they save).
MIN_SAVED_SHARE = 0.25
MIN_SAVED_MACS = 2e8


def check_flag(incremental: Any) -> None:
    if incremental not in (None, True, False):
        raise ValueError(f"incremental must be None (decide), True (demand) or False (off), got {incremental!r}")


# --------------------------------------------------------------------------- the program


@dataclasses.dataclass(frozen=True, eq=False)
class _Program:
    """A traced model: nodes in order, their ops, which depend on the input, last uses."""

    model: nn.Module
    nodes: tuple[fx.Node, ...]
    ops: dict[fx.Node, Op]
    live: frozenset[fx.Node]  # nodes whose value depends on the input
    last_use: dict[fx.Node, int]  # position of a node's last user
    layouts: dict = dataclasses.field(default_factory=dict)


_programs: "weakref.WeakKeyDictionary[nn.Module, tuple[Any, Any]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _signature(model: nn.Module) -> tuple:
    """What a cached trace depends on: every module's identity, mode and configuration."""
    return tuple((n, id(m), type(m), m.training, m.extra_repr()) for n, m in model.named_modules()) + (
        getattr(model.forward, "__func__", model.forward),
    )


def _fetch(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _program(model: nn.Module) -> _Program:
    sig = _signature(model)
    with _lock:
        hit = _programs.get(model)
    if hit is not None and hit[0] == sig:
        if isinstance(hit[1], NotQualified):
            raise hit[1]
        return hit[1]
    try:
        prog = _build(model)
    except NotQualified as err:
        with _lock:
            _programs[model] = (sig, err)
        raise
    with _lock:
        _programs[model] = (sig, prog)
    return prog


def _build(model: nn.Module) -> _Program:
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # noqa: BLE001 - any tracing failure means "not traceable"
        raise NotQualified(f"torch.fx cannot trace it ({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    nodes = tuple(gm.graph.nodes)
    ph = [n for n in nodes if n.op == "placeholder"]
    if len(ph) != 1:
        raise NotQualified(f"its forward takes {len(ph)} arguments; incremental occlusion needs exactly one input")
    modules = dict(model.named_modules())
    live: set[fx.Node] = set(ph)
    ops: dict[fx.Node, Op] = {}

    def const(a):
        if isinstance(a, fx.Node) and a.op == "get_attr":
            return _fetch(model, a.target)
        return None

    for n in nodes:
        if n.op in ("call_module", "call_function", "call_method"):
            ops[n] = classify(n, modules, const)
            if any(a in live for a in n.all_input_nodes):
                live.add(n)
        elif n.op == "output" and not isinstance(n.args[0], fx.Node):
            raise NotQualified("its forward returns a structure; fa.target/fa.outputs need one tensor")
    order = {n: i for i, n in enumerate(nodes)}
    for n in nodes:
        if n in ops and ops[n].inplace:
            _run_out_of_place(n, ops, order)
    last_use = {n: max((order[u] for u in n.users), default=order[n]) for n in nodes}
    return _Program(model, nodes, ops, frozenset(live), last_use)


def _fresh(op: Op | None) -> bool:
    """The op returns a new tensor (never a view of an argument)."""
    return op is not None and not op.alias and (op.kind in ("window", "point") or op.macs > 0)


def _run_out_of_place(n: fx.Node, ops: dict[fx.Node, Op], order: dict) -> None:
    """An in-place op ``n`` on ``a`` is run out of place, and the reads of ``a`` after it read
    ``n`` instead. That is the eager semantics when ``a`` is a fresh result and no view of it
    was taken before the mutation (a view would see the new values)."""
    what = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
    a = n.args[0] if n.args else None
    if not isinstance(a, fx.Node) or not _fresh(ops.get(a)):
        raise NotQualified(f"'{what}' modifies in place a value that is not a fresh result (an input, a parameter or a view)")
    before = [u for u in a.users if order[u] < order[n]]
    if any(not _fresh(ops.get(u)) and ops.get(u, Op("any", None)).kind != "meta" for u in before):
        raise NotQualified(f"'{what}' modifies in place a value of which a view was taken before")
    for u in list(a.users):
        if order[u] > order[n]:
            u.replace_input_with(a, n)


# --------------------------------------------------------------------------- the layout


@dataclasses.dataclass(frozen=True, eq=False)
class _Geo:
    """Per window (tensors ``[n]``), along h and w: the changed interval ``lo..hi-1`` and the
    start of a box of size ``P`` that contains it (inside the ``H×W`` map)."""

    H: int
    W: int
    P: tuple[int, int]
    lo: tuple[Tensor, Tensor]
    hi: tuple[Tensor, Tensor]
    st: tuple[Tensor, Tensor]

    def fraction(self) -> float:
        return self.P[0] * self.P[1] / (self.H * self.W)

    def same_box(self, other: "_Geo") -> bool:
        return self is other or (
            self.P == other.P and all(torch.equal(a, b) for a, b in zip(self.st, other.st))
        )


def _geo(H: int, W: int, lo, hi) -> _Geo:
    P, st = [], []
    for D, l, h in zip((H, W), lo, hi):
        p = max(1, int((h - l).max()))
        P.append(p)
        st.append(l.clamp(max=D - p).clamp(min=0))
    return _Geo(H, W, tuple(P), tuple(lo), tuple(hi), tuple(st))


def _through(g: _Geo, op: Op, Hout: int, Wout: int) -> _Geo:
    """The changed region after a window op."""
    lo, hi = [], []
    empty = torch.zeros_like(g.lo[0], dtype=torch.bool)
    for l, h, (k, s, p), D in zip(g.lo, g.hi, op.geo, (Hout, Wout)):
        ol = torch.div(l + p - k + 1 + s - 1, s, rounding_mode="floor").clamp(min=0)  # ceil((l + p - k + 1) / s)
        oh = (torch.div(h - 1 + p, s, rounding_mode="floor") + 1).clamp(max=D)
        empty = empty | (h <= l) | (oh <= ol)
        lo.append(ol)
        hi.append(oh)
    return _geo(Hout, Wout, [torch.where(empty, 0, v) for v in lo], [torch.where(empty, 0, v) for v in hi])


def _union(gs: list[_Geo]) -> _Geo:
    if len(gs) == 1:
        return gs[0]
    empty = [(g.hi[0] <= g.lo[0]) | (g.hi[1] <= g.lo[1]) for g in gs]
    big = max(gs[0].H, gs[0].W) + 1
    lo = [torch.stack([torch.where(e, big, g.lo[d]) for g, e in zip(gs, empty)]).min(0).values for d in range(2)]
    hi = [torch.stack([torch.where(e, 0, g.hi[d]) for g, e in zip(gs, empty)]).max(0).values for d in range(2)]
    none = torch.stack(empty).all(0)
    return _geo(gs[0].H, gs[0].W, [torch.where(none, 0, v) for v in lo], [torch.where(none, 0, v) for v in hi])


@dataclasses.dataclass(frozen=True, eq=False)
class _Layout:
    """For one input shape and window plan: each node's state (``const``, ``patch``,
    ``full``, ``meta``), the patches' geometry, and which unoccluded maps the chunks read."""

    state: dict[fx.Node, str]
    geo: dict[fx.Node, _Geo]
    gather: frozenset[fx.Node]  # patch nodes whose unoccluded map is kept (gathered from)
    channels: Tensor  # bool [n, C]: the channels each window covers
    macs: list[tuple[str, str, int, int]]  # (node, op, plain, incremental) multiply-adds per row


def _uniform(v) -> bool:
    """A constant operand that broadcasts the same value over every spatial position."""
    if not isinstance(v, Tensor):
        return True
    return (v.dim() < 1 or v.shape[-1] == 1) and (v.dim() < 2 or v.shape[-2] == 1)


def _layout(prog: _Program, plan, shapes: dict, consts: dict, device) -> _Layout:
    n = plan.n
    nc, nh, nw = plan.counts
    ids = torch.arange(n, device=device)
    jc, jh, jw = ids // (nh * nw), (ids // nw) % nh, ids % nw
    lo, hi = [], []
    for iv, j in ((plan.intervals[1], jh), (plan.intervals[2], jw)):
        first = iv.long().argmax(1)
        lo.append(first[j])
        hi.append((first + iv.sum(1))[j])
    state: dict[fx.Node, str] = {}
    geo: dict[fx.Node, _Geo] = {}
    gather: set[fx.Node] = set()
    macs = []
    for node in prog.nodes:
        if node.op == "output":
            a = node.args[0]
            if state.get(a) == "patch":
                gather.add(a)
            continue
        if node not in prog.live:
            state[node] = "const"
            continue
        shape = shapes.get(node)
        if node.op == "placeholder":
            g = _geo(shape[2], shape[3], lo, hi)
            state[node] = "patch" if g.fraction() < FULL_AT else "full"
            if state[node] == "patch":
                geo[node] = g
            continue
        op = prog.ops[node]
        args = [a for a in node.all_input_nodes if a in prog.live]
        in_states = {state[a] for a in args}
        s = "full"
        if op.kind == "meta":
            s = "meta"
        elif op.kind == "window" and in_states == {"patch"} and len(shape) == 4 and node.args[0] in geo:
            g = _through(geo[node.args[0]], op, shape[2], shape[3])
            if g.fraction() < FULL_AT:
                s, geo[node] = "patch", g
                gather.add(node.args[0])
        elif op.kind == "point" and in_states == {"patch"} and _aligned(node, op, args, shapes, consts, shape):
            g = _union([geo[a] for a in args])
            if g.fraction() < FULL_AT:
                s, geo[node] = "patch", g
                gather.update(a for a in args if not geo[a].same_box(g))
        if s == "full":
            gather.update(a for a in args if state[a] == "patch")
        state[node] = s
        if op.macs:
            per = op.macs * (shape[2] * shape[3] if op.kind == "window" else 1)
            inc = op.macs * geo[node].P[0] * geo[node].P[1] if s == "patch" else per
            macs.append((node.name, node.target if isinstance(node.target, str) else node.target.__name__, per, inc))
    channels = plan.intervals[0][jc]
    return _Layout(state, geo, frozenset(gather), channels, macs)


def _aligned(node, op: Op, args, shapes, consts, shape) -> bool:
    """A point op can run on patches: its live operands are 4-D maps of the output's spatial
    size, its constant operands are spatially uniform, and a cat joins channels."""
    if len(shape) != 4 or any(len(shapes[a]) != 4 or shapes[a][2:] != shape[2:] for a in args):
        return False
    if op.cat_dim is not None and op.cat_dim not in (1, -3):
        return False
    if op.channelwise:
        return True
    others = [a for a in node.all_input_nodes if a not in args]
    return all(_uniform(consts.get(a)) for a in others)


# --------------------------------------------------------------------------- evaluation


def _rows(t: Tensor) -> Tensor:
    """``[N, C, H, W]`` → ``[N·H·W, C]`` (a view when ``t`` is channels-last)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


class _Source:
    """What boxes of one node are gathered from: its unoccluded map as rows ``[B·H·W, C]``,
    a zero row, a −inf row, then the patch rows of the chunk being evaluated. One buffer per
    call, so a chunk writes only its patch rows (never a copy of the map)."""

    def __init__(self, base: Tensor, spare: int):
        self.NB, C = base.shape
        self.buf = base.new_empty(self.NB + 2 + spare, C)
        self.buf[: self.NB] = base
        self.buf[self.NB] = 0
        self.buf[self.NB + 1] = -math.inf
        self.owner = None  # the patch tensor whose rows are in the buffer

    def fill(self, vals: Tensor) -> Tensor:
        if self.owner is not None and self.owner() is vals:
            return self.buf
        rows = _rows(vals)
        end = self.NB + 2 + rows.shape[0]
        if end > self.buf.shape[0]:
            head = self.buf[: self.NB + 2]
            self.buf = head.new_empty(end, head.shape[1])
            self.buf[: self.NB + 2] = head
        self.buf[self.NB + 2 : end] = rows
        self.owner = weakref.ref(vals)
        return self.buf


def _gather(src: _Source, B: int, g: _Geo, vals: Tensor | None, lo: int, hi: int, a, Q, pad: float) -> Tensor:
    """Boxes ``[m·B, C, Qh, Qw]`` starting at ``a = (a_h, a_w)`` (``[m]`` each) of each
    window's map: the window's patch ``vals`` where the box overlaps it, the unoccluded map
    elsewhere, ``pad`` (0 or −inf) outside the map."""
    m, H, W, dev = hi - lo, g.H, g.W, src.buf.device
    yy = a[0].view(m, 1) + torch.arange(Q[0], device=dev)
    xx = a[1].view(m, 1) + torch.arange(Q[1], device=dev)
    rows = torch.arange(B, device=dev).view(1, B, 1, 1)
    idx = rows * (H * W) + (yy.clamp(0, H - 1) * W).view(m, 1, Q[0], 1) + xx.clamp(0, W - 1).view(m, 1, 1, Q[1])
    NB = src.NB
    if vals is not None:
        buf = src.fill(vals)
        (Ph, Pw), (sh, sw) = g.P, g.st
        ph, pw = yy - sh[lo:hi].view(m, 1), xx - sw[lo:hi].view(m, 1)
        inside = (((ph >= 0) & (ph < Ph)).view(m, 1, Q[0], 1)) & (((pw >= 0) & (pw < Pw)).view(m, 1, 1, Q[1]))
        r = torch.arange(m, device=dev).view(m, 1, 1, 1) * B + rows
        pidx = NB + 2 + (r * Ph + ph.clamp(0, Ph - 1).view(m, 1, Q[0], 1)) * Pw + pw.clamp(0, Pw - 1).view(m, 1, 1, Q[1])
        idx = torch.where(inside, pidx, idx)
    else:
        buf = src.buf
    ok = (((yy >= 0) & (yy < H)).view(m, 1, Q[0], 1)) & (((xx >= 0) & (xx < W)).view(m, 1, 1, Q[1]))
    idx = torch.where(ok, idx, NB if pad == 0 else NB + 1)
    return buf.index_select(0, idx.reshape(-1)).view(m * B, Q[0], Q[1], -1).permute(0, 3, 1, 2)


class _Chunk:
    """Evaluates windows ``lo..hi-1`` on patches (see the module docstring)."""

    def __init__(self, prog: _Program, lay: _Layout, kept: dict, plan, x: Tensor, baseline: Tensor, lo: int, hi: int):
        self.prog, self.lay, self.kept, self.B = prog, lay, kept, x.shape[0]
        self.plan, self.x, self.baseline, self.lo, self.hi = plan, x, baseline, lo, hi
        self.full: dict[fx.Node, Tensor] = {}

    def run(self) -> Tensor:
        env: dict[fx.Node, Any] = {}
        for i, node in enumerate(self.prog.nodes):
            if node.op == "output":
                return self.value(node.args[0], env, "full")
            st = self.lay.state[node]
            if st == "const":
                env[node] = self.kept[node]
            elif node.op == "placeholder":
                env[node] = self.input() if st == "patch" else self.occluded()
            else:
                env[node] = self.node(node, st, env)
            for a in node.all_input_nodes:
                if self.prog.last_use[a] <= i and self.lay.state[a] != "const":
                    env.pop(a, None)
                    self.full.pop(a, None)
        raise AssertionError("graph without output")

    def box(self, node, env, g: _Geo) -> Tensor:
        """A live operand on the box of ``g``: its own values when the boxes agree."""
        own = self.lay.geo[node]
        if own.same_box(g):
            return env[node]
        st = tuple(s[self.lo : self.hi] for s in g.st)
        return _gather(self.kept[node], self.B, own, env[node], self.lo, self.hi, st, g.P, 0.0)

    def value(self, a, env, how: str):
        """Argument ``a`` for an op evaluated ``how`` ("full" maps or "meta" shapes)."""
        if not isinstance(a, fx.Node):
            return a
        st = self.lay.state[a]
        if st != "patch":
            return env[a]
        if how == "meta":
            shape = (self.B * (self.hi - self.lo),) + tuple(self.kept["shape"][a][1:])
            return torch.empty(shape, dtype=env[a].dtype, device="meta")
        if a not in self.full:  # paste the patches into copies of the unoccluded map
            g = self.lay.geo[a]
            zero = torch.zeros(self.hi - self.lo, dtype=torch.long, device=self.x.device)
            self.full[a] = _gather(self.kept[a], self.B, g, env[a], self.lo, self.hi, (zero, zero), (g.H, g.W), 0.0)
        return self.full[a]

    def node(self, node, st: str, env):
        op = self.prog.ops[node]
        if st == "patch" and op.kind == "window":
            src = node.args[0]
            g, gi = self.lay.geo[node], self.lay.geo[src]
            a = tuple(s[self.lo : self.hi] * k[1] - k[2] for s, k in zip(g.st, op.geo))
            Q = tuple((p - 1) * k[1] + k[0] for p, k in zip(g.P, op.geo))
            return op.patch(_gather(self.kept[src], self.B, gi, env[src], self.lo, self.hi, a, Q, op.pad))
        if st == "patch":
            g = self.lay.geo[node]
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: self.box(a, env, g) if a in self.prog.live else env[a])
            return op.call(*args, **kwargs)
        how = "meta" if st == "meta" else "full"
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: self.value(a, env, how))
        return op.call(*args, **kwargs)

    def input(self) -> Tensor:
        """The occluded input on each window's box."""
        g, lo, hi, B = self.lay.geo[self.prog.nodes[0]], self.lo, self.hi, self.B
        m = hi - lo
        st = tuple(s[lo:hi] for s in g.st)
        xv = _gather(self.kept["x_rows"], B, g, None, lo, hi, st, g.P, 0.0)
        if self.baseline.numel() == 1:
            bv = self.baseline.reshape(())
        else:
            bv = _gather(self.kept["baseline_rows"], B, g, None, lo, hi, st, g.P, 0.0)
        inside = [
            (s.view(m, 1) + torch.arange(P, device=s.device) >= l[lo:hi].view(m, 1))
            & (s.view(m, 1) + torch.arange(P, device=s.device) < h[lo:hi].view(m, 1))
            for s, P, l, h in zip(st, g.P, g.lo, g.hi)
        ]
        mask = self.lay.channels[lo:hi].view(m, 1, -1, 1, 1) & inside[0].view(m, 1, 1, -1, 1) & inside[1].view(m, 1, 1, 1, -1)
        if bv.dim():
            bv = bv.view(m, B, *bv.shape[1:])
        out = torch.where(mask, bv, xv.view(m, B, *xv.shape[1:]))
        return out.reshape(m * B, *xv.shape[1:])

    def occluded(self) -> Tensor:
        p = self.plan.perturb(self.x, self.baseline, self.lo, self.hi)
        return p.reshape(-1, *p.shape[2:])


def _forward(prog: _Program, x: Tensor, keep) -> tuple[Tensor, dict]:
    """The plain forward of the traced graph on ``x``, keeping the constants and the values of
    the nodes in ``keep`` (as rows), and every tensor's shape (under ``"shape"``)."""
    env: dict[fx.Node, Any] = {}
    kept: dict[Any, Any] = {"shape": {}}
    for i, node in enumerate(prog.nodes):
        if node.op == "output":
            return env[node.args[0]], kept
        if node.op == "placeholder":
            v = x
        elif node.op == "get_attr":
            v = _fetch(prog.model, node.target)
        else:
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: env[a])
            v = prog.ops[node].call(*args, **kwargs)
        env[node] = v
        if isinstance(v, Tensor):
            kept["shape"][node] = tuple(v.shape)
        if node not in prog.live:
            kept[node] = v
        elif node in keep:
            kept[node] = _Source(_rows(v), keep[node])
        for a in node.all_input_nodes:
            if prog.last_use[a] <= i:
                env.pop(a, None)
    raise AssertionError("graph without output")


# --------------------------------------------------------------------------- the entry point


def _passthrough(out, *args, **kwargs):
    return out


def _qualify(c, plans) -> tuple[_Program, Any]:
    from ._scores import Outputs, Target  # the score functions whose model we may trace

    f = c.f
    if not isinstance(f, (Target, Outputs)):
        raise NotQualified("f is not built by fa.target(model, ...) or fa.outputs(model, ...)")
    if not isinstance(f.model, nn.Module):
        raise NotQualified(f"the model is a {type(f.model).__name__}, not an nn.Module")
    if len(c.xs) != 1 or c.xs[0].dim() != 4 or not c.xs[0].is_floating_point():
        raise NotQualified("it needs one floating-point input of shape [B, C, H, W]")
    if c.args or set(c.kwargs) - {"target"}:
        raise NotQualified("the call passes extra arguments to the model")
    from torch.nn.modules import module as _m

    from ._sites import _coupled

    def foreign(hooks):  # funcattr's own call guard (``_sites.guard``) watches module calls only
        return any(getattr(h, "__module__", None) != _coupled.__module__ for h in hooks.values())

    if foreign(_m._global_forward_hooks) or foreign(_m._global_forward_pre_hooks):
        raise NotQualified("global forward hooks are registered")
    for name, mod in f.model.named_modules():  # hooks and modes come and go: checked on every call
        if mod._forward_hooks or mod._forward_pre_hooks:
            raise NotQualified(f"module '{name}' has forward hooks, which must see the model's real activations")
        if _coupled(mod):
            raise NotQualified(f"module '{name}' ({type(mod).__name__}) couples the examples of a batch (train mode)")
    return _program(f.model), c.f


def scores(c, xs, plans, bases, incremental) -> Tensor | None:
    """Scores ``[1 + n, B, K]`` of the unoccluded input ``xs`` (item 0) and of each window,
    computed incrementally; None when the call does not qualify (``incremental=None``) or would
    save too little. ``incremental=True`` raises a ValueError naming why it does not qualify."""
    if incremental is False:
        return None
    try:
        prog, f = _qualify(c, plans)
        x, plan, base = xs[0], plans[0], bases[0]
        windows = (plan.counts, tuple((t.shape[1], tuple(t[:, 0].tolist())) for t in plan.cells))  # sizes, origins
        key = (tuple(x.shape[1:]), x.device, x.dtype, windows)
        lay = prog.layouts.get(key)
        if lay is None:
            with _autocast(c):
                _, probe = _forward(prog, x[:1], {})
            lay = _layout(prog, plan, probe["shape"], probe, x.device)
            if len(prog.layouts) > 16:
                prog.layouts.clear()
            prog.layouts[key] = lay
    except NotQualified as err:
        if incremental:
            raise ValueError(f"incremental occlusion does not apply to this call: {err}") from None
        return None
    plain = sum(p for _, _, p, _ in lay.macs)
    saved = plain - sum(i for _, _, _, i in lay.macs)
    if incremental and not any(st == "patch" for n, st in lay.state.items() if n.op != "placeholder"):
        raise ValueError(f"incremental occlusion does not apply to this call: {_why_full(prog, lay)}")
    if incremental is None and (saved < MIN_SAVED_SHARE * plain or saved * plan.n * x.shape[0] < MIN_SAVED_MACS):
        return None
    spare = {n: x.shape[0] * g.P[0] * g.P[1] for n, g in lay.geo.items()}  # one window's patch rows
    with _autocast(c):
        out, kept = _forward(prog, x, {n: spare.get(n, 0) for n in lay.gather})
    head = copy.copy(f)  # the score function on the model's output: selects targets/classes
    head.model = _passthrough

    def scores_of(model_out: Tensor, m: int) -> Tensor:
        a, kw = c.tiled(m * c.B)
        return _fold.unfold(evaluate(head, (model_out,), a, kw), m)

    with _autocast(c):
        s0 = c.scores(xs, 1)  # the model itself on the unoccluded input (plain occlusion's item 0)
        mine = scores_of(out, 1)
    scale = s0.abs().max().item()
    if not torch.allclose(mine.to(s0.dtype), s0, rtol=1e-4, atol=1e-4 * max(scale, 1e-30)):
        if incremental:
            raise ValueError(
                "incremental occlusion does not apply to this call: the traced graph of the model does not "
                f"reproduce its scores (max difference {(mine - s0).abs().max().item():.3g})"
            )
        return None
    kept["x_rows"] = _Source(_rows(x), 0)
    if base.numel() != 1:
        kept["baseline_rows"] = _Source(_rows(base.expand_as(x)), 0)

    def step(lo, hi):
        out = _Chunk(prog, lay, kept, plan, x, base, lo, hi).run()
        s = scores_of(out, hi - lo)
        return s.to(torch.promote_types(s.dtype, torch.float32))

    s = c.run(step, plan.n, "occlusion-incremental", windows, combine="cat", desc="occlusion")
    return torch.cat([s0.to(s.dtype), s])


def _why_full(prog: _Program, lay: _Layout) -> str:
    """Why no op runs on patches: the first op on the occluded input and what stops it."""
    x = prog.nodes[0]
    if lay.state[x] == "full":
        return f"the window covers at least {FULL_AT:.0%} of the input, so every window changes most of it"
    for n in prog.nodes:
        if x in n.all_input_nodes and n.op != "output":
            name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
            op = prog.ops[n]
            if op.kind in ("window", "point"):
                return f"the first op on the input, '{name}', changes at least {FULL_AT:.0%} of its output"
            return f"the first op on the input, '{name}', is not one whose locality funcattr knows (conv, pooling, eval batch norm, elementwise)"
    return "the model's output does not depend on its input"


def _autocast(c):
    import contextlib

    if c.opts.precision == "bf16":
        return torch.autocast(device_type=c.device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def flops(model: nn.Module, shape, window, stride) -> list[tuple[str, str, int, int]]:
    """Per convolution/linear node: ``(node, op, plain, incremental)`` multiply-adds per
    window and example for ``model`` on inputs ``[1, *shape]`` (for benchmarks and reports)."""
    from ._windows import windows

    prog = _program(model)
    x = torch.zeros(1, *shape)
    plan = windows(tuple(shape), tuple(window), tuple(stride), x.device)
    with torch.no_grad():
        _, probe = _forward(prog, x, {})
        return _layout(prog, plan, probe["shape"], probe, x.device).macs
