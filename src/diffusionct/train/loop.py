"""The loop every training regime shares: seeded steps, atomic resumable checkpoints, DDP, validation.

Reproducible and resumable: the crops and noise of step k come from generators seeded by
(seed, phase, k, rank), and a checkpoint (safetensors weights + optimizer tensors, JSON for the
rest) is written atomically every ``checkpoint_every`` steps, so a killed run resumed with
``--resume`` reaches the same weights as an uninterrupted one. Multi-process training uses
DistributedDataParallel when launched by ``torchrun`` (gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from diffusionct.config import (CONFIG_FORMAT, DIFFUSION_PHASE, PREDICTOR_PHASE, TRAINING_STEPS_KEYS, PhaseConfig, RunConfig,
                                section_of)
from diffusionct.errors import DiffusionCTError
from diffusionct.io.files import atomic_output_file, read_json
from diffusionct.methods import AUTOENCODER, CYCLEGAN, DDPM, PIX2PIX, RESIDUAL_CNN
from diffusionct.train.data import TrainingData, sample_pair_crops

log = logging.getLogger(__name__)
# every training phase; the order fixes the step seeds
PHASES = (AUTOENCODER, DIFFUSION_PHASE, RESIDUAL_CNN, PIX2PIX, DDPM, PREDICTOR_PHASE, CYCLEGAN)


# ------------------------------------------------------------------------------------- state


def init_distributed() -> bool:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return True
    return False


def world_rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def step_seed(seed: int, phase: str, step: int, rank: int) -> int:
    return int(np.random.default_rng([seed, PHASES.index(phase), step, rank]).integers(0, 2**62))


def _optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str = "optimizer") -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict,
                       prefix: str = "optimizer") -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _without_steps(config: dict) -> dict:
    """A config dict without the phases' step counts: a run may be resumed to train longer."""
    out = json.loads(json.dumps(config))
    for key in {key for keys in TRAINING_STEPS_KEYS.values() for key in keys}:  # e.g. phase1, baselines.pix2pix.training
        section, _ = section_of(out, f"{key}.steps")
        if section is not None:
            section.pop("steps", None)
    return out


@dataclass
class PhaseState:
    step: int = 0
    history: list | None = None


def set_learning_rate(optimizer: torch.optim.Optimizer, pc: PhaseConfig, step: int) -> None:
    """The phase's learning rate at ``step`` (0-based) by its ``lr_schedule``."""
    rate = pc.lr if pc.lr_schedule == "constant" else pc.lr * 0.5 * (1 + math.cos(math.pi * step / pc.steps))
    for group in optimizer.param_groups:
        group["lr"] = rate


def optimize(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One gradient step on ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def update_ema(averaged: torch.nn.Module, trained: torch.nn.Module, step: int, decay: float) -> None:
    """One step of the exponential moving average of ``trained``'s weights into ``averaged``, warmed up over the first
    steps (the rate (1 + step) / (10 + step) until it reaches ``decay``): the networks that sampling uses."""
    rate = min(decay, (1 + step) / (10 + step))
    for p_ema, p in zip(averaged.parameters(), trained.parameters()):
        p_ema.lerp_(p, 1 - rate)


def validation_rmse(network: torch.nn.Module, source: torch.Tensor, target: torch.Tensor,
                    pixel_mm: torch.Tensor | None = None) -> dict:
    """RMSE in HU of a converting network (``convert``: A -> B) on fixed validation crops; ``pixel_mm`` for a
    network conditioned on the pixel size."""
    converted = network.convert(source, pixel_mm) if getattr(network, "uses_pixel_spacing", False) else network.convert(source)
    return {"val_rmse_hu": (converted - target).pow(2).mean().sqrt().item()}


STATE_FOLDER = "state"  # a run folder's checkpoints: per phase, tensors and a JSON record


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run folder holds a checkpoint that ``--resume`` continues from."""
    return any((Path(run_dir) / STATE_FOLDER).glob("*.json"))


class Regime:
    """One training phase, split as MONAI's engines split it: what it trains and checkpoints (``modules``, its
    ``optimizers`` by name), one optimisation :meth:`step` and one :meth:`validate`. :meth:`TrainingRun.fit` drives
    every regime through the same loop: the learning-rate schedule, the stop on a non-finite loss, the validation and
    checkpoint cadence, resume."""

    name: str  # the phase: its checkpoint's name and its step seeds' (PHASES)
    settings: PhaseConfig
    modules: dict[str, torch.nn.Module]  # checkpointed: trained weights and their averages
    optimizers: dict[str, torch.optim.Optimizer]  # one is stored as "optimizer", several under their own names

    def start(self, step: int) -> None:
        """Called when the checkpoint (if any) is loaded, before step ``step`` (0: a fresh start)."""

    def step(self, step: int) -> dict[str, float]:
        """One optimisation step (0-based); its metrics, ``loss`` among them."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics on fixed held-out crops."""
        raise NotImplementedError


