"""The explorer's JSON API over HTTP, against a real served explorer: every route, the batched
attribution against a per-example loop, filters and paging, bad requests (400), unknown routes
and path traversal (404), a failing model (500, the server keeps serving), concurrent tabs,
and serve/stop."""

import base64
import http.client
import json
import os
import socket
import threading

import pytest
import torch

import funcattr as fa
from funcattr import insights, zoo
from funcattr.insights import _engine, _methods

if not os.environ.get("CI"):  # in CI (.ci/run installs funcattr[insights]) a missing server fails
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")

N = 24


def request(url, method="GET", path="/", body=None, headers=None, raw=None):
    """(status, headers, parsed JSON or bytes) for one request, the path sent exactly as given."""
    host, port = url.split("//")[1].rstrip("/").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    hdrs = {"Content-Type": "application/json"} if body is not None else {}
    hdrs.update(headers or {})
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    conn.request(method, path, body=data, headers=hdrs)
    res = conn.getresponse()
    payload = res.read()
    conn.close()
    if res.getheader("content-type", "").startswith("application/json"):
        payload = json.loads(payload)
    return res.status, dict(res.getheaders()), payload


@pytest.fixture(scope="module")
def data():
    x, y, masks = zoo.make_shapes(N, seed=zoo.TEST_SEED)
    return x, y, masks


@pytest.fixture(scope="module")
def model():
    return zoo.load()


@pytest.fixture(scope="module")
def explorer(model, data):
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[data], layers=model.last_conv)
    url = ex.serve()
    yield ex, url
    ex.stop()


def decode(b64):
    return torch.frombuffer(bytearray(base64.b64decode(b64)), dtype=torch.uint8)


IG8 = {"method": "integrated_gradients", "args": {"steps": 8}}


# ----------------------------------------------------------------------------- routes


def test_page_and_its_two_files(explorer):
    _, url = explorer
    status, headers, page = request(url, path="/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'src="static/app.js"' in page and b'href="static/style.css"' in page
    assert b"http" not in page.replace(b'http-equiv', b'')  # nothing fetched from elsewhere
    for name, kind in [("app.js", "text/javascript"), ("style.css", "text/css")]:
        status, headers, body = request(url, path=f"/static/{name}")
        assert status == 200 and headers["content-type"].startswith(kind) and len(body) > 1000
        assert b"//cdn" not in body and b"https://" not in body


@pytest.mark.parametrize("path", [
    "/nope", "/api/nope", "/static/nope.js", "/static/index.html", "/static/../_server.py",
    "/static/%2e%2e/_server.py", "/static/..%2f_server.py", "/static/..%2F..%2F__init__.py",
    "/../../../../etc/passwd", "/static/../../../../etc/passwd", "/static//etc/passwd", "/static/app.js/../../_data.py",
    "/%2e%2e/%2e%2e/etc/passwd", "/static/app.js%00.py",
])
def test_unknown_routes_and_traversal_are_404(explorer, path):
    _, url = explorer
    status, _, body = request(url, path=path)
    assert status == 404, (path, status)
    assert "not found" in body["error"]
    assert "import" not in json.dumps(body) and "root:" not in json.dumps(body)


def test_wrong_http_method_is_405(explorer):
    _, url = explorer
    assert request(url, "GET", "/api/fetch")[0] == 405
    assert request(url, "POST", "/api/init", body={})[0] == 405


def test_init_describes_classes_methods_and_bounds(explorer):
    _, url = explorer
    status, _, init = request(url, path="/api/init")
    assert status == 200
    assert init["classes"] == list(zoo.CLASSES) and init["has_labels"] and init["has_masks"]
    ids = {m["id"] for m in init["methods"]}
    captum_eight = {"deconvolution", "deeplift", "guided_backprop", "input_x_gradient", "integrated_gradients",
                    "saliency", "feature_ablation", "occlusion"}
    assert captum_eight | {"gradcam", "guided_gradcam", "gradient_shap", "noise_tunnel"} <= ids
    ig = next(m for m in init["methods"] if m["id"] == "integrated_gradients")
    steps = next(a for a in ig["args"] if a["name"] == "steps")
    assert steps["default"] == 50 and steps["min"] >= 1 and steps["max"] <= 1000
    for sign in ("all", "positive", "negative", "absolute_value"):
        assert len(base64.b64decode(init["colormaps"][sign])) == 256 * 3


# ----------------------------------------------------------------------------- the batched call


def test_a_page_is_one_batched_call_equal_to_a_per_example_loop(model, data):
    """Two models × 5 examples × their own classes in one IG call equal plain per-example calls;
    every forward of a model carries all of its examples (the executor splits the steps into
    memory-sized chunks, never the examples). Besides the 8 steps, each model sees the executor's
    probe: one step of the page, measured once and discarded (DESIGN §6)."""
    x, y, _ = data
    other = zoo.load()
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(1.1)
    seen = {0: [], 1: []}
    wrapped = [CountingModel(model, seen[0]), CountingModel(other, seen[1])]
    ex = insights.Explorer(wrapped, classes=zoo.CLASSES, data=[(x, y)])
    method, args = ex.methods["integrated_gradients"], {"steps": 8, "method": "gausslegendre"}
    jobs = [_engine.Job(i, m, (i + m) % 6) for i in range(5) for m in (1, 0)]
    seen[0].clear(), seen[1].clear()
    (attrs,), _, _, _, info = _engine.attributions(ex, jobs, method, args)
    assert info["calls"] == 1
    for rows in seen.values():
        assert sum(rows) == 8 * 5 + 5 and all(n % 5 == 0 for n in rows), seen
    for k, j in enumerate(jobs):
        m = (model, other)[j.model]
        want = fa.integrated_gradients(fa.target(m, j.target), steps=8)(x[j.example:j.example + 1])[0]
        # float32 convolutions round differently for another batch composition, and a ReLU that
        # sits at its kink can then flip for one path point: a tolerance relative to the map
        torch.testing.assert_close(attrs[k], want, rtol=1e-3, atol=2e-3 * float(want.abs().max()))


class CountingModel(torch.nn.Module):
    def __init__(self, model, log):
        super().__init__()
        self.model, self.log = model, log

    def forward(self, x):
        self.log.append(x.shape[0])
        return self.model(x)


@pytest.mark.parametrize("method, args, reference", [
    ("occlusion", {"window": 16, "stride": 8}, lambda f: fa.occlusion(f, window=(3, 16, 16), stride=(3, 8, 8))),
    ("deeplift", {}, lambda f: fa.deeplift(f)),
    ("saliency", {"abs": False}, lambda f: fa.saliency(f, abs=False)),
])
def test_other_methods_match_their_transform(model, data, method, args, reference):
    x, y, _ = data
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[(x, y)])
    m, a = _methods.validate(ex.methods, method, args)
    jobs = [_engine.Job(i, 0, int(y[i])) for i in range(3)]
    (attrs,), *_ = _engine.attributions(ex, jobs, m, a)
    torch.testing.assert_close(attrs, reference(fa.target(model, y[:3]))(x[:3]), rtol=1e-4, atol=1e-6)


