"""``Explorer``: models, classes, data and features → the JSON API behind the page, a local server
for it, and a notebook view."""

from __future__ import annotations

import base64
import threading
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

import funcattr as fa

from . import _engine
from ._data import Store
from ._features import Feature, image
from ._methods import BadRequest, Ctx, catalog, validate

__all__ = ["Explorer"]

MAX_COUNT = 16  # examples per page
MAX_COMPARE = 8  # methods side by side
TOPK = 4  # predictions shown per example and model (Captum Insights: min(4, classes))


def _softmax(out: torch.Tensor) -> torch.Tensor:
    return out.softmax(1) if out.dim() == 2 and out.shape[1] > 1 else out


def _last_conv(model: Any):
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)] if isinstance(model, nn.Module) else []
    return convs[-1] if convs else None


def _colormaps() -> dict:
    """256-entry RGB tables of the colormaps ``fa.viz`` uses per sign (Captum's)."""
    import matplotlib
    from matplotlib.colors import LinearSegmentedColormap

    cmaps = {
        "all": LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]),
        "positive": matplotlib.colormaps["Greens"],
        "negative": matplotlib.colormaps["Reds"],
        "absolute_value": matplotlib.colormaps["Blues"],
    }
    out = {}
    for sign, cm in cmaps.items():
        rgb = (np.asarray(cm(np.linspace(0, 1, 256)))[:, :3] * 255).round().astype(np.uint8)
        out[sign] = base64.b64encode(rgb.tobytes()).decode("ascii")
    return out


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BadRequest(f"'{name}' must be a whole number from {lo} to {hi}, got {v!r}")
    return v


def _fields(request: Any, fields: dict, defaults: dict) -> dict:
    if request is None:
        request = {}
    if not isinstance(request, dict):
        raise BadRequest("the request body must be a JSON object")
    request = {**request, **fields}
    unknown = [k for k in request if k not in defaults]
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r} (fields: {', '.join(defaults)})")
    return {**defaults, **request}


