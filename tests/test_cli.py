"""The ``funcattr`` command, run as a subprocess: the demo end to end, explain on an image file,
and one-line errors (exit 2, no traceback) for user mistakes."""

import os
import subprocess
import sys

import pytest

from funcattr import zoo


def run(*args, cwd=None, timeout=300):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "funcattr.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    from torchvision.utils import save_image

    x, _, _ = zoo.make_shapes(1, seed=zoo.TEST_SEED)
    path = tmp_path_factory.mktemp("img") / "shape.png"
    save_image(x[0], str(path))
    return str(path)


def test_demo_writes_figures_and_a_localization_table(tmp_path):
    out = tmp_path / "demo"
    r = run("demo", "--out", str(out), "--images", "12")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ["occlusion", "ig", "saliency", "smoothgrad", "gradcam", "guided-gradcam", "cam", "deeplift"]:
        assert f"| {name}" in r.stdout
    assert "Top-3 predictions" in r.stdout and "pointing game" in r.stdout
    pngs = sorted(p.name for p in out.iterdir())
    assert pngs == [f"demo-{i}.png" for i in range(4)]
    assert all((out / p).stat().st_size > 10_000 for p in pngs)


@pytest.mark.parametrize("method", ["ig", "occlusion", "gradcam", "cam", "deeplift", "smoothgrad", "guided-gradcam"])
def test_explain_an_image_file(image_file, tmp_path, method):
    out = tmp_path / f"{method}.png"
    r = run("explain", image_file, "--method", method, "--target", "top", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "top predictions:" in r.stdout and out.stat().st_size > 5_000


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "no-such-file.png"], "image file not found"),
        (["explain", "{img}", "--method", "magic"], "unknown method 'magic'"),
        (["explain", "{img}", "--target", "99"], "--target 99 is out of range"),
        (["explain", "{img}", "--target", "cat"], "--target must be a class index"),
        (["explain", "{img}", "--model", "torchvision:resnet18", "--weights", "DEFAULT"], "could not download"),
        (["explain", "{img}", "--model", "torchvision:nonet"], "unknown torchvision model"),
        (["explain", "{img}", "--weights", "missing.pt"], "weights file not found"),
        (["demo", "--methods", "nothing"], "unknown method 'nothing'"),
    ],
)
def test_user_errors_print_one_line(image_file, tmp_path, args, message):
    r = run(*[a.format(img=image_file) for a in args], cwd=tmp_path, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("funcattr: error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "funcattr")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout and "explain" in r.stdout