def test_gradcam_is_upsampled_per_model(model, data):
    x, y, _ = data
    ex = insights.Explorer([model, model], classes=zoo.CLASSES, data=[(x, y)], layers=model.last_conv)
    jobs = [_engine.Job(0, 0, 1), _engine.Job(1, 1, 2)]
    (attrs,), _, _, _, info = _engine.attributions(ex, jobs, ex.methods["gradcam"], {"relu": True})
    assert info["calls"] == 2 and attrs.shape == (2, 1, 64, 64)
    want = fa.upsample(fa.gradcam(fa.target(model, [1, 2]), model.last_conv, relu=True)(x[:2]), (64, 64), mode="bilinear")
    torch.testing.assert_close(attrs, want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- fetch, attribute, compare


def test_fetch_draws_four_examples_with_scores(explorer, data, model):
    ex, url = explorer
    status, _, res = request(url, "POST", "/api/fetch", {**IG8, "count": 4})
    assert status == 200, res
    assert [e["index"] for e in res["examples"]] == [0, 1, 2, 3] and res["next_offset"] == 4
    assert res["calls"] == 1 and res["evaluations"] == 4 * 8 + 4 * 2 * 11
    x, y, masks = data
    for e in res["examples"]:
        i = e["index"]
        assert e["label"]["index"] == int(y[i]) and e["label"]["name"] == zoo.CLASSES[int(y[i])]
        img = e["inputs"][0]
        assert (img["w"], img["h"], img["c"]) == (64, 64, 3)
        assert torch.equal(decode(img["data"]).view(64, 64, 3), (x[i].permute(1, 2, 0) * 255).round().to(torch.uint8))
        (mv,) = e["models"]
        probs = model(x[i:i + 1]).softmax(1)[0].detach()
        assert mv["predictions"][0]["index"] == int(probs.argmax()) == mv["target"]
        assert mv["predictions"][0]["score"] == pytest.approx(float(probs.max()), rel=1e-4)
        assert len(mv["predictions"]) == 4 and mv["label_score"] == pytest.approx(float(probs[y[i]]), rel=1e-4)
        assert mv["contributions"] == [pytest.approx(1.0)] or mv["contributions"] == [pytest.approx(-1.0)]
        assert 0 <= mv["faithfulness"]["deletion"] <= 1 and 0 <= mv["faithfulness"]["insertion"] <= 1
        assert isinstance(mv["localization"]["pointing_game"], bool) and 0 <= mv["localization"]["mass_inside"] <= 1
        # the drawn maps are fa.viz.normalize of the attribution
        a = fa.integrated_gradients(fa.target(model, mv["target"]), steps=8)(x[i:i + 1])[0]
        heat = mv["features"][0]
        want = (fa.viz.normalize(a, sign="positive") * 255).round()
        got = decode(heat["maps"]["positive"]).view(64, 64).double()
        assert (got - torch.as_tensor(want)).abs().max() <= 1
        want_mass = fa.metrics.mass_inside(a[None], masks[i:i + 1]).item()
        assert mv["localization"]["mass_inside"] == pytest.approx(want_mass, abs=1e-5)


def test_paging_cycles_over_the_data(explorer):
    _, url = explorer
    _, _, res = request(url, "POST", "/api/fetch", {**IG8, "offset": N - 2, "count": 4, "scores": False})
    assert [e["index"] for e in res["examples"]] == [N - 2, N - 1, 0, 1] and res["next_offset"] == 2


def test_filters(explorer, data, model):
    _, url = explorer
    x, y, _ = data
    pred = model(x).argmax(1)
    for prediction, keep in [("correct", pred == y), ("incorrect", pred != y)]:
        _, _, res = request(url, "POST", "/api/fetch", {**IG8, "count": 16, "prediction": prediction, "scores": False})
        got = [e["index"] for e in res["examples"]]
        assert got == keep.nonzero().flatten().tolist()[:16]
    _, _, res = request(url, "POST", "/api/fetch", {**IG8, "count": 5, "classes": ["ring", 0], "scores": False})
    got = [e["index"] for e in res["examples"]]
    assert got and got == [i for i in range(N) if int(pred[i]) in (0, 4)][:5]
    assert all(e["models"][0]["predictions"][0]["name"] in ("ring", "circle") for e in res["examples"])


def test_attribute_to_another_class_changes_the_maps(explorer, data):
    _, url = explorer
    _, _, page = request(url, "POST", "/api/fetch", {**IG8, "count": 1})
    first = page["examples"][0]["models"][0]
    other = first["predictions"][1]["index"]
    status, _, res = request(url, "POST", "/api/attribute", {**IG8, "index": 0, "model": 0, "target": other})
    assert status == 200, res
    mv = res["model"]
    assert mv["target"] == other and mv["name"] == "ShapesNet"
    assert mv["features"][0]["maps"]["all"] != first["features"][0]["maps"]["all"]
    # and the page can ask for it back in one fetch (a reload with clicked classes)
    _, _, again = request(url, "POST", "/api/fetch", {**IG8, "count": 1, "targets": {"0:0": other}})
    assert again["examples"][0]["models"][0]["features"][0]["maps"] == mv["features"][0]["maps"]


def test_compare_methods_side_by_side(explorer):
    _, url = explorer
    methods = [{"method": "saliency"}, IG8, {"method": "gradcam", "args": {"relu": True}}]
    status, _, res = request(url, "POST", "/api/compare", {"index": 2, "model": 0, "target": 1, "methods": methods})
    assert status == 200, res
    assert [r["method"] for r in res["results"]] == ["saliency", "integrated_gradients", "gradcam"]
    maps = {r["view"]["features"][0]["maps"]["absolute_value"] for r in res["results"]}
    assert len(maps) == 3 and all(r["view"]["target"] == 1 for r in res["results"])


# ----------------------------------------------------------------------------- bad requests


BAD = [
    ("/api/fetch", {"method": "magic"}, "unknown method 'magic'"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"n_steps": 5}}, "unknown argument 'n_steps'"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"steps": 100000}}, "'steps' must be between 1 and 500"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"steps": 0}}, "'steps' must be between"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"steps": "ten"}}, "'steps' must be a number"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"steps": 2.5}}, "'steps' must be a whole number"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"method": "simpson"}}, "'method' must be one of"),
    ("/api/fetch", {"method": "integrated_gradients", "args": {"steps": 1, "method": "riemann_left"}}, "at least 2"),
    ("/api/fetch", {"method": "saliency", "args": {"abs": "yes"}}, "must be true or false"),
    ("/api/fetch", {"method": "occlusion", "args": {"window": 65}}, "'window' must be between 1 and 64"),
    ("/api/fetch", {"method": "occlusion", "args": {"window": 8, "stride": 0}}, "'stride' must be between"),
    ("/api/fetch", {"method": "shapley_values", "args": {"cell": 8}}, "at most 12"),
    ("/api/fetch", {"method": "noise_tunnel", "args": {"of": "integrated_gradients", "samples": 100, "steps": 500}},
     "model evaluations; the limit is 20,000"),
    ("/api/fetch", {"method": "occlusion", "args": {"window": 1, "stride": 1}, "count": 16}, "the limit is 20,000"),
    ("/api/fetch", {"count": 0}, "'count' must be a whole number from 1 to 16"),
    ("/api/fetch", {"count": 17}, "'count' must be a whole number from 1 to 16"),
    ("/api/fetch", {"offset": -1}, "'offset' must be"),
    ("/api/fetch", {"prediction": "maybe"}, "'prediction' must be all, correct or incorrect"),
    ("/api/fetch", {"classes": ["unicorn"]}, "unknown class 'unicorn'"),
    ("/api/fetch", {"targets": {"x": 1}}, "'targets' keys must be 'example:model'"),
    ("/api/fetch", {"steps": 5}, "unknown field 'steps'"),
    ("/api/fetch", [1, 2], "must be a JSON object"),
    ("/api/attribute", {"index": 0, "target": 6}, "unknown class 6"),
    ("/api/attribute", {"index": 10**6, "target": 1}, "there is no example 1000000"),
    ("/api/attribute", {"index": -3}, "'index' must be a non-negative example number"),
    ("/api/attribute", {"target": 1}, "'index' (an example number) is required"),
    ("/api/attribute", {"index": 0, "model": 1}, "'model' must be a whole number from 0 to 0"),
    ("/api/compare", {"index": 0, "methods": []}, "'methods' must be a list of 1 to 8"),
    ("/api/compare", {"index": 0, "methods": [{"method": "saliency"}] * 9}, "'methods' must be a list of 1 to 8"),
    ("/api/compare", {"index": 0, "methods": [{"method": "saliency", "oops": 1}]}, "each entry of 'methods'"),
]


