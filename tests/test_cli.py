"""The ``funcattr`` command, run as a subprocess: the demo end to end, explain on an image file,
and one-line errors (exit 2, no traceback) for user mistakes."""

import os
import subprocess
import sys

import pytest

from funcattr import zoo


def run(*args, cwd=None, timeout=300, env=None):
    env = dict(os.environ, MPLBACKEND="Agg", **(env or {}))
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


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """Files a user may hand the command by mistake."""
    import struct
    import zlib

    import torch

    d = tmp_path_factory.mktemp("bad")

    def chunk(t, data):
        return struct.pack(">I", len(data)) + t + data + struct.pack(">I", zlib.crc32(t + data) & 0xFFFFFFFF)

    # a 30000 x 30000 PNG in a few bytes: a decompression bomb
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    (d / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    torch.save(torch.zeros(3), d / "bare.pt")
    torch.save({"fc.weight": torch.zeros(2)}, d / "wrong.pt")
    (d / "corrupt.pt").write_bytes(b"not a torch file" * 8)
    (d / "a_file").write_text("x")
    return d


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "no-such-file.png"], "image file not found"),
        (["explain", "{img}", "--method", "magic"], "unknown method 'magic'"),
        (["explain", "{img}", "--target", "99"], "--target 99 is out of range"),
        (["explain", "{img}", "--target", "cat"], "--target must be a class index"),
        (["explain", "{img}", "--model", "torchvision:nonet"], "unknown torchvision model"),
        (["explain", "{img}", "--weights", "missing.pt"], "weights file not found"),
        (["explain", "{img}", "--weights", "{bad}/bare.pt"], "holds a Tensor, not a state_dict"),
        (["explain", "{img}", "--weights", "{bad}/wrong.pt"], "do not fit ShapesNet: keys 31 missing"),
        (["explain", "{img}", "--weights", "{bad}/corrupt.pt"], "not a file saved by torch.save"),
        (["explain", "{bad}/bomb.png"], "too large to decode safely"),
        (["explain", "{bad}/corrupt.pt"], "not an image file"),
        (["explain", "{img}", "--out", "no/such/dir/x.png"], "does not exist"),
        (["explain", "{img}", "--out", "{bad}/a_file/x.png"], "is not a folder"),
        (["explain", "{img}", "--out", "x.bmpx"], "unknown image format '.bmpx'"),
        (["explain", "{img}", "--out", "{img}"], "is the input image"),
        (["demo", "--out", "{bad}/a_file/demo"], "cannot create the folder"),
        (["demo", "--methods", "nothing"], "unknown method 'nothing'"),
    ],
)
def test_user_errors_print_one_line(image_file, bad, tmp_path, args, message):
    r = run(*[a.format(img=image_file, bad=bad) for a in args], cwd=tmp_path, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("funcattr: error:") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_failed_download_is_one_line(image_file, tmp_path):
    """DEFAULT weights need a download; with the network unreachable (a proxy nobody listens
    on, whatever the machine's own access) the command says so in one line."""
    unreachable = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
                   "http_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "", "TORCH_HOME": str(tmp_path / "hub")}
    r = run("explain", image_file, "--model", "torchvision:resnet18", "--weights", "DEFAULT", cwd=tmp_path, timeout=120, env=unreachable)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "could not download" in lines[0], r.stderr


def test_out_without_extension_writes_png_and_says_so(image_file, tmp_path):
    r = run("explain", image_file, "--method", "saliency", "--out", "figure", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "figure.png").stat().st_size > 5_000 and "wrote figure.png" in r.stdout


def test_sixteen_bit_png_keeps_its_values(tmp_path):
    import numpy as np
    from PIL import Image

    from funcattr.cli import _load_image

    a = (np.linspace(0, 1, 64 * 64).reshape(64, 64) * 30000).astype(np.uint16)  # at most 46 % of 16-bit white
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    _, shown = _load_image(str(tmp_path / "g16.png"), (64, 64), None, None, "cpu")
    assert shown.shape == (3, 64, 64)
    assert abs(shown.max().item() - 30000 / 65535) < 0.01 and abs(shown.mean().item() - 15000 / 65535) < 0.01


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "funcattr")
    r = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout and "explain" in r.stdout