class TrainingRun:
    """One run folder's data, device and checkpoints, and the loop that trains a :class:`Regime` in it."""

    def __init__(self, config: RunConfig, run_dir: Path, data: TrainingData, device: torch.device):
        self.config = config
        self.run_dir = Path(run_dir)
        self.data = data
        self.device = device
        self.rank, self.world = world_rank_and_size()

    def fit(self, regime: Regime) -> list:
        """Steps of ``regime`` from its checkpoint (or 0) to its ``settings.steps``; the history of validations."""
        state = self._load_state(regime.name, regime.modules, regime.optimizers)
        regime.start(state.step)
        return self._loop(regime, state)

    # ----------------------------------------------------------------------------- checkpoints
    def _state_paths(self, phase: str) -> tuple[Path, Path]:
        folder = self.run_dir / STATE_FOLDER
        return folder / f"{phase}.safetensors", folder / f"{phase}.json"

    def _save_state(self, phase: str, step: int, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer], history: list) -> None:
        if self.rank != 0:
            return
        tensors_path, meta_path = self._state_paths(phase)
        tensors_path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"phase": phase, "step": step, "history": history, "config": self.config.to_dict(),
                "config_format": CONFIG_FORMAT}
        tensors = {}
        for name, opt in optimizers.items():
            opt_tensors, meta[name] = _optimizer_tensors(opt, name)
            tensors.update(opt_tensors)
        for prefix, module in modules.items():
            tensors.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
        with atomic_output_file(tensors_path) as tmp:
            save_file(tensors, str(tmp))
        with atomic_output_file(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1))

    def _load_state(self, phase: str, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> PhaseState:
        tensors_path, meta_path = self._state_paths(phase)
        if not meta_path.is_file() or not tensors_path.is_file():
            return PhaseState(0, [])
        meta = read_json(meta_path, "training checkpoint record")
        # a record written before its config_format existed is format 1
        saved = RunConfig.from_saved(meta["config"], str(meta_path), meta.get("config_format", 1)).to_dict()
        if _without_steps(saved) != _without_steps(self.config.to_dict()):
            raise DiffusionCTError(f"{meta_path}: the run was started with another config; resume without --config/--set "
                                   "changes, or start a new run")
        tensors = load_file(str(tensors_path))
        for prefix, module in modules.items():
            module.load_state_dict({k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")})
        for name, opt in optimizers.items():
            _restore_optimizer(opt, tensors, meta[name], name)
        log.info("resumed %s at step %d", phase, meta["step"])
        return PhaseState(meta["step"], meta["history"])

    # ----------------------------------------------------------------------------- helpers
    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` as this process trains it: in DistributedDataParallel under torchrun."""
        if self.world > 1:
            return torch.nn.parallel.DistributedDataParallel(module)
        return module

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def step_seed(self, phase: str, step: int) -> int:
        """The seed of step ``step`` of ``phase`` in this process (its crops, timesteps and noise)."""
        return step_seed(self.config.seed, phase, step, self.rank)

    def step_rng(self, phase: str, step: int) -> np.random.Generator:
        """The crops of step ``step`` of ``phase`` in this process."""
        return np.random.default_rng(self.step_seed(phase, step))

    def _loop(self, regime: Regime, state: PhaseState) -> list:
        """Steps ``state.step`` .. ``settings.steps`` of a phase, each at the learning rate of the phase's
        ``lr_schedule`` (set here for every optimizer of the phase, so that each regime honours it)."""
        phase, pc = regime.name, regime.settings
        history = state.history or []
        bar = tqdm(total=pc.steps, initial=state.step, desc=phase, unit="step", disable=None if self.rank == 0 else True)
        start = time.perf_counter()
        for step in range(state.step, pc.steps):
            for opt in regime.optimizers.values():
                set_learning_rate(opt, pc, step)
            metrics = regime.step(step)
            if not math.isfinite(metrics["loss"]):  # every later step would be NaN too: stop before a model is written
                bar.close()
                raise DiffusionCTError(f"{phase} step {step + 1}: the training loss is {metrics['loss']}; lower the "
                                       "phase's learning rate (lr) or check the training images; no model was written")
            bar.update()
            bar.set_postfix(loss=f"{metrics['loss']:.4g}")
            done = step + 1
            if done % pc.validate_every == 0 or done == pc.steps:
                record = {"step": done, **metrics, **regime.validate(), "seconds": round(time.perf_counter() - start, 1)}
                history.append(record)
                if self.rank == 0:
                    log.info("%s step %d: %s", phase, done, {k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()})
            if done % pc.checkpoint_every == 0 or done == pc.steps:
                self._save_state(phase, done, regime.modules, regime.optimizers, history)
        bar.close()
        return history

    def validation_pairs(self, crop: int, seed: int, count: int = 8):
        """``count`` fixed (source, target, pixel size) crops of the validation cases (of the training ones when none)."""
        pairs = self.data.validation_pairs if self.data.validation_pairs.source.shape[0] else self.data.pairs
        return tuple(self.tensor(x) for x in sample_pair_crops(pairs, count, crop, np.random.default_rng([self.config.seed, seed])))


