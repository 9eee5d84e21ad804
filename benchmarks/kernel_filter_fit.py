"""The predictor's linear kernel filter alone (``RadialKernelFilter.fit_``, as at the start of training): fitted on
whole training pairs, applied to the test pairs; prints its gain beside the simulator's nominal kernel ratio and
the body RMSE against the target in each form of the filter (``--filter-sizes``: the Fourier form and the 25 x 25
kernel of models saved before it; docs/history/results-analytic-library.md, sixth run: the ridge of the fit; eighth run: the form).

``--fit-on-test`` fits the filter on the test pairs themselves (every slice): the best any linear kernel filter can
do there, a ceiling, not a method. ``--save-model OUT --predictor-of RUN`` writes the filter alone (RUN's image
predictor with this filter and a zero convolution stack) as a ``residual-cnn`` model folder, so that
``diffusionct evaluate`` scores it beside the models (docs/history/results-analytic-library.md, eighth run: the easy gap's ceiling).

    .venv/bin/python benchmarks/kernel_filter_fit.py TRAIN_MANIFEST TEST_MANIFEST b30 b70 [--slices-per-series 2]
        [--filter-sizes 0,25] [--fit-on-test] [--pixel-anchors 0.5,0.75,1.0] [--save-model OUT --predictor-of RUN]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from diffusionct.io.manifest import Manifest
from diffusionct.models.baselines import RadialKernelFilter
from diffusionct.kernels.family import get_kernel
from export_predictor import image_predictor, save_as_residual_cnn

FREQUENCIES = (0.175, 0.325, 0.475, 0.575, 0.675, 0.725)  # cycles/mm; the test's Nyquist is 0.71 (0.7 mm pixels)


def _slices(manifest_path: str, source: str, target: str, per_series: int | None):
    """Source and target slices of the pairs (``per_series`` evenly spaced from each series; None: all)."""
    manifest = Manifest.read(manifest_path)
    a, b, pixel_mm = [], [], []
    for path_a, path_b in manifest.oriented_pairs(f"SIM_{source.upper()}", f"SIM_{target.upper()}"):
        volume_a, volume_b = manifest.read_volume(path_a), manifest.read_volume(path_b)
        count = volume_a.shape[0] if per_series is None else per_series
        for k in np.linspace(0, volume_a.shape[0] - 1, count).round().astype(int):
            a.append(volume_a.hu[k]), b.append(volume_b.hu[k]), pixel_mm.append(volume_a.pixel_mm)
    return torch.tensor(np.array(a)), torch.tensor(np.array(b)), torch.tensor(pixel_mm, dtype=torch.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train")
    parser.add_argument("test")
    parser.add_argument("source", help="simulator kernel name, e.g. b30")
    parser.add_argument("target")
    parser.add_argument("--slices-per-series", type=int, default=2)
    parser.add_argument("--fit-on-test", action="store_true", help="fit on every test slice (a ceiling)")
    parser.add_argument("--filter-sizes", default="0,25",
                        help="forms to test: 0 the Fourier form (default since the eighth run), odd: a cropped kernel")
    parser.add_argument("--save-model", help="write the filter alone as a residual-cnn model folder here")
    parser.add_argument("--predictor-of", help="DiffusionCT run whose image predictor settings the saved model takes")
    parser.add_argument("--pixel-anchors", default="",
                        help="pixel sizes (mm, comma-separated) with their own gain, e.g. 0.5,0.75,1.0 (default: one gain)")
    args = parser.parse_args()
    if bool(args.save_model) != bool(args.predictor_of):
        parser.error("--save-model and --predictor-of go together")
    if args.fit_on_test:
        a, b, pixel_mm = _slices(args.test, args.source, args.target, None)
    else:
        a, b, pixel_mm = _slices(args.train, args.source, args.target, args.slices_per_series)
    test_a, test_b, test_pixel_mm = _slices(args.test, args.source, args.target, 3)
    anchors = tuple(float(v) for v in args.pixel_anchors.split(",") if v)
    kernel_filter = RadialKernelFilter(pixel_anchors=anchors)
    kernel_filter.fit_(a, b, pixel_mm)  # the fit is the same for every form: least squares on whole-slice spectra
    f = np.array(FREQUENCIES)
    nominal = get_kernel(args.target).window(f) / get_kernel(args.source).window(f)
    with torch.no_grad():
        at = torch.tensor(f, dtype=torch.float32)  # at the test's first pixel size (0.7 mm) when the gain depends on it
        gain = kernel_filter.gain_at(at[None], test_pixel_mm[:1])[0].numpy() if anchors else kernel_filter.gain_at(at).numpy()
    body = test_b > -500
    print(f"{args.source} -> {args.target}: fitted on {len(a)} {'test' if args.fit_on_test else 'training'} slices, "
          f"tested on {len(test_a)}")
    print("cycles/mm        " + " ".join(f"{v:6.3f}" for v in f))
    print("nominal ratio    " + " ".join(f"{v:6.2f}" for v in nominal))
    print("fitted gain      " + " ".join(f"{v:6.2f}" for v in gain))
    print(f"test body RMSE: input {float(((test_a - test_b)[body] ** 2).mean().sqrt()):.2f} HU")
    for size in (int(v) for v in args.filter_sizes.split(",")):
        form = RadialKernelFilter(size, pixel_anchors=anchors)
        form.load_state_dict(kernel_filter.state_dict())
        with torch.no_grad():
            out = form(test_a[:, None].float(), test_pixel_mm)[:, 0]
        name = "Fourier form" if size == 0 else f"{size} x {size} kernel"
        print(f"test body RMSE: filter, {name}: {float(((out - test_b)[body] ** 2).mean().sqrt()):.2f} HU")
    if args.save_model:
        _save_filter_alone(kernel_filter, args.predictor_of, args.save_model, "test" if args.fit_on_test else "train")


def _save_filter_alone(kernel_filter: RadialKernelFilter, run: str, out: str, fitted_on: str) -> None:
    """RUN's image predictor with ``kernel_filter``'s gain and a zero stack: the linear filter alone, as a model (in
    the form of RUN's predictor, ``diffusion.predictor.kernel_filter_size``)."""
    model, network = image_predictor(Path(run))
    if network.kernel_filter is None:
        raise SystemExit(f"{run}: its predictor has no kernel filter (diffusion.predictor.kernel_filter)")
    with torch.no_grad():
        network.kernel_filter.gain.copy_(kernel_filter.gain)  # fitted on HU; the filter is linear, so the same gain
        torch.nn.init.zeros_(network.net[-1].weight)
        torch.nn.init.zeros_(network.net[-1].bias)
    save_as_residual_cnn(model, network, Path(out), {"linear_filter_alone": {"fitted_on": fitted_on, "like": run}})
    print(f"saved the filter alone: {out}")


if __name__ == "__main__":
    main()
