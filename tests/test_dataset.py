"""fa.attribute_dataset and fa.open_store in one process: the store holds exactly what the
attribution function gives on the same batches, refuses what it should, and names the bad
item. (Crashes, kill -9 and torchrun: test_dataset_resume.py.)"""

import errno
import json
import os
import time

import pytest
import torch
from torch import nn

pytest.importorskip("zarr")

import funcattr as fa  # noqa: E402
from funcattr import zoo  # noqa: E402

N, B = 20, 8  # three batches, the last one short


@pytest.fixture(scope="module")
def model():
    return zoo.load()


@pytest.fixture(scope="module")
def shapes():
    return zoo.make_shapes(N, seed=zoo.TEST_SEED)


@pytest.fixture(scope="module")
def data(shapes):
    x, y, m = shapes
    return torch.utils.data.TensorDataset(x, y, m)


def run(attr_fn, data, out, **kw):
    kw.setdefault("batch_size", B)
    kw.setdefault("progress", False)
    return fa.attribute_dataset(attr_fn, data, str(out), **kw)


def batches(n=N, b=B):
    return [slice(lo, min(n, lo + b)) for lo in range(0, n, b)]


def columns(store):
    """Everything a store holds, as tensors (bfloat16 maps compared as bits)."""
    a = store.attributions
    a = a[:] if not isinstance(a, tuple) else tuple(r[:] for r in a)
    cols = {"attributions": a, "indices": store.indices, "targets": store.targets, "predictions": store.predictions}
    cols.update({f"metrics/{k}": v for k, v in store.metrics.items()})
    return cols


def assert_same_store(s1, s2):
    c1, c2 = columns(s1), columns(s2)
    assert c1.keys() == c2.keys()
    for k in c1:
        a, b = c1[k], c2[k]
        if a is None:
            assert b is None, k
            continue
        for p, q in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert p.dtype == q.dtype and p.shape == q.shape, k
            assert torch.equal(p.view(torch.int16) if p.dtype == torch.bfloat16 else p, q.view(torch.int16) if q.dtype == torch.bfloat16 else q) or (
                p.is_floating_point() and torch.equal(torch.nan_to_num(p, nan=7.0), torch.nan_to_num(q, nan=7.0))
            ), k


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_trip_equals_attr_fn_on_the_same_batches(model, shapes, data, tmp_path, dtype):
    x, y, masks = shapes
    ig = fa.integrated_gradients(fa.target(model), steps=4, batch_size=64)
    store = run(ig, data, tmp_path / "s", model=model, dtype=dtype, metrics=["pointing", "mass"])
    want = torch.cat([ig(x[s], target=y[s]) for s in batches()]).to(getattr(torch, dtype))
    got = store.attributions[:]
    assert got.dtype == want.dtype and got.shape == (N, 3, 64, 64)
    assert torch.equal(got, want)  # bitwise
    with torch.no_grad():
        assert torch.equal(store.predictions, model(x).argmax(1))
    assert torch.equal(store.targets, y) and torch.equal(store.indices, torch.arange(N))
    full = torch.cat([ig(x[s], target=y[s]) for s in batches()])
    assert torch.equal(store.metrics["pointing"], fa.metrics.pointing_game(full, masks).float())
    assert torch.equal(store.metrics["mass"], fa.metrics.mass_inside(full, masks))
    assert len(store) == N and store.complete and bool(store.done.all())


def test_lazy_reads(model, data, tmp_path):
    store = run(fa.saliency(fa.target(model)), data, tmp_path / "s", model=model)
    again = fa.open_store(tmp_path / "s")
    all_ = again.attributions[:]
    assert torch.equal(again.attributions[3], all_[3])
    assert torch.equal(again.attributions[5:13], all_[5:13])  # across a batch boundary
    assert torch.equal(again.attributions[[17, 2, 9]], all_[[17, 2, 9]])
    assert torch.equal(again.attributions[torch.tensor([1, 19])], all_[[1, 19]])
    assert len(again.attributions) == N and again.attributions.shape == (N, 3, 64, 64)
    assert sum(1 for _ in again.attributions) == N
    assert "saliency" in repr(store) and f"{N}/{N}" in repr(store)


