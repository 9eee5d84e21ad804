"""``diffusionct demo``: the whole pipeline on the built-in default, end to end.

1. simulate a small training set and a disjoint test set (other seeds, 5 mm slices as the paper's
   test set), reconstructed with the default gap's measured kernels (Siemens B30f and B70f);
2. standardize the test set with the shipped default model;
3. make the calibrated linear filter (the physics baseline); train DiffusionCT and the baselines briefly
   on the small training set (to show the pipeline; the
   brief models are not good models);
4. evaluate every method on the test set and write the HTML report.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from diffusionct.config import RunConfig
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_dir
from diffusionct.methods import (AUTOENCODER, DDPM, DIFFUSIONCT, HISTOGRAM, IDENTITY, KERNEL_FILTER, PIX2PIX,
                                 RESIDUAL_CNN)
from diffusionct.methods.library import default_model_dir
from diffusionct.simulate.scanner import ScannerSettings
from diffusionct.simulate.simulator import SimulationConfig, Simulator
from diffusionct.standardize_runs import run_standardize
from diffusionct.train.methods import train_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoPlan:
    size: int
    pixel_mm: float
    train_cases: int
    train_slices: int
    test_cases: int
    test_slices: int
    diffusion_steps: int
    autoencoder_steps: int
    cnn_steps: int
    crop: int


FULL = DemoPlan(size=512, pixel_mm=0.7, train_cases=3, train_slices=6, test_cases=3, test_slices=6,
                diffusion_steps=300, autoencoder_steps=300, cnn_steps=300, crop=64)
QUICK = DemoPlan(size=192, pixel_mm=1.0, train_cases=2, train_slices=3, test_cases=2, test_slices=3,
                 diffusion_steps=15, autoencoder_steps=15, cnn_steps=15, crop=32)
BUDGET_SECONDS = {"full": 480.0, "quick": 150.0}  # what `make demo` (<= 10 min with the install) and --quick aim at

# The stage times of FULL on the machine where the probe read REFERENCE_GFLOPS (docs/benchmarks.md, 2026-12-01:
# 7 min 20 s in all), as seconds per unit of work: a simulated or standardized 512 x 512 slice, a brief-training
# step of all seven methods on 64 px crops, an evaluated 512 x 512 test slice (eight methods and the features).
REFERENCE_GFLOPS = 413.0
SECONDS_PER = {"simulated_slice": 0.91, "standardized_slice": 1.05, "training_step": 0.46, "evaluated_slice": 12.9,
               "fixed": 10.0}


def expected_seconds(plan: DemoPlan, gflops: float) -> dict[str, float]:
    """The demo's stage times on a machine whose matmul probe reads ``gflops``, from the reference timings."""
    area = (plan.size / 512) ** 2
    work = {"simulate": SECONDS_PER["simulated_slice"] * area * (plan.train_cases * plan.train_slices * 2
                                                                 + plan.test_cases * plan.test_slices),
            "standardize": SECONDS_PER["standardized_slice"] * area * plan.test_cases * plan.test_slices,
            "train": SECONDS_PER["training_step"] * (plan.crop / 64) ** 2 * max(plan.diffusion_steps, plan.cnn_steps),
            "evaluate": SECONDS_PER["evaluated_slice"] * area * plan.test_cases * plan.test_slices,
            "start-up": SECONDS_PER["fixed"]}
    slowdown = REFERENCE_GFLOPS / max(gflops, 1e-3)
    return {stage: seconds * slowdown for stage, seconds in work.items()}


def plan_for_budget(base: DemoPlan, gflops: float, budget_s: float) -> DemoPlan:
    """The largest plan of a ladder (fewer test slices, then fewer training steps, then fewer cases) that is
    expected to fit ``budget_s`` on this machine; the smallest rung when none does."""
    rungs = [base]
    for test_slices, steps in ((5, 250), (4, 200), (3, 150), (3, 100), (2, 80)):
        if test_slices < base.test_slices and steps < base.cnn_steps:
            rungs.append(replace(base, test_slices=test_slices, train_slices=min(base.train_slices, test_slices + 1),
                                 diffusion_steps=steps, autoencoder_steps=steps, cnn_steps=steps))
    rungs.append(replace(rungs[-1], train_cases=2, test_cases=2))
    for plan in rungs:
        if sum(expected_seconds(plan, gflops).values()) <= budget_s:
            return plan
    return rungs[-1]


# trained briefly on the demo's own data, in this order; DiffusionCT last (its brief run beside the shipped model)
BRIEFLY_TRAINED = (IDENTITY, HISTOGRAM, RESIDUAL_CNN, PIX2PIX, DDPM, AUTOENCODER, DIFFUSIONCT)
DEMO_KERNELS = ("B30f", "B70f")  # the shipped default gap's measured Siemens kernels (its source and target)


