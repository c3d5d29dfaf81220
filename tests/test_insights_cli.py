"""``funcattr insights`` as a user runs it (a subprocess): it serves offline, prints the URL, and
stops cleanly on Ctrl+C; ``--images DIR`` in ImageFolder layout gives labels; mistakes are one
line on stderr and exit status 2."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pytest
import torch
from PIL import Image

from funcattr import zoo

if not os.environ.get("CI"):  # in CI (.ci/run installs funcattr[insights]) a missing server fails
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")


def start(*args, cwd=None):
    """Start the command; return (process, url, stderr lines so far)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    p = subprocess.Popen([sys.executable, "-m", "funcattr", "insights", "--no-browser", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(l) for l in p.stdout], daemon=True).start()
    out = []
    while True:
        try:
            line = lines.get(timeout=240)
        except queue.Empty:
            p.kill()
            raise AssertionError(f"no URL printed; stdout {out}, stderr {p.stderr.read()}")
        out.append(line)
        if line.startswith("serving at "):
            return p, line.split()[2], out, lines


def stop(p, lines):
    p.send_signal(signal.SIGINT)
    assert p.wait(60) == 0, p.stderr.read()
    rest = []
    while not lines.empty():
        rest.append(lines.get())
    return "".join(rest)


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=120) as r:
        return json.loads(r.read())


def post(url, path, body):
    req = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def test_serves_the_zoo_model_on_held_out_shapes_and_stops_on_ctrl_c():
    p, url, out, lines = start()
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    try:
        assert url.startswith("http://127.0.0.1:") and "held-out shapes" in "".join(out)
        init = get(url, "api/init")
        assert init["classes"] == list(zoo.CLASSES) and init["has_labels"] and init["has_masks"]
        res = post(url, "api/fetch", {"method": "integrated_gradients", "args": {"steps": 8}, "count": 2})
        assert len(res["examples"]) == 2 and "localization" in res["examples"][0]["models"][0]
        with urllib.request.urlopen(url, timeout=30) as r:
            assert b"static/app.js" in r.read()
    finally:
        rest = stop(p, lines)
    assert "stopped" in rest
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """ImageFolder layout: two zoo classes, a folder that is no class, greyscale and RGBA files."""
    root = tmp_path_factory.mktemp("images")
    x, y, _ = zoo.make_shapes(12, seed=zoo.TEST_SEED)
    by_class = {}
    for xi, yi in zip(x, y):
        by_class.setdefault(zoo.CLASSES[int(yi)], []).append(xi)
    chosen = sorted(by_class)[:2]
    for name in chosen + ["mystery"]:
        (root / name).mkdir()
    for k, name in enumerate(chosen):
        for j, xi in enumerate(by_class[name][:2]):
            arr = (xi.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
            img = Image.fromarray(arr)
            img = img.convert("L") if j == 1 else img.convert("RGBA") if k == 1 else img
            img.save(root / name / f"{j}.png")
    Image.fromarray((x[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(root / "mystery" / "m.png")
    (root / "mystery" / "notes.txt").write_text("not an image")
    return root, chosen


def test_images_folder_gives_labels(folder):
    root, chosen = folder
    p, url, out, lines = start("--images", str(root))
    try:
        res = post(url, "api/fetch", {"method": "saliency", "count": 8, "scores": False})
        labels = [None if e["label"] is None else e["label"]["name"] for e in res["examples"]]
        assert labels == [chosen[0]] * 2 + [chosen[1]] * 2 + [None]
        assert all(e["inputs"][0]["c"] == 3 and e["inputs"][0]["w"] == 64 for e in res["examples"])
    finally:
        stop(p, lines)
    assert "'mystery' is not one of the model's classes" in p.stderr.read()


def test_torchvision_model_on_a_folder(folder):
    root, _ = folder
    p, url, out, lines = start("--model", "torchvision:resnet18", "--images", str(root))
    try:
        init = get(url, "api/init")
        assert len(init["classes"]) == 1000 and init["classes"][0] == "tench"  # ImageNet names, from torchvision's metadata
        res = post(url, "api/fetch", {"method": "saliency", "count": 1, "scores": False})
        img = res["examples"][0]["inputs"][0]
        assert (img["w"], img["h"]) == (224, 224)
        bad = urllib.request.Request(url + "api/fetch", json.dumps({"method": "integrated_gradients", "args": {"steps": 500}, "count": 16}).encode(),
                                     {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)
        message = json.loads(err.value.read())["error"]
        assert err.value.code == 400 and "would take about" in message and "the limit is 60 s" in message
    finally:
        stop(p, lines)
    assert "randomly initialized" in p.stderr.read()


def test_help_lists_the_options():
    r = subprocess.run([sys.executable, "-m", "funcattr", "insights", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    for opt in ("--model", "--weights", "--images", "--port", "--host", "--no-browser"):
        assert opt in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--images", "no-such-folder"], "image folder not found: no-such-folder"),
    (["--images", "{empty}"], "no images"),
    (["--model", "torchvision:nonet"], "unknown torchvision model 'nonet'"),
    (["--model", "magic"], "unknown model 'magic'"),
    (["--model", "torchvision:resnet18"], "--images DIR is needed with torchvision:resnet18"),
    (["--weights", "missing.pt"], "weights file not found: missing.pt"),
    (["--port", "{busy}"], "cannot serve on 127.0.0.1:"),
    (["--host", "203.0.113.7"], "cannot serve on 203.0.113.7:"),
])
def test_mistakes_are_one_line_and_exit_2(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        args = [a.format(empty=tmp_path / "empty", busy=s.getsockname()[1]) for a in args]
        r = subprocess.run([sys.executable, "-m", "funcattr", "insights", "--no-browser", *args], capture_output=True,
                           text=True, timeout=300, cwd=tmp_path, env=dict(os.environ, MPLBACKEND="Agg"))
    finally:
        s.close()
    assert r.returncode == 2, (r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("funcattr: error:")]
    assert len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr
