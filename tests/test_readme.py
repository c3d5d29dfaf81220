"""The README is a promise: every ```python block runs (offline), in order, in one shared
namespace as in a notebook session; the two set-up commands are the ones CI runs."""

import pathlib
import re

import matplotlib

matplotlib.use("Agg")

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 4


def test_readme_blocks_run_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    for i, block in enumerate(BLOCKS):
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)


def test_readme_test_command_is_what_ci_runs():
    bash = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    test_cmd = [b.strip() for b in bash if "pytest" in b]
    assert test_cmd, "README must show the test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd[0] in ci
    demo_cmd = [b.strip() for b in bash if "funcattr demo" in b][0]
    assert 'pip install "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"' in demo_cmd