def test_manifest_records_method_hyperparameters_model_and_versions(model, data, tmp_path):
    ig = fa.integrated_gradients(fa.target(model), steps=4, batch_size=64)
    store = run(ig, data, tmp_path / "s", model=model, dtype="float16", metrics=["deletion"])
    m = store.manifest
    s = m["settings"]
    assert s["method"] == "integrated_gradients"
    assert s["attr_fn"]["closure"]["steps"] == 4 and s["attr_fn"]["closure"]["baseline"] == 0.0
    assert s["model"]["class"] == "ShapesNet" and s["model"]["weights"].startswith("sha256:")
    assert s["dataset"]["length"] == N and s["batch_size"] == B and s["dtype"] == "float16"
    assert s["target"] == "label" and s["metrics"] == ["deletion"]
    assert m["versions"]["funcattr"] == fa.__version__ and m["versions"]["torch"] == torch.__version__
    json.dumps(m)  # plain JSON, readable by any zarr tool
    with open(tmp_path / "s" / "zarr.json") as fh:
        assert json.load(fh)["attributes"]["funcattr"] == m


@pytest.mark.parametrize("target", ["pred", 3, None])
def test_targets(model, shapes, data, tmp_path, target):
    x, y, _ = shapes
    with torch.no_grad():
        pred = model(x).argmax(1)
    if target is None:
        f = fa.saliency(fa.target(model, 2))  # the function fixes its target
        store = run(f, data, tmp_path / "s", model=model, target=None)
        assert store.targets is None
        assert torch.equal(store.attributions[:], torch.cat([f(x[s]) for s in batches()]))
        return
    g = fa.saliency(fa.target(model))
    store = run(g, data, tmp_path / "s", model=model, target=target)
    t = pred if target == "pred" else torch.full((N,), target)
    assert torch.equal(store.targets, t)
    assert torch.equal(store.attributions[:], torch.cat([g(x[s], target=t[s]) for s in batches()]))


def test_maps_of_another_shape_and_deletion_on_them(model, shapes, data, tmp_path):
    x, y, _ = shapes
    gc = fa.gradcam(fa.target(model), model.last_conv)

    def cam(x, target):
        return fa.upsample(gc(x, target=target), (64, 64))

    store = run(cam, data, tmp_path / "s", model=model, metrics=["deletion", "insertion", "pointing"])
    want = torch.cat([cam(x[s], target=y[s]) for s in batches()])
    assert store.attributions.shape == (N, 1, 64, 64) and torch.equal(store.attributions[:], want)
    for s in batches():
        f, a = fa.target(model, y[s]), want[s].expand_as(x[s])
        assert torch.equal(store.metrics["deletion"][s], fa.metrics.deletion(f, x[s], a))
        assert torch.equal(store.metrics["insertion"][s], fa.metrics.insertion(f, x[s], a))
    assert set(store.summary()) == {"deletion", "insertion", "pointing"}


def test_tuple_inputs_without_labels_and_a_custom_metric(tmp_path):
    torch.manual_seed(0)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(5, 4), nn.Linear(3, 4)

        def forward(self, u, v):
            return self.a(u) + self.b(v)

    net = Two().eval()
    u, v = torch.randn(N, 5), torch.randn(N, 3)
    data = [((u[i], v[i]),) for i in range(N)]  # items (x,) with x a tuple of two inputs
    ixg = fa.input_x_gradient(fa.target(net))
    total = ("total", lambda x, a, t, m: sum(p.sum(1) for p in a))
    store = run(ixg, data, tmp_path / "s", model=net, target="pred", metrics=[total])
    a0, a1 = store.attributions
    assert a0.shape == (N, 5) and a1.shape == (N, 3)
    pred = net(u, v).argmax(1)
    want = [ixg((u[s], v[s]), target=pred[s]) for s in batches()]
    assert torch.equal(a0[:], torch.cat([w[0] for w in want])) and torch.equal(a1[:], torch.cat([w[1] for w in want]))
    assert torch.allclose(store.metrics["total"], a0[:].sum(1) + a1[:].sum(1))


def test_return_delta_is_stored_as_a_metric(model, shapes, data, tmp_path):
    x, y, _ = shapes
    ig = fa.integrated_gradients(fa.target(model), steps=4, batch_size=64, return_delta=True)
    store = run(ig, data, tmp_path / "s", model=model)
    want = torch.cat([ig(x[s], target=y[s])[1] for s in batches()])
    assert torch.equal(store.metrics["delta"], want.float())


