"""`funcattr attribute`: a store from the embedded model and data or from a folder of image
files, `--summary`, resume, and one-line errors (exit 2) for user mistakes. Run in process
(`cli.main(argv)`); the subprocess and torchrun runs are in test_dataset_resume.py."""

import pytest
import torch

pytest.importorskip("zarr")

import funcattr as fa  # noqa: E402
from funcattr import cli, zoo  # noqa: E402

BASE = ["attribute", "--data", "zoo:shapes:12", "--batch-size", "4"]


def attribute(capsys, *args):
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    """The one line of a failed command (the progress bar it may have shown is erased)."""
    lines = [l for l in err.replace("\r", "\n").splitlines() if l.strip() and not l.startswith("funcattr attribute:")]
    assert len(lines) == 1 and lines[0].startswith("funcattr: error:"), err
    assert "Traceback" not in err
    return lines[0]


def test_attribute_summary_and_resume(tmp_path, capsys):
    out = str(tmp_path / "gradcam.zarr")
    code, stdout, err = attribute(capsys, *BASE, "--method", "gradcam", "--metrics", "deletion,pointing", "--dtype", "float16", "--out", out)
    assert code == 0, err
    assert f"wrote {out}: 12 examples, gradcam attributions [12, 1, 64, 64] float16" in stdout
    assert "| deletion ↓" in stdout and "| pointing ↑" in stdout and "12/12" in stdout
    assert "ex/s" in err  # the progress bar: examples per second and ETA
    store = fa.open_store(out)
    assert store.complete and store.attributions.dtype == torch.float16
    _, y, _ = zoo.make_shapes(12, seed=zoo.TEST_SEED)
    assert torch.equal(store.targets, y)
    assert store.manifest["settings"]["method"] == "gradcam"

    sal = str(tmp_path / "saliency.zarr")
    assert attribute(capsys, *BASE, "--method", "saliency", "--metrics", "pointing", "--out", sal)[0] == 0
    code, stdout, _ = attribute(capsys, "attribute", "--summary", out, sal)
    assert code == 0
    rows = [l for l in stdout.splitlines() if l.startswith("| ")]
    assert len(rows) == 3 and "gradcam" in rows[1] and "saliency" in rows[2]
    mean = store.metrics["pointing"].mean().item()
    assert f"{mean:.4f}" in rows[1]

    before = store.attributions[:]
    code, stdout, _ = attribute(capsys, *BASE, "--method", "gradcam", "--metrics", "deletion,pointing", "--dtype", "float16", "--out", out)
    assert code == 0 and torch.equal(fa.open_store(out).attributions[:], before)  # nothing to redo

    code, _, err = attribute(capsys, *BASE, "--method", "ig", "--out", out)
    line = one_error_line(err)
    assert code == 2 and "different settings" in line and "--overwrite" in line
    code, _, err = attribute(capsys, *BASE, "--method", "saliency", "--metrics", "pointing", "--out", out, "--overwrite")
    assert code == 0, err
    assert fa.open_store(out).manifest["settings"]["method"] == "saliency"


def _save_images(folder, n, seed=zoo.TEST_SEED):
    from torchvision.utils import save_image

    x, y, _ = zoo.make_shapes(n, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        sub = folder / zoo.CLASSES[int(y[i])]
        sub.mkdir(exist_ok=True)
        save_image(x[i], str(sub / f"{i:03d}.png"))
        paths.append(sub / f"{i:03d}.png")
    return y, paths


def test_a_folder_of_images_labelled_by_class_folders(tmp_path, capsys):
    _, paths = _save_images(tmp_path / "imgs", 6)
    out = str(tmp_path / "s.zarr")
    code, _, err = attribute(capsys, "attribute", "--data", str(tmp_path / "imgs"), "--method", "saliency", "--batch-size", "4", "--out", out)
    assert code == 0, err
    # files in sorted order; each folder is named after one of the model's classes
    files = sorted(paths, key=lambda p: (p.parent.name, p.name))
    assert fa.open_store(out).targets.tolist() == [zoo.CLASSES.index(p.parent.name) for p in files]


def test_a_flat_folder_has_no_labels(tmp_path, capsys):
    from torchvision.utils import save_image

    x, _, _ = zoo.make_shapes(3, seed=zoo.TEST_SEED)
    (tmp_path / "flat").mkdir()
    for i in range(3):
        save_image(x[i], str(tmp_path / "flat" / f"{i}.png"))
    out = str(tmp_path / "s.zarr")
    code, _, err = attribute(capsys, "attribute", "--data", str(tmp_path / "flat"), "--method", "saliency", "--out", out)
    assert code == 2 and "carry no label" in one_error_line(err)
    code, _, err = attribute(capsys, "attribute", "--data", str(tmp_path / "flat"), "--method", "saliency", "--target", "pred", "--out", out)
    assert code == 0, err
    s = fa.open_store(out)
    assert torch.equal(s.targets, s.predictions)


def test_a_broken_image_file_is_named(tmp_path, capsys):
    _, paths = _save_images(tmp_path / "imgs", 6)
    paths[4].write_bytes(b"not a png")
    files = sorted(paths, key=lambda p: (p.parent.name, p.name))
    k = files.index(paths[4])
    code, _, err = attribute(capsys, "attribute", "--data", str(tmp_path / "imgs"), "--method", "saliency", "--batch-size", "2", "--out", str(tmp_path / "s.zarr"))
    line = one_error_line(err)
    assert code == 2 and f"dataset item {k} could not be loaded" in line and str(paths[4]) in line


@pytest.mark.parametrize(
    "args, message",
    [
        (["--method", "magic"], "unknown method 'magic'"),
        (["--target", "cat"], "--target must be label, pred or a class index"),
        (["--target", "9"], "target 9 is out of range for a model with 6 classes"),
        (["--data", "zoo:cats:3"], "unknown dataset 'zoo:cats:3'"),
        (["--data", "zoo:shapes:x"], "N must be a number of images"),
        (["--data", "no/such/folder"], "no such folder"),
        (["--metrics", "auc"], "unknown metric 'auc'"),
        (["--model", "torchvision:nonet"], "unknown torchvision model"),
        (["--weights", "missing.pt"], "weights file not found"),
        (["--out", "{file}/s.zarr"], "cannot write the store at"),
        (["--out", None], "--out STORE is required"),
        (["--summary", "{tmp}/nothing.zarr"], "no store at"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_user_errors_print_one_line(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("")
    argv = ["attribute", "--data", "zoo:shapes:4", "--method", "saliency", "--out", str(tmp_path / "s.zarr")]
    for flag, value in zip(args[::2], args[1::2]):
        i = argv.index(flag) if flag in argv else None
        if value is None:
            argv[i : i + 2] = []
            continue
        value = value.format(file=tmp_path / "file", tmp=tmp_path)
        if i is None:
            argv += [flag, value]
        else:
            argv[i + 1] = value
    code, _, err = attribute(capsys, *argv)
    assert code == 2 and message in one_error_line(err)
