"""The explorer's speed as a user sees it: from a click on "Fetch" to four examples drawn in a
real browser (headless Chromium), integrated gradients with 50 steps on the embedded zoo model;
and how many HTTP requests a page takes. Not a test: numbers for the issue's closing note.

    python -m benchmarks.insights                  # 5 fetches, IG 50 steps, 4 examples
    python -m benchmarks.insights --repeat 9 --no-scores

Columns: the page's own clock from the click to the cards painted (requestAnimationFrame after
drawing), the API round trip seen by the browser (Resource Timing), the attribution call inside
the server, and the hardware limit: the model's plain forward+backward over the same
4 × 50 path points as one batch, timed in this process. Each fetch shows the next four examples
(their predictions are computed during the fetch too).

Then, in this process without the browser, the same pages as one batched call (``fetch`` of
four) against one example at a time (four ``fetch`` calls of one, the way Captum Insights
evaluated its examples "until we have batch label support").
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import tempfile
import time

import torch


def limit_seconds(model, x, steps: int, repeat: int) -> float:
    pts = x.repeat(steps, 1, 1, 1)
    times = []
    for _ in range(repeat + 1):
        p = pts.clone().requires_grad_()
        t0 = time.perf_counter()
        model(p)[:, 0].sum().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def batched_vs_one_at_a_time(ex, count: int, steps: int, scores: bool, repeat: int, offset: int):
    """Median seconds for a page of ``count`` examples in one ``fetch`` and one example per ``fetch``."""
    args = {"steps": steps}
    page, single = [], []
    for r in range(repeat + 1):  # the first round warms up
        o = offset + r * count
        t0 = time.perf_counter()
        got = ex.fetch(method="integrated_gradients", args=args, count=count, offset=o, scores=scores)
        t1 = time.perf_counter()
        for k in range(count):
            ex.fetch(method="integrated_gradients", args=args, count=1, offset=o + k, scores=scores)
        t2 = time.perf_counter()
        assert len(got["examples"]) == count and got["calls"] == 1
        if r:
            page.append(t1 - t0)
            single.append(t2 - t1)
    return statistics.median(page), statistics.median(single)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--no-scores", action="store_true", help="without the deletion/insertion and localization scores")
    a = ap.parse_args(argv)

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from funcattr import insights, zoo

    model = zoo.load()
    x, y, masks = zoo.make_shapes(8 * a.count * (a.repeat + 2), seed=zoo.TEST_SEED)
    ex = insights.Explorer(model, classes=zoo.CLASSES, data=[(x, y, masks)], layers=model.last_conv)
    url = ex.serve()
    profile = tempfile.mkdtemp(prefix="funcattr-insights-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    state = lambda: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")  # noqa: E731
    try:
        hash_ = f"#m=integrated_gradients&a.steps={a.steps}&n={a.count}" + ("&sc=0" if a.no_scores else "")
        d.get(url + hash_)
        WebDriverWait(d, 60).until(lambda _: state() == "ready")
        on_load = 1 + d.execute_script("return performance.getEntriesByType('resource').length")
        drawn, trip, server = [], [], []
        for r in range(a.repeat + 1):  # the first fetch warms up (measured separately)
            d.execute_script("window.__insightsDrawn = null; performance.clearResourceTimings();")
            d.find_element(By.ID, "fetch").click()
            WebDriverWait(d, 600).until(lambda _: d.execute_script("return window.__insightsDrawn"))
            if state() != "ready":
                raise SystemExit("fetch failed: " + d.find_element(By.ID, "error-text").text)
            got = d.execute_script("return window.__insightsDrawn")
            entries = d.execute_script(
                "return performance.getEntriesByType('resource').map(e => [e.name, e.responseEnd - e.startTime])")
            assert got["examples"] == a.count and len(entries) == 1 and entries[0][0].endswith("api/fetch"), entries
            if r == 0:
                first = got["ms"] / 1000
                continue
            drawn.append(got["ms"] / 1000)
            trip.append(entries[0][1] / 1000)
            server.append(got["server"])
        per_fetch = len(entries)
    finally:
        d.quit()
        ex.stop()
        shutil.rmtree(profile, ignore_errors=True)
    page, single = batched_vs_one_at_a_time(ex, a.count, a.steps, not a.no_scores, a.repeat, offset=a.count * (a.repeat + 2))
    limit = limit_seconds(model, x[: a.count], a.steps, a.repeat)

    med = statistics.median
    print(f"## Insights: fetch → {a.count} examples drawn, integrated gradients {a.steps} steps, zoo model\n")
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d')}, scores {'off' if a.no_scores else 'on (deletion + insertion AUC, pointing game, mass inside)'}; "
          f"median of {a.repeat} fetches (min in brackets), each showing the next {a.count} examples.\n")
    print("| click → drawn (browser) | API round trip | attribution in the server | limit: fwd+bwd of the same points, one batch | first fetch (warm-up) |")
    print("|---|---|---|---|---|")
    print(f"| {med(drawn):.3f} s ({min(drawn):.3f}) | {med(trip):.3f} s ({min(trip):.3f}) | {med(server):.3f} s ({min(server):.3f}) "
          f"| {limit:.3f} s | {first:.3f} s |")
    print(f"\nIn the server, without the browser: a page of {a.count} in one batched call {page:.3f} s; "
          f"the same examples one at a time (as Captum Insights) {single:.3f} s ({single / page:.1f}x).")
    print(f"\nRequests: {on_load} to open the page (the document, app.js, style.css, api/init; nothing from elsewhere), "
          f"{per_fetch} per Fetch (api/fetch: every example, model and class of the page in one batched call).")


if __name__ == "__main__":
    main()
