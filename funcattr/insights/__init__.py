"""The Insights explorer: attributions of many examples, models, classes and methods in a local
web page (Captum Insights' successor), over funcattr's batched transforms::

    from funcattr import insights, zoo

    model = zoo.load()
    x, labels, masks = zoo.make_shapes(64, seed=zoo.TEST_SEED)
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[(x, labels, masks)])
    url = ex.serve()      # http://127.0.0.1:PORT/ , returns at once (a background thread)
    ex.render()           # or inline in Jupyter / JupyterLab / VS Code
    ex.stop()             # port and thread freed

Features (one per model input): :func:`image`, :func:`text`, :func:`tabular`. Serving needs
the extra: ``pip install 'funcattr[insights]'``. Captum's names are in
``funcattr.compat.insights``.
"""

from ._explorer import Explorer
from ._features import Feature, image, tabular, text
from ._methods import BadRequest

__all__ = ["Explorer", "Feature", "image", "text", "tabular", "BadRequest"]