def test_sampling_methods_are_seeded_per_batch(model, data, tmp_path):
    sg = fa.noise_tunnel(fa.saliency(fa.target(model)), samples=3, stdev=0.2)
    s1 = run(sg, data, tmp_path / "a", model=model)
    torch.manual_seed(1234)  # the global RNG's state does not matter
    s2 = run(sg, data, tmp_path / "b", model=model)
    assert_same_store(s1, s2)
    s3 = run(sg, data, tmp_path / "c", model=model, seed=1)
    assert not torch.equal(s1.attributions[:], s3.attributions[:])


# --------------------------------------------------------------------------- overlap and progress


def _wait(cond, seconds=60.0) -> bool:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_writing_overlaps_computing_through_a_bounded_queue(model, data, tmp_path, monkeypatch):
    """While the writer thread is stuck on a batch, the next batches still compute, and at most
    the queue's depth of finished batches (plus the one being handed over) wait for it."""
    from funcattr import _dataset, _store

    sal = fa.saliency(fa.target(model))
    computed = []

    def counting(x, target):
        computed.append(len(x))
        return sal(x, target=target)

    real = _store.Writer.write
    seen = {}

    def stuck(self, b, cols):
        if b == 1:  # batch 0 is written before the stream starts (it creates the arrays)
            ahead = 1 + 1 + _dataset._WRITE_DEPTH + 1  # batch 0, this one, the queue, the one being put
            seen["overlap"] = _wait(lambda: len(computed) >= ahead)
            time.sleep(0.3)  # room to overrun the bound, if there were none
            seen["ahead"] = len(computed)
        return real(self, b, cols)

    monkeypatch.setattr(_store.Writer, "write", stuck)
    store = run(counting, data, tmp_path / "s", model=model, batch_size=2)
    assert seen["overlap"], "no batch computed while the writer was busy"
    assert seen["ahead"] == 1 + 1 + _dataset._WRITE_DEPTH + 1
    assert store.complete and len(computed) == N // 2
    assert torch.equal(store.attributions[:], torch.cat([sal(data[s][0], target=data[s][1]) for s in batches(b=2)]))


class Marked(torch.utils.data.Dataset):
    """Leaves a file behind for every item loaded (in whichever process loads it)."""

    def __init__(self, data, folder):
        self.data, self.folder = data, str(folder)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        open(os.path.join(self.folder, str(i)), "w").close()
        return self.data[i]


def test_loading_overlaps_computing(model, data, tmp_path):
    """With a DataLoader worker, the next batch is loaded while the current one computes."""
    (tmp_path / "loaded").mkdir()
    marked = Marked(data, tmp_path / "loaded")
    sal = fa.saliency(fa.target(model))
    calls, seen = [], {}

    def waiting(x, target):
        calls.append(len(x))
        if len(calls) == 2:  # the first batch of the stream (batch 0 is computed up front)
            seen["prefetched"] = _wait(lambda: os.path.exists(tmp_path / "loaded" / str(2 * B)))
        return sal(x, target=target)

    store = run(waiting, marked, tmp_path / "s", model=model, num_workers=1)
    assert seen["prefetched"], "batch 2 was not loaded while batch 1 computed"
    assert store.complete


def test_progress_bar_counts_examples_and_starts_where_a_resumed_run_stands(model, data, tmp_path, monkeypatch, capsys):
    from funcattr import _store

    sal = fa.saliency(fa.target(model))
    real = _store.Writer.write

    def crash(self, b, cols):
        if b == 2:
            raise Crash("killed")
        return real(self, b, cols)

    monkeypatch.setattr(_store.Writer, "write", crash)
    with pytest.raises(Crash):
        run(sal, data, tmp_path / "s", model=model, progress=True)
    monkeypatch.setattr(_store.Writer, "write", real)
    capsys.readouterr()
    run(sal, data, tmp_path / "s", model=model, progress=True)
    err = capsys.readouterr().err
    assert f"16/{N}" in err and f"{N}/{N}" in err and "ex/s" in err  # resumed at 16, done at 20
    assert f" 0/{N}" not in err
    run(sal, data, tmp_path / "s", model=model, progress=False)
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- resume and refusals


class Crash(Exception):
    pass


