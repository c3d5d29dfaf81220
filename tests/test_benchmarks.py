"""The benchmarks' honest limit evaluates exactly the method's points, once each, in the
chunk size its search found fastest; the incremental FLOPs table adds up. (Speed itself is
measured by ``python -m benchmarks.run``, never asserted here.)"""

import torch
from helpers import close
from models import res_conv_net

from benchmarks import common
from benchmarks.cases_perturbation import _occluded
from benchmarks.incremental import flops_table


def test_limit_covers_every_point_once_in_its_chosen_chunks():
    pts = torch.randn(37, 5)
    seen = []

    def rows(lo, hi):
        seen.append((lo, hi))
        return pts[lo:hi] * 2

    limit = common.Limit(rows, 37, pts.device, probe=8)
    assert limit.chunk in limit.searched and set(limit.searched) == {1, 2, 4, 8, 16, 32, 37}
    assert limit.chunk == min(limit.searched, key=limit.searched.get)
    seen.clear()
    out = torch.cat(limit())
    close(out, pts * 2)
    assert seen == [(lo, min(37, lo + limit.chunk)) for lo in range(0, 37, limit.chunk)]


def test_forward_and_grad_limits_equal_one_plain_batch():
    m = res_conv_net()
    x = torch.randn(1, 3, 8, 8)
    pts = _occluded(x, (3, 4, 4), (3, 2, 2), 0.0)
    assert pts.shape[0] == 1 + 9  # the unoccluded image and every window
    with torch.no_grad():
        ref = m(pts)
    close(torch.cat(common.forward_limit(m, pts)()), ref, rtol=1e-5, atol=1e-6)
    p = pts.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m(p)[:, 2].sum(), p)
    close(torch.cat(common.grad_limit(m, pts, 2)()), g, rtol=1e-5, atol=1e-6)


def test_flops_table_totals_its_rows():
    torch.manual_seed(0)
    import torchvision

    m = torchvision.models.resnet18(weights=None).eval()
    table = flops_table(m, 64, (3, 13, 13), (3, 3, 3)).splitlines()
    assert table[2].startswith("| conv1 |") and table[-1].startswith("| **total**")
    rows = [line.split("|") for line in table[2:-1]]
    plain = sum(float(r[3].split()[0]) for r in rows) / 1e3
    assert abs(plain - float(table[-1].split("|")[3].split()[0])) < 2e-3 + 1e-3 * plain
