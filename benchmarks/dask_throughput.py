"""Series per minute of `standardize` over a folder tree: this process, and a Dask LocalCluster of 1 and 2 workers.

    .venv/bin/python benchmarks/dask_throughput.py [--series 6] [--slices 8] [--size 256] [--model DIR]

Simulates a tree of small b30 series (once, into a temporary folder), then standardizes it with the shipped
model (or --model) three ways and checks that every run wrote the same bytes. Prints the CPU's matmul rate
beside the timings (the benchmarks' one probe) so numbers from different machines can be compared.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from diffusionct.devices import matmul_gflops  # the one machine-speed probe
from diffusionct.simulate.scanner import ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator
from diffusionct.standardize_runs import run_standardize


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=6)
    parser.add_argument("--slices", type=int, default=8)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dask_throughput.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = SimulationConfig(cases=args.series, kernels=["b30", "b70"], thicknesses_mm=[2.0], slices=args.slices, seed=4,
                                  scanner=ScannerSettings(size=args.size, pixel_mm=0.7 * 512 / args.size))
        Simulator(config).run_phantoms(tmp / "sim")
        tree = tmp / "tree"
        for folder in sorted((tmp / "sim").rglob("sim_b30")):
            shutil.copytree(folder, tree / folder.relative_to(tmp / "sim"))
        rows, digests = [], set()
        for name, scheduler in (("this process", None), ("dask local:1", "local:1"), ("dask local:2", "local:2")):
            out = tmp / name.replace(" ", "_").replace(":", "")
            start = time.perf_counter()
            run_standardize(tree, out, model_dir=args.model, device="cpu", scheduler=scheduler)
            seconds = time.perf_counter() - start
            digests.add(_digest(out))
            rows.append({"run": name, "seconds": round(seconds, 1), "series_per_minute": round(60 * args.series / seconds, 2)})
            print(rows[-1])
    result = {"series": args.series, "slices": args.slices, "size": args.size, "torch_threads": torch.get_num_threads(),
              "matmul_gflops": round(matmul_gflops(torch.device("cpu")), 1), "same_bytes": len(digests) == 1, "runs": rows}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