def test_a_crash_between_files_resumes_to_the_same_store(model, data, tmp_path, monkeypatch):
    """The writer dies after a batch's maps are on disk but before its commit record."""
    from funcattr import _store

    sg = fa.noise_tunnel(fa.saliency(fa.target(model)), samples=3, stdev=0.2)
    ref = run(sg, data, tmp_path / "ref", model=model, metrics=["pointing"])
    real = _store.Writer.write

    def dying(self, b, cols):
        if b == 1:
            self.arrays["attributions"][8:16] = cols["attributions"].numpy()
            raise Crash("killed mid-batch")
        return real(self, b, cols)

    monkeypatch.setattr(_store.Writer, "write", dying)
    with pytest.raises(Crash):
        run(sg, data, tmp_path / "s", model=model, metrics=["pointing"])
    half = fa.open_store(tmp_path / "s")
    assert not half.complete
    assert half.done.tolist() == [True] * 8 + [False] * 12  # batch 0 committed; the writer stops at its error
    assert torch.isnan(half.attributions[8:16]).sum() == 0  # batch 1's maps are there, uncommitted
    assert torch.equal(half.indices[8:16], torch.full((8,), -1))
    monkeypatch.setattr(_store.Writer, "write", real)
    assert_same_store(run(sg, data, tmp_path / "s", model=model, metrics=["pointing"]), ref)


def test_resume_is_bitwise_for_a_method_with_a_cost_probe(model, data, tmp_path, monkeypatch):
    """Integrated gradients with default options, resumed by a fresh attr_fn (as a new process
    would build it), against an uninterrupted run."""
    from funcattr import _store

    fresh = lambda: fa.integrated_gradients(fa.target(model), steps=32)  # noqa: E731
    ref = run(fresh(), data, tmp_path / "ref", model=model)
    real = _store.Writer.write

    def dying(self, b, cols):
        if b == 1:
            raise Crash("killed")
        return real(self, b, cols)

    monkeypatch.setattr(_store.Writer, "write", dying)
    with pytest.raises(Crash):
        run(fresh(), data, tmp_path / "s", model=model)
    monkeypatch.setattr(_store.Writer, "write", real)
    assert_same_store(run(fresh(), data, tmp_path / "s", model=model), ref)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(steps=5), "closure.steps: 4 in the store, 5 now"),
        (dict(dtype="float16"), "dtype: 'float32' in the store, 'float16' now"),
        (dict(batch_size=4), "batch_size: 8 in the store, 4 now"),
        (dict(n=12), "dataset.length: 20 in the store, 12 now"),
        (dict(weights=True), "weights"),
        (dict(metrics=["mass"]), "metrics"),
    ],
)
def test_other_settings_are_refused_unless_overwrite(model, data, tmp_path, change, message):
    def job(steps=4, n=N, weights=False, **kw):
        m = zoo.load()
        if weights:
            with torch.no_grad():
                m.fc.bias.add_(1e-3)
        ig = fa.integrated_gradients(fa.target(m), steps=steps, batch_size=64)
        d = torch.utils.data.Subset(data, range(n))
        return lambda **more: run(ig, d, tmp_path / "s", model=m, **{**kw, **more})

    job()()
    with pytest.raises(ValueError, match="different settings") as err:
        job(**change)()
    assert message in str(err.value) and "overwrite=True" in str(err.value)
    store = job(**change)(overwrite=True)
    assert store.complete


def test_existing_store_is_resumed_and_resume_false_refuses(model, data, tmp_path):
    sal = fa.saliency(fa.target(model))
    first = run(sal, data, tmp_path / "s", model=model)
    mtime = os.path.getmtime(tmp_path / "s" / "attributions" / "zarr.json")
    again = run(sal, data, tmp_path / "s", model=model)  # complete: nothing to do
    assert_same_store(first, again)
    assert os.path.getmtime(tmp_path / "s" / "attributions" / "zarr.json") == mtime
    with pytest.raises(ValueError, match="already exists.*resume=True"):
        run(sal, data, tmp_path / "s", model=model, resume=False)
    assert run(sal, data, tmp_path / "s", model=model, resume=False, overwrite=True).complete


def test_a_folder_that_is_not_a_store_is_never_deleted(model, data, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="not a funcattr store"):
            run(fa.saliency(fa.target(model)), data, tmp_path / "mine", model=model, overwrite=overwrite)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_unwritable_path_is_a_clear_error(model, data, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="cannot write the store at .*file/s"):
        run(fa.saliency(fa.target(model)), data, tmp_path / "file" / "s", model=model)


