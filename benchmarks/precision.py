"""Speed and accuracy of the executor's precision and layout choices, against fp32.

    python -m benchmarks.precision --quick               # CPU, small model
    python -m benchmarks.precision --device cuda --compile

For integrated gradients and occlusion: fp32, bf16 autocast (``precision="bf16"``),
channels-last, bf16 + channels-last and (``--compile``) a ``torch.compile``d model inside
``fa.target``. Errors are relative to fp32: ``|a - a32| / max|a32|`` per example, max and
median over all elements.
"""

from __future__ import annotations

import argparse
import json

import torch

import funcattr as fa

from .common import Setup, time_fns


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    scale = ref.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (ref.dim() - 1))
    e = ((a.float() - ref.float()).abs() / scale).flatten()
    return e.max().item(), e.median().item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd model")
    p.add_argument("--json", metavar="PATH")
    a = p.parse_args(argv)
    setup = Setup(torch.device(a.device), a.quick, repeat=3 if a.quick else 10)
    model = setup.model(setup.model_name())
    n = setup.image_size()
    x = torch.randn(1, 3, n, n, device=setup.device)
    w, s = (9, 3) if a.quick else (45, 9)
    methods = {
        "integrated_gradients": lambda m: fa.integrated_gradients(fa.target(m, 3), steps=50 if a.quick else 200),
        "occlusion": lambda m: fa.occlusion(fa.target(m, 3), window=(3, w, w), stride=(3, s, s)),
    }
    cl_model = setup.model(setup.model_name()).to(memory_format=torch.channels_last)
    cl_model.load_state_dict(model.state_dict())
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants = {
        "fp32": (model, x, None),
        "bf16": (model, x, "bf16"),
        "channels_last": (cl_model, x_cl, None),
        "bf16+channels_last": (cl_model, x_cl, "bf16"),
    }
    if a.compile:
        variants["compiled"] = (torch.compile(model), x, None)
    rows = []
    for mname, make in methods.items():
        ref = make(model)(x)
        fns, errs = {}, {}
        for vname, (m, xin, prec) in variants.items():
            attr_fn = make(m)

            def call(attr_fn=attr_fn, xin=xin, prec=prec):
                with fa.options(precision=prec):
                    return attr_fn(xin)

            errs[vname] = rel_err(call(), ref)
            fns[vname] = call
        times = time_fns(fns, setup.device, setup.repeat)
        for vname in variants:
            rows.append(
                {
                    "method": mname,
                    "variant": vname,
                    "seconds": times[vname],
                    "speedup_vs_fp32": times["fp32"] / times[vname],
                    "max_rel_err": errs[vname][0],
                    "median_rel_err": errs[vname][1],
                }
            )
    print(f"\n{setup.device.type}, torch {torch.__version__}, {'quick (small model, 32 px)' if a.quick else 'resnet18, 224 px'}\n")
    print("| method | variant | time | speed-up vs fp32 | max rel. error | median rel. error |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['variant']} | {r['seconds'] * 1e3:.1f} ms | {r['speedup_vs_fp32']:.2f}× "
            f"| {r['max_rel_err']:.2e} | {r['median_rel_err']:.2e} |"
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