@pytest.mark.parametrize("path, body, message", BAD, ids=[m for _, _, m in BAD])
def test_bad_requests_are_400_with_a_message(explorer, path, body, message):
    _, url = explorer
    status, _, res = request(url, "POST", path, body)
    assert status == 400, res
    assert message in res["error"], res["error"]


def test_malformed_bodies(explorer):
    _, url = explorer
    status, _, res = request(url, "POST", "/api/fetch", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in res["error"]
    status, _, res = request(url, "POST", "/api/fetch", raw=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in res["error"]
    status, _, res = request(url, "POST", "/api/fetch", raw=b"[" + b"0," * 40000 + b"0]", headers={"Content-Type": "application/json"})
    assert status == 413


def test_host_header_must_name_this_server(explorer):
    _, url = explorer
    status, _, _ = request(url, path="/api/init", headers={"Host": "attacker.example"})
    assert status == 400
    assert request(url, path="/api/init", headers={"Host": "localhost"})[0] == 200
    assert request(url, path="/api/init", headers={"Host": "[::1]:8000"})[0] == 200
    assert request(url, path="/", headers={"Host": "127.0.0.1.attacker.example:80"})[0] == 400


# ----------------------------------------------------------------------------- failures and concurrency


class FailsUnderGrad(torch.nn.Module):
    """Predicts fine; raises when a gradient method calls it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        if torch.is_grad_enabled():
            raise RuntimeError("boom: this model has no backward")
        return self.model(x)


def test_a_failing_model_is_reported_and_the_server_keeps_serving(model, data):
    x, y, _ = data
    with insights.Explorer(FailsUnderGrad(model), classes=zoo.CLASSES, data=[(x[:8], y[:8])]) as ex:
        url = ex.serve()
        status, _, res = request(url, "POST", "/api/fetch", {**IG8, "count": 2})
        assert status == 500 and "RuntimeError: boom: this model has no backward" in res["error"]
        status, _, res = request(url, "POST", "/api/fetch", {"method": "occlusion", "args": {"window": 16, "stride": 16}, "count": 2,
                                                             "scores": False})
        assert status == 200 and len(res["examples"]) == 2
        assert request(url, path="/api/init")[0] == 200


def test_data_that_is_not_batches_is_reported():
    ex = insights.Explorer(zoo.load(), data=[("not", "a", "batch", "at all")])
    with pytest.raises(insights._data.UserCodeError, match="a batch is"):
        ex.init()


def test_two_tabs_at_once_get_their_own_results(explorer):
    _, url = explorer
    bodies = [
        {"method": "integrated_gradients", "args": {"steps": 6}, "offset": 0, "count": 2, "scores": False},
        {"method": "occlusion", "args": {"window": 16, "stride": 16}, "offset": 5, "count": 3, "scores": False},
        {"method": "saliency", "offset": 10, "count": 2, "targets": {"10:0": 3}, "scores": False},
    ]
    alone = [request(url, "POST", "/api/fetch", b)[2] for b in bodies]
    results, errors = {}, []

    def tab(k):
        try:
            for _ in range(2):
                results.setdefault(k, []).append(request(url, "POST", "/api/fetch", bodies[k])[2])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=tab, args=(k,)) for k in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors
    for k, want in enumerate(alone):
        for got in results[k]:
            assert [e["index"] for e in got["examples"]] == [e["index"] for e in want["examples"]]
            assert got["method"] == want["method"]
            assert [m["features"] for e in got["examples"] for m in e["models"]] == [m["features"] for e in want["examples"] for m in e["models"]]


# ----------------------------------------------------------------------------- serve and stop


def test_serve_binds_loopback_and_stop_frees_port_and_thread(model, data):
    x, y, _ = data
    ex = insights.Explorer(model, data=[(x[:4], y[:4])])
    url = ex.serve()
    assert url.startswith("http://127.0.0.1:") and ex.serve() == url  # serving twice: the same server
    port = ex.port
    thread = ex._server._thread
    assert thread.is_alive() and request(url, path="/api/init")[0] == 200
    ex.stop()
    assert not thread.is_alive() and ex.url is None
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))  # the port is free again
    s.close()
    url2 = ex.serve(port=port)
    assert url2 == url and request(url2, path="/api/init")[0] == 200
    ex.stop()
    ex.stop()  # stopping twice is harmless


def test_serving_on_a_busy_port_is_an_error(model, data):
    x, y, _ = data
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        ex = insights.Explorer(model, data=[(x[:4], y[:4])])
        with pytest.raises(OSError, match="cannot serve on 127.0.0.1"):
            ex.serve(port=s.getsockname()[1])
        assert ex.url is None
    finally:
        s.close()


class Slow(torch.nn.Module):
    """The zoo model at about 20 ms per example."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        import time

        time.sleep(0.02 * x.shape[0])
        return self.model(x)


def test_requests_are_bounded_by_the_models_measured_speed(model, data):
    x, y, _ = data
    ex = insights.Explorer(Slow(model), classes=zoo.CLASSES, data=[(x[:4], y[:4])], max_seconds=5)
    with pytest.raises(insights.BadRequest, match=r"would take about \d+ s .* the limit is 5 s"):
        ex.fetch(method="integrated_gradients", args={"steps": 50}, count=4)
    with pytest.raises(insights.BadRequest, match="the limit is 20,000 evaluations and 5 s"):
        ex.compare(index=0, methods=[{"method": "integrated_gradients"}, {"method": "occlusion"}])
    assert len(ex.fetch(method="saliency", count=1, scores=False)["examples"]) == 1