def test_full_disk_is_a_clear_error_and_keeps_committed_batches(model, data, tmp_path, monkeypatch):
    from funcattr import _store

    sal = fa.saliency(fa.target(model))
    real = _store.Writer.write

    def full(self, b, cols):
        if b == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, b, cols)

    monkeypatch.setattr(_store.Writer, "write", full)
    with pytest.raises(OSError, match="No space left on device"):
        run(sal, data, tmp_path / "s", model=model)
    partial = fa.open_store(tmp_path / "s")
    assert partial.done.tolist() == [True] * 16 + [False] * 4
    assert not torch.isnan(partial.attributions[:16]).any()
    monkeypatch.setattr(_store.Writer, "write", real)
    assert run(sal, data, tmp_path / "s", model=model).complete


def test_disk_errors_from_zarr_name_the_batch(model, data, tmp_path, monkeypatch):
    import zarr.storage._local as local

    real = local._put
    calls = {"n": 0}

    def put(path, value, exclusive=False):
        if "attributions/c" in str(path):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", put)
    with pytest.raises(OSError, match=r"could not write batch 1 \(examples 8..15\).*disk is full"):
        run(fa.saliency(fa.target(model)), data, tmp_path / "s", model=model)


# --------------------------------------------------------------------------- bad items


class Bad(torch.utils.data.Dataset):
    def __init__(self, data, i, item):
        self.data, self.i, self.item = data, i, item

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if i == self.i:
            if isinstance(self.item, Exception):
                raise self.item
            return self.item
        return self.data[i]


@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize(
    "i, item, error, message",
    [
        (13, (torch.zeros(3, 32, 32), 1, torch.zeros(64, 64, dtype=torch.bool)), ValueError, "dataset item 13: the input has shape (3, 32, 32)"),
        (11, ("not an image", 1, torch.zeros(64, 64, dtype=torch.bool)), TypeError, "dataset item 11: the input must be a Tensor"),
        (9, (torch.full((3, 64, 64), float("nan")), 1, torch.zeros(64, 64, dtype=torch.bool)), ValueError, "dataset item 9: the input contains NaN"),
        (17, (torch.zeros(3, 64, 64), 1.5, torch.zeros(64, 64, dtype=torch.bool)), TypeError, "dataset item 17: the label must be an int"),
        (18, (torch.zeros(3, 64, 64), 99, torch.zeros(64, 64, dtype=torch.bool)), ValueError, "dataset item 18: target 99 is out of range"),
        (12, (torch.zeros(3, 64, 64), 1), ValueError, "dataset item 12 has no mask"),
        (10, FileNotFoundError("img10.png"), RuntimeError, "dataset item 10 could not be loaded: FileNotFoundError"),
    ],
)
def test_bad_items_name_their_index(model, data, tmp_path, workers, i, item, error, message):
    with pytest.raises(error) as err:
        run(fa.saliency(fa.target(model)), Bad(data, i, item), tmp_path / "s", model=model, num_workers=workers)
    assert message in str(err.value)
    store = fa.open_store(tmp_path / "s")  # what was committed before stays readable
    assert not store.done[(i // B) * B : (i // B + 1) * B].any()


def test_bad_first_item_and_bad_arguments(model, data, tmp_path):
    sal = fa.saliency(fa.target(model))
    from PIL import Image

    with pytest.raises(TypeError, match=r"dataset item 0 is a PIL.*ToTensor"):
        run(sal, [Image.new("RGB", (4, 4))], tmp_path / "s", model=model)
    with pytest.raises(ValueError, match="data is empty"):
        run(sal, [], tmp_path / "s", model=model)
    with pytest.raises(TypeError, match="map-style"):
        run(sal, iter([1]), tmp_path / "s", model=model)
    with pytest.raises(ValueError, match="target='label' but the dataset items carry no label"):
        run(sal, [torch.zeros(3, 64, 64)], tmp_path / "s", model=model)
    with pytest.raises(ValueError, match="pointing need ground-truth masks"):
        run(sal, [(torch.zeros(3, 64, 64), 1)], tmp_path / "s", model=model, metrics=["pointing"])
    with pytest.raises(ValueError, match="deletion need the model"):
        run(sal, data, tmp_path / "s", metrics=["deletion"])
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        run(sal, data, tmp_path / "s", model=model, metrics=["auc"])
    with pytest.raises(ValueError, match="dtype must be one of"):
        run(sal, data, tmp_path / "s", model=model, dtype="int8")
    assert not (tmp_path / "s").exists()  # nothing written for a call refused up front


def test_open_store_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no store at"):
        fa.open_store(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a funcattr store"):
        fa.open_store(tmp_path / "empty")