def _brief_config(plan: DemoPlan) -> RunConfig:
    return RunConfig.load(overrides=[
        *(f"data.{side}_kernel=SIM_{kernel.upper()}" for side, kernel in zip(("source", "target"), DEMO_KERNELS)),
        "autoencoder.space_to_depth=true",  # as the shipped model (docs/model.md)
        f"phase1.steps={plan.autoencoder_steps}", f"phase1.crop={plan.crop}", "phase1.batch_size=4",
        f"phase1.validate_every={max(1, plan.autoencoder_steps // 2)}", f"phase1.checkpoint_every={plan.autoencoder_steps}",
        f"phase2.steps={plan.diffusion_steps}", f"phase2.crop={plan.crop}", "phase2.batch_size=4",
        f"phase2.validate_every={max(1, plan.diffusion_steps // 2)}", f"phase2.checkpoint_every={plan.diffusion_steps}",
        f"baselines.residual_cnn.training.steps={plan.cnn_steps}", f"baselines.residual_cnn.training.crop={plan.crop}",
        f"baselines.residual_cnn.training.checkpoint_every={plan.cnn_steps}",
        f"baselines.residual_cnn.training.validate_every={max(1, plan.cnn_steps // 2)}",
        *(f"diffusion.predictor.training.{key}={value}" for key, value in (
            ("steps", plan.cnn_steps), ("crop", plan.crop), ("batch_size", 4), ("checkpoint_every", plan.cnn_steps),
            ("validate_every", max(1, plan.cnn_steps // 2)))),
        *(f"baselines.{name}.training.{key}={value}" for name in (PIX2PIX, DDPM)
          for key, value in (("steps", plan.cnn_steps), ("crop", plan.crop), ("batch_size", 4),
                             ("checkpoint_every", plan.cnn_steps), ("validate_every", max(1, plan.cnn_steps // 2)))),
    ])


def choose_plan(quick: bool, budget_s: float | None, device: str) -> DemoPlan:
    """Measure this machine, then fit the demo to its time budget; says the plan and the expected time."""
    from diffusionct.devices import matmul_gflops, resolve_device

    base, budget = (QUICK, BUDGET_SECONDS["quick"]) if quick else (FULL, BUDGET_SECONDS["full"])
    budget = budget if budget_s is None else budget_s
    gflops = matmul_gflops(resolve_device(device))
    plan = plan_for_budget(base, gflops, budget)
    stages = expected_seconds(plan, gflops)
    log.info("this machine: float32 matmul %.0f GFLOP/s (the stage times were measured at %.0f); budget %.1f min",
             gflops, REFERENCE_GFLOPS, budget / 60)
    log.info("plan: %d training + %d test cases, %d test slices of %d px, %d training steps per method%s",
             plan.train_cases, plan.test_cases, plan.test_slices, plan.size, plan.cnn_steps,
             "" if plan == base else " (scaled down to fit the budget)")
    log.info("expected time: %.1f min (%s)", sum(stages.values()) / 60,
             ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in stages.items()))
    return plan


def run_demo(out: Path, quick: bool = False, overwrite: bool = False, device: str = "cpu", seed: int = 0,
             budget_s: float | None = None) -> Path:
    """Run the demo into ``out`` (written atomically), sized to this machine's speed; returns the report path."""
    plan = choose_plan(quick, budget_s, device)
    model_dir = default_model_dir()
    if not (model_dir / "config.json").is_file():
        raise DiffusionCTError(f"the shipped default model is missing from {model_dir}; reinstall the package")
    started = time.perf_counter()
    stage = _Stages()
    with atomic_output_dir(Path(out), overwrite=overwrite) as root:
        scanner = ScannerSettings(size=plan.size, pixel_mm=plan.pixel_mm)
        with stage("simulate training and test sets"):
            Simulator(SimulationConfig(cases=plan.train_cases, thicknesses_mm=[1.0, 3.0], slices=plan.train_slices,
                                       seed=seed + 100, scanner=scanner, kernels=list(DEMO_KERNELS)),
                      device=device).run_phantoms(root / "data" / "train")
            test_manifest = Simulator(SimulationConfig(cases=plan.test_cases, thicknesses_mm=[5.0], slices=plan.test_slices,
                                                       seed=seed + 200, scanner=scanner, n_tumours=2, kernels=list(DEMO_KERNELS)),
                                      device=device).run_phantoms(root / "data" / "test")
        with stage("standardize the test set with the shipped model"):
            for series in sorted((root / "data" / "test").glob(f"case_*/*/sim_{DEMO_KERNELS[0]}")):
                run_standardize(series, root / "standardized" / series.parent.parent.name, model_dir=None, seed=seed,
                                device=device)
        config = _brief_config(plan)
        models = [model_dir]
        with stage("the calibrated linear filter of the two kernels' profiles (the physics baseline)"):
            train_method(KERNEL_FILTER, None, root / "models" / KERNEL_FILTER, config, torch.device(device))
            models.append(root / "models" / KERNEL_FILTER)
        for method in BRIEFLY_TRAINED:
            with stage(f"train {method} briefly"):
                train_method(method, root / "data" / "train" / "manifest.json", root / "models" / method, config,
                             torch.device(device))
            models.append(root / "models" / method)
        with stage("evaluate every method"):
            from diffusionct.report.evaluation_report import evaluate_to_report

            names = [f"{DIFFUSIONCT}-shipped", KERNEL_FILTER, *BRIEFLY_TRAINED[:-1], f"{DIFFUSIONCT}-brief"]
            report = evaluate_to_report(test_manifest, models, root / "report", names=names, seed=seed, device=device,
                                        paths_under=root,
                                        title="DiffusionCT demo", notes=[
                                            f"Simulated test set: {plan.test_cases} cases, 5 mm, {plan.size}x{plan.size} at "
                                            f"{plan.pixel_mm} mm; training set of other cases at 1 and 3 mm.",
                                            "diffusionct-shipped is the packaged default model; kernel-filter is the "
                                            "calibrated linear filter of the two kernels' measured profiles (the physics "
                                            "baseline, no training); the other models were trained for a few steps only, "
                                            "to show the pipeline, and are not good models.",
                                            "'input' is the unchanged source-kernel image (the paper's baseline row)."])
    log.info("demo finished in %.1f s", time.perf_counter() - started)
    return Path(out) / "report" / report.name


class _Stages:
    """Logs each stage with its duration (the demo's progress)."""

    def __init__(self):
        self.index = 0

    def __call__(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def stage():
            self.index += 1
            log.info("[%d] %s ...", self.index, name)
            start = time.perf_counter()
            yield
            log.info("[%d] %s done in %.1f s", self.index, name, time.perf_counter() - start)

        return stage()
