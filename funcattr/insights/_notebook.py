"""The explorer inside a notebook: the served page in an iframe.

An iframe of the local server works the same in Jupyter Notebook, JupyterLab and VS Code (no
widget extension to install or to get out of step with the front end, which is what broke
Captum Insights' ``render()`` in JupyterLab, captum#1313). In Colab the kernel's port is
served through Colab's own proxy.
"""

from __future__ import annotations

import html

__all__ = ["bundle", "in_colab", "show"]


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def _src(explorer, proxy: str | None) -> str:
    url = explorer.url
    if proxy:
        return proxy.format(port=explorer.port)
    return url


def _html(explorer, height: int = 860, proxy: str | None = None) -> str:
    if explorer.url is None:
        return ("<p><b>funcattr insights</b> is not serving: call <code>.render()</code> or "
                "<code>.serve()</code>.</p>")
    src = html.escape(_src(explorer, proxy), quote=True)
    return (f'<iframe src="{src}" title="funcattr insights" width="100%" height="{int(height)}" '
            f'style="border: 1px solid #ddd; border-radius: 4px" loading="eager"></iframe>'
            f'<p style="font-size: 12px">funcattr insights at <a href="{src}" target="_blank" rel="noopener">{src}</a></p>')


def bundle(explorer, height: int = 860, proxy: str | None = None) -> dict:
    """The IPython display bundle: ``text/html`` (the iframe) and ``text/plain``."""
    state = f"serving at {explorer.url}" if explorer.url else "not serving"
    return {"text/html": _html(explorer, height, proxy), "text/plain": f"<funcattr insights explorer, {state}>"}


class _View:
    def __init__(self, data: dict):
        self.data = data

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data


def show(explorer, height: int, proxy: str | None) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(f"funcattr insights: open {explorer.url} in a browser")
        return
    if get_ipython() is None:
        print(f"funcattr insights: open {explorer.url} in a browser")
        return
    if in_colab():  # the kernel's port through Colab's proxy
        from google.colab import output

        output.serve_kernel_port_as_iframe(explorer.port, height=str(int(height)))
    else:
        display(_View(bundle(explorer, height, proxy)))