class Explorer:
    """An interactive explorer of attributions (Captum Insights' successor)::

        from funcattr import insights
        ex = insights.Explorer(model, classes=zoo.CLASSES, data=[(x, labels, masks)])
        url = ex.serve()          # http://127.0.0.1:PORT/ ; returns at once
        ex.render()               # or: the page inline in a notebook
        ex.stop()

    ``models``: one model or a list (shown side by side; same inputs). ``data``: an iterable of
    batches ``(inputs, labels)`` or ``(inputs, labels, masks)`` (or dicts with those keys and
    ``args`` for extra model arguments); ``inputs`` is a Tensor or a tuple with one Tensor per
    feature; ``masks[B, H, W]`` (the object's pixels) add the localization scores. ``features``:
    :func:`image` (the default), :func:`text`, :func:`tabular`, one per model input.
    ``score``: applied to the outputs for the displayed predictions and the faithfulness curves
    (``"softmax"``, None, or a callable). ``target``: attribute to the ``"predicted"`` class
    (Captum's default) or the true ``"label"``; a click on a class re-attributes to it.
    ``layers``: the layer of each model for GradCAM/CAM (default: its last ``Conv2d``; CAM needs
    the layer whose output feeds the global average pool).
    ``curve_steps``: points of each example's deletion and insertion curves (the faithfulness
    scores). A request is refused (HTTP 400) when it needs more than ``max_evaluations`` model rows or,
    at the model's measured speed, more than about ``max_seconds``.

    The same JSON the page gets is available in Python: :meth:`fetch`, :meth:`attribute`,
    :meth:`compare`, :meth:`init`.
    """

    def __init__(self, models: Any, classes: Sequence[str] | None = None, data: Iterable = (),
                 features: Sequence[Feature] | Feature | None = None, score: Callable | str | None = "softmax", *,
                 names: Sequence[str] | None = None, layers: Any = None, target: str = "predicted",
                 max_examples: int = 500, max_evaluations: int = 20_000, max_seconds: float | None = 60.0,
                 curve_steps: int = 10,
                 device: str | torch.device | None = None, title: str = "funcattr insights"):
        models = list(models) if isinstance(models, (list, tuple)) else [models]
        if not models or not all(callable(m) for m in models):
            raise TypeError("models must be a model (a callable) or a non-empty list of them")
        features = [image()] if features is None else [features] if isinstance(features, Feature) else list(features)
        if not features or not all(isinstance(f, Feature) for f in features):
            raise TypeError("features must be insights.image(...), insights.text(...) or insights.tabular(...) objects")
        if score == "softmax":
            score = _softmax
        elif score is not None and not callable(score):
            raise TypeError(f"score must be 'softmax', None or a callable, got {score!r}")
        if max_seconds is not None and (isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or max_seconds <= 0):
            raise ValueError(f"max_seconds must be a positive number or None, got {max_seconds!r}")
        if target not in ("predicted", "label"):
            raise ValueError(f"target must be 'predicted' or 'label', got {target!r}")
        for name, v in (("max_examples", max_examples), ("max_evaluations", max_evaluations), ("curve_steps", curve_steps)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if layers is None:
            layers = [_last_conv(m) for m in models]
        elif not isinstance(layers, (list, tuple)):  # one module: for the model that holds it
            layers = [layers if isinstance(m, nn.Module) and any(layers is x for x in m.modules()) else _last_conv(m)
                      for m in models]
        if len(layers) != len(models):
            raise ValueError(f"{len(layers)} layers for {len(models)} models")
        if names is None:
            base = [type(m).__name__ for m in models]
            names = [b if base.count(b) == 1 else f"{b} #{i}" for i, b in enumerate(base)]
        if len(names) != len(models):
            raise ValueError(f"{len(names)} names for {len(models)} models")
        if device is None:
            p = next((p for m in models if isinstance(m, nn.Module) for p in m.parameters()), None)
            device = p.device if p is not None else torch.device("cpu")
        self.models = tuple(models)
        self.names = tuple(str(n) for n in names)
        self.classes = None if classes is None else tuple(str(c) for c in classes)
        self.features = tuple(features)
        self.layers = tuple(layers)
        self.target = target
        self.max_evaluations = max_evaluations
        self.max_seconds = max_seconds
        self.curve_steps = curve_steps
        self.title = title
        self.store = Store(data, self.features, self.models, score, torch.device(device), max_examples)
        self._lock = threading.Lock()  # one computation at a time: a page already uses every core
        self._catalog = None
        self._background: dict[int, tuple] = {}
        self._server = None

    # ------------------------------------------------------------------ pieces

    @property
    def methods(self) -> dict:
        """The available methods by id (sized to the data's first example)."""
        if self._catalog is None:
            first = self.store.first()
            xs = self.store.model_inputs(tuple(x[:1] for x in first.raw))
            self._shapes = tuple(tuple(x.shape[1:]) for x in xs)
            self._catalog = catalog(tuple(f.kind for f in self.features), self._shapes, any(l is not None for l in self.layers))
        return self._catalog

    def background(self, n: int) -> tuple:
        """The first ``n`` examples' model inputs: the baseline distribution of the SHAP methods."""
        if n not in self._background:
            self.store.ensure(n - 1)
            k = min(n, self.store.count)
            _, xs, _ = self.store.gather(list(range(k)))
            self._background[n] = xs
        b = self._background[n]
        return b[0] if len(b) == 1 else b

    def class_name(self, c: int) -> str:
        return self.classes[c] if self.classes is not None and 0 <= c < len(self.classes) else f"class {c}"

    def _n_classes(self) -> int:
        return self.store.scores(0, self.store.resolve(0)).numel()

    def _class_index(self, c: Any) -> int:
        n = self._n_classes()
        if isinstance(c, str) and self.classes is not None and c in self.classes:
            return self.classes.index(c)
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < max(n, 2):
            raise BadRequest(f"unknown class {c!r}: give a class name or an index from 0 to {max(n, 2) - 1}")
        return c

    def _predictions(self, i: int, m: int) -> list[dict]:
        s = self.store.scores(m, i)
        if s.numel() == 1:  # one score: the class is the rounded score (Captum)
            c = int(min(max(round(float(s[0])), 0), max(len(self.classes or ()) - 1, 1)))
            return [{"index": c, "name": self.class_name(c), "score": float(s[0])}]
        top = s.topk(min(TOPK, s.numel()))
        return [{"index": int(c), "name": self.class_name(int(c)), "score": float(v)} for v, c in zip(top.values, top.indices)]

    def _label(self, i: int) -> dict | None:
        y = self.store.label(i)
        return None if y is None else {"index": y, "name": self.class_name(y)}

    def _target(self, i: int, m: int, mode: str) -> int:
        y = self.store.label(i)
        if mode == "label" and y is not None:
            return y
        return self._predictions(i, m)[0]["index"]

    def _method(self, method: Any, args: Any):
        return validate(self.methods, method, args)

    # ------------------------------------------------------------------ the JSON API

    def init(self) -> dict:
        """What the page needs first: classes, models, features, methods and their arguments."""
        with self._lock:
            methods = self.methods
            n = self._n_classes()
            first = self.store.first()
            return {
                "title": self.title,
                "classes": [self.class_name(c) for c in range(max(n, len(self.classes or ())))],
                "models": list(self.names),
                "features": [f.describe() for f in self.features],
                "methods": [m.describe() for m in methods.values()],
                "default_method": "integrated_gradients",
                "target": self.target,
                "has_labels": any(v is not None for v in first.labels),
                "has_masks": first.masks is not None,
                "limits": {"count": MAX_COUNT, "compare": MAX_COMPARE, "evaluations": self.max_evaluations},
                "colormaps": _colormaps(),
                "version": fa.__version__,
            }

    def fetch(self, request: dict | None = None, **fields) -> dict:
        """The next ``count`` examples from ``offset`` that pass the filters, attributed by
        ``method`` for every model in one batched call (the page's Fetch button)::

            ex.fetch(method="integrated_gradients", args={"steps": 50}, count=4, prediction="incorrect")
        """
        r = _fields(request, fields, {
            "offset": 0, "count": 4, "classes": [], "prediction": "all", "method": "integrated_gradients",
            "args": {}, "target": self.target, "targets": {}, "scores": True})
        offset = _int(r["offset"], "offset", 0, 10**9)
        count = _int(r["count"], "count", 1, MAX_COUNT)
        if r["prediction"] not in ("all", "correct", "incorrect"):
            raise BadRequest(f"'prediction' must be all, correct or incorrect, got {r['prediction']!r}")
        if r["target"] not in ("predicted", "label"):
            raise BadRequest(f"'target' must be predicted or label, got {r['target']!r}")
        if not isinstance(r["classes"], list) or len(r["classes"]) > 10_000:
            raise BadRequest("'classes' must be a list of class names or indices")
        if not isinstance(r["targets"], dict) or len(r["targets"]) > MAX_COUNT * len(self.models):
            raise BadRequest("'targets' must map 'example:model' to a class")
        if not isinstance(r["scores"], bool):
            raise BadRequest("'scores' must be true or false")
        method, args = self._method(r["method"], r["args"])
        with self._lock:
            wanted = {self._class_index(c) for c in r["classes"]}
            overrides = self._overrides(r["targets"])
            found, nxt, scanned = self._scan(offset, count, wanted, r["prediction"])
            jobs = [_engine.Job(i, m, overrides.get((i, m), self._target(i, m, r["target"])))
                    for i in found for m in range(len(self.models))]
            views, info = _engine.attribute(self, jobs, method, args, r["scores"]) if jobs else ([], {"seconds": 0.0, "evaluations": 0, "calls": 0})
            examples = [self._example(i, views[k * len(self.models):(k + 1) * len(self.models)]) for k, i in enumerate(found)]
        note = None
        if len(found) < count:
            note = f"{len(found)} of the {scanned} examples match the filters"
            if r["prediction"] != "all" and not any(e is not None for c in self.store.chunks for e in c.labels):
                note += " (the data has no labels, so none is correct or incorrect)"
        return {"offset": offset, "next_offset": nxt, "examples": examples, "method": method.id, "args": args,
                "note": note, **info}

    def attribute(self, request: dict | None = None, **fields) -> dict:
        """One example and model re-attributed to ``target`` (a click on a class)."""
        r = _fields(request, fields,
                    {"index": None, "model": 0, "target": None, "method": "integrated_gradients", "args": {}, "scores": True})
        method, args = self._method(r["method"], r["args"])
        with self._lock:
            i, m, t = self._job(r)
            (view,), info = _engine.attribute(self, [_engine.Job(i, m, t)], method, args, bool(r["scores"]))
            return {"index": i, "model": self._model_view(i, view), "method": method.id, "args": args, **info}

    def compare(self, request: dict | None = None, **fields) -> dict:
        """Several methods side by side on one example, model and class."""
        r = _fields(request, fields,
                    {"index": None, "model": 0, "target": None, "methods": [], "scores": True})
        ms = r["methods"]
        if not isinstance(ms, list) or not 1 <= len(ms) <= MAX_COMPARE:
            raise BadRequest(f"'methods' must be a list of 1 to {MAX_COMPARE} {{method, args}} objects")
        chosen = []
        for item in ms:
            if not isinstance(item, dict) or set(item) - {"method", "args"}:
                raise BadRequest("each entry of 'methods' must be an object {method, args}")
            chosen.append(self._method(item.get("method"), item.get("args", {})))
        results = []
        with self._lock:
            i, m, t = self._job(r)
            ctx = Ctx(tuple(f.kind for f in self.features), self._shapes)
            total = sum(meth.cost(ctx, a) for meth, a in chosen)
            seconds = 3 * self.store.row_seconds[m] * total
            if total > self.max_evaluations or self.max_seconds is not None and seconds > self.max_seconds:
                raise BadRequest(f"these {len(chosen)} methods need about {total:,} model evaluations together (about "
                                 f"{seconds:,.0f} s); the limit is {self.max_evaluations:,} evaluations and "
                                 f"{self.max_seconds:g} s")
            for meth, a in chosen:
                (view,), info = _engine.attribute(self, [_engine.Job(i, m, t)], meth, a, bool(r["scores"]))
                results.append({"method": meth.id, "label": meth.label, "args": a, "view": view, **info})
        return {"index": i, "model": m, "target": t, "results": results}

    # ------------------------------------------------------------------ helpers under the lock

    def _job(self, r: dict) -> tuple[int, int, int]:
        if r["index"] is None:
            raise BadRequest("'index' (an example number) is required")
        i = self.store.check_index(r["index"])
        m = _int(r["model"], "model", 0, len(self.models) - 1)
        t = self._target(i, m, self.target) if r["target"] is None else self._class_index(r["target"])
        return i, m, t

    def _overrides(self, targets: dict) -> dict:
        out = {}
        for key, c in targets.items():
            try:
                i, m = (int(p) for p in str(key).split(":"))
            except ValueError:
                raise BadRequest(f"'targets' keys must be 'example:model', got {key!r}") from None
            out[(i, m)] = self._class_index(c)
        return out

    def _scan(self, offset: int, count: int, wanted: set, prediction: str) -> tuple[list[int], int, int]:
        """Examples from stream position ``offset`` passing the filters (at most one full cycle)."""
        found, pos, scanned = [], offset, 0
        store = self.store
        while len(found) < count:
            if not store.ensure(pos) and (store.count == 0 or scanned >= store.count):
                break  # everything there is was scanned once
            i = store.resolve(pos)
            if self._keep(i, wanted, prediction):
                found.append(i)
            pos += 1
            scanned += 1
        nxt = store.resolve(pos) if store.count else 0
        return found, nxt, scanned

    def _keep(self, i: int, wanted: set, prediction: str) -> bool:
        if not wanted and prediction == "all":
            return True
        y = self.store.label(i)
        if prediction != "all" and y is None:
            return False
        for m in range(len(self.models)):  # kept when any model passes
            top = self._predictions(i, m)[0]["index"]
            if wanted and top not in wanted:
                continue
            if prediction == "correct" and top != y or prediction == "incorrect" and top == y:
                continue
            return True
        return False

    def _model_view(self, i: int, view: dict) -> dict:
        m = view["model"]
        y, s = self.store.label(i), self.store.scores(m, i)
        label_score = float(s[y]) if y is not None and 0 <= y < s.numel() and s.numel() > 1 else None
        return {"name": self.names[m], "predictions": self._predictions(i, m), "label_score": label_score, **view}

    def _example(self, i: int, views: list[dict]) -> dict:
        raw = self.store.raw(i)
        xs = self.store.model_inputs(tuple(r.unsqueeze(0) for r in raw))
        return {
            "index": i,
            "label": self._label(i),
            "inputs": [{"name": f.name, **f.show_input(r, x[0].cpu() if f.kind == "image" else None)}
                       for f, r, x in zip(self.features, raw, xs)],
            "models": [self._model_view(i, v) for v in views],
        }

    # ------------------------------------------------------------------ serving

    @property
    def url(self) -> str | None:
        """The page's address while serving, else None."""
        return None if self._server is None else self._server.url

    @property
    def port(self) -> int | None:
        """The port while serving, else None."""
        return None if self._server is None else self._server.port

    def serve(self, host: str = "127.0.0.1", port: int = 0, *, allowed_hosts: Sequence[str] | None = None) -> str:
        """Serve the page in a background thread and return its URL at once. ``port=0`` picks a
        free port. Only this machine can connect unless ``host`` says otherwise (``"0.0.0.0"``).
        ``allowed_hosts`` adds names the ``Host`` header may carry (e.g. behind a proxy)."""
        from ._server import Server

        if self._server is not None:
            return self._server.url
        self.init()  # fail here, not in the page, when the data or a model is unusable
        self._server = Server(self, host, port, allowed_hosts)
        return self._server.url

    def stop(self, timeout: float = 120.0) -> None:
        """Stop serving: the port and the thread are freed (an attribution already running is
        let finish, at most ``timeout`` seconds). Serving again picks a new port."""
        if self._server is not None:
            server, self._server = self._server, None
            server.stop()
            if self._lock.acquire(timeout=timeout):
                self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def render(self, height: int = 860, proxy: str | None = None) -> None:
        """Show the page in a notebook (Jupyter, JupyterLab, VS Code): serves if needed, then
        displays it in an iframe. ``proxy``, e.g. ``"/proxy/{port}/"`` (jupyter-server-proxy),
        is the address the browser should use when the kernel runs on another machine."""
        from ._notebook import in_colab, show

        if self._server is None:
            # behind a proxy (Colab's, jupyter-server-proxy) the Host header names the proxy
            self.serve(allowed_hosts=["*"] if proxy or in_colab() else None)
        show(self, height, proxy)

    def _repr_mimebundle_(self, include=None, exclude=None):
        from ._notebook import bundle

        return bundle(self)
