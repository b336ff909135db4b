"""The search space: which parameters a trial gets, and the run-config overrides they become.

Parameters the grid sampler (or ``stratify``) enumerates are fixed per trial *slot*: the slots are
the product of their values and the seeds, in an order that visits every point before any repeats
(``trials`` beyond one round start a second round when the sampler draws values; a grid, with
nothing to draw, runs each point once per seed). The others are drawn by Optuna's sampler when
the trial starts. ``global_batch`` is derived: the driver splits it into ``micro_batch`` (at most
``max_micro_batch``, the most that fits the GPU) and ``grad_accumulation`` over the profile's
ranks, and an LR-scaling rule may scale the learning rate with it.

Example:
    >>> from steelseg_hpc.sweeps.config import SweepSpec
    >>> spec = SweepSpec.model_validate({"name": "b", "store": "s.zarr", "base": {"arch": "unet3plus"},
    ...     "space": {"batch": {"key": "global_batch", "values": [2, 32]}}, "max_micro_batch": 8})
    >>> space = SearchSpace(spec, world_size=2)
    >>> space.slots()
    [{'batch': 2, 'seed': 0}, {'batch': 32, 'seed': 0}]
    >>> space.overrides({"batch": 32, "seed": 0})
    ['micro_batch=8', 'grad_accumulation=2', 'seed=0']
"""
from __future__ import annotations

import itertools
import json
import math
from typing import Any

from steelseg_hpc.core.errors import ConfigError
from steelseg_hpc.sweeps.config import GLOBAL_BATCH, ParameterSpec, SweepSpec
from steelseg_hpc.training import RunConfig, load_run_config

SEED = "seed"
_LR_KEY = "optimizer.lr"
_SCALAR = (bool, int, float, str, type(None))


def _encode(value: Any) -> Any:
    # Optuna's categorical choices are scalars; lists (lora_layer subsets) travel as JSON text.
    return value if isinstance(value, _SCALAR) else json.dumps(value)


def _decode(parameter: ParameterSpec, value: Any) -> Any:
    if parameter.values is not None and not all(isinstance(v, _SCALAR) for v in parameter.values):
        return json.loads(value)
    return value


def split_batch(batch: int, world_size: int, max_micro_batch: int) -> tuple[int, int]:
    """``(micro_batch, grad_accumulation)`` reaching ``batch`` over ``world_size`` ranks.

    The micro-batch is the largest that fits (``max_micro_batch``) and divides the rank's share,
    except that one rank always accumulates at least two micro-batches when it can: B_simple is
    measured from two batch sizes (a micro-batch and the whole step), so every trial of a batch
    sweep measures it, the small batches too (batch 1 cannot be split and measures none).

    Raises:
        ConfigError: the batch is not a whole number of tiles per rank.

    Example:
        >>> split_batch(64, 2, 8), split_batch(6, 1, 4), split_batch(8, 1, 8), split_batch(2, 2, 8)
        ((8, 4), (3, 2), (4, 2), (1, 1))
    """
    if not isinstance(batch, int) or batch < 1 or batch % world_size:
        raise ConfigError(f"global_batch {batch!r} cannot be reached with {world_size} rank(s): it must be a "
                          f"positive multiple of the profile's GPUs x nodes")
    per_rank = batch // world_size
    largest = min(per_rank, max_micro_batch)
    if world_size == 1 and per_rank >= 2:
        largest = min(largest, per_rank // 2)
    micro = max(d for d in range(1, largest + 1) if per_rank % d == 0)
    return micro, per_rank // micro


def _value_text(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, float) else repr(value)


class SearchSpace:
    """The trials a sweep can make, and what each one trains.

    Args:
        spec: The sweep.
        world_size: Ranks per trial job (the profile's GPUs x nodes), for ``global_batch``.
    """

    def __init__(self, spec: SweepSpec, world_size: int = 1):
        self.spec, self.world_size = spec, world_size

    def enumerated(self) -> list[str]:
        """Parameters fixed per slot: all of them under the grid sampler, else the stratified ones."""
        grid = self.spec.sampler.kind == "grid"
        return [name for name, p in self.spec.space.items() if grid or p.stratify]

    def sampled(self) -> list[str]:
        return [name for name in self.spec.space if name not in self.enumerated()]

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the enumerated parameters (one point when there are none)."""
        names = self.enumerated()
        values = [self.spec.space[name].values for name in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*values)]

    def slots(self) -> list[dict[str, Any]]:
        """The fixed parameters of every trial, in launch order: each point with each seed,
        then (when ``trials`` asks for more) the same again, drawing new sampled values.

        With nothing drawn (a grid), a second round would run every point again with the same
        seed, measuring nothing new: the slots stop after one round (see :meth:`trials_capped`).
        """
        round_ = [{**point, SEED: seed} for seed in self.spec.seeds for point in self.points()]
        wanted = self.spec.trials or len(round_)
        if not self.sampled():
            wanted = min(wanted, len(round_))
        return [dict(round_[i % len(round_)]) for i in range(wanted)]

    def trials_capped(self) -> str | None:
        """A line when ``trials`` asks for more than a grid has (None when it does not)."""
        grid = len(self.points()) * len(self.spec.seeds)
        if self.sampled() or not self.spec.trials or self.spec.trials <= grid:
            return None
        return (f"trials {self.spec.trials} exceeds the grid ({len(self.points())} point(s) x {len(self.spec.seeds)} "
                f"seed(s)): running {grid}, as a grid point run again with the same seed measures nothing new; "
                "add seeds for more measurements")

    def sibling(self, slot: int) -> int | None:
        """The first seed's slot of the same point and round: its drawn values are this slot's too,
        so every seed of a point trains the same parameters (None for a first-seed slot)."""
        per_round, per_seed = len(self.spec.seeds) * len(self.points()), len(self.points())
        within = slot % per_round
        return None if within < per_seed else slot - (within // per_seed) * per_seed

    def suggest(self, trial) -> dict[str, Any]:
        """Ask ``trial`` for every parameter (enqueued ones come back fixed, the rest are drawn).

        Raises:
            ConfigError: an enqueued value that is not among the parameter's values (the sweep
                file was edited after the trial was queued). Anything else is a bug and propagates.
        """
        params: dict[str, Any] = {SEED: _categorical(trial, SEED, list(self.spec.seeds))}
        for name, parameter in self.spec.space.items():
            if parameter.values is not None:
                params[name] = _decode(parameter, _categorical(trial, name, [_encode(v) for v in parameter.values]))
            elif parameter.integer:
                params[name] = trial.suggest_int(name, int(parameter.low), int(parameter.high), log=parameter.log)
            else:
                params[name] = trial.suggest_float(name, parameter.low, parameter.high, log=parameter.log)
        return params

    def encode_fixed(self, slot: dict[str, Any]) -> dict[str, Any]:
        """A slot's fixed values as Optuna stores them (for ``enqueue_trial``)."""
        return {name: (value if name == SEED else _encode(value)) for name, value in slot.items()}

    def overrides(self, params: dict[str, Any], base_lr: float | None = None) -> list[str]:
        """The run-config overrides of a trial's parameters (batch split, LR scaled, seed last).

        Args:
            base_lr: The base run's learning rate, scaled with the batch when the space has no
                learning-rate parameter of its own.
        """
        result: list[str] = []
        batch = lr = None
        for name, parameter in self.spec.space.items():
            value = params[name]
            if parameter.key == GLOBAL_BATCH:
                batch = value
                micro, accumulation = split_batch(value, self.world_size, self.spec.max_micro_batch)
                result += [f"micro_batch={micro}", f"grad_accumulation={accumulation}"]
            elif parameter.key == _LR_KEY:
                lr = value
            else:
                result.append(f"{parameter.key}={_value_text(value)}")
        if lr is None and self.spec.lr_scaling != "none":
            lr = base_lr
        if lr is not None:
            result.append(f"{_LR_KEY}={self.scaled_lr(lr, batch)!r}")
        return result + [f"{SEED}={params[SEED]}"]

    def scaled_lr(self, lr: float, batch: int | None) -> float:
        """``lr`` scaled from the reference batch to ``batch`` (``lr_scaling``: linear or sqrt)."""
        if batch is None or self.spec.lr_scaling == "none":
            return lr
        power = 1.0 if self.spec.lr_scaling == "linear" else 0.5
        return lr * (batch / self.spec.lr_reference_batch) ** power

    def run_config(self, params: dict[str, Any]) -> RunConfig:
        """The resolved run config of one trial."""
        base = self.base_config()
        overrides = [*self.spec.base.overrides, *self.overrides(params, base_lr=base.optimizer.lr)]
        return load_run_config(self.spec.base.run_config, overrides, arch=self.spec.base.arch,
                               store=self.spec.store)

    def base_config(self) -> RunConfig:
        return load_run_config(self.spec.base.run_config, list(self.spec.base.overrides),
                               arch=self.spec.base.arch, store=self.spec.store)

    def validate(self, source: str) -> None:
        """Check every value (and both ends of every range) resolves to a valid run config.

        Raises:
            ConfigError: naming the sweep file, the parameter and the value, before any job runs.
        """
        try:
            base = self.base_config()
        except ConfigError as exc:
            raise ConfigError(f"{source}: base: {exc}") from None
        for name, parameter in self.spec.space.items():
            for value in parameter.values if parameter.values is not None else [parameter.low, parameter.high]:
                if parameter.is_range and parameter.integer:
                    value = int(value)
                trial_params = {SEED: self.spec.seeds[0], **self._representative(), name: value}
                try:
                    overrides = [*self.spec.base.overrides, *self.overrides(trial_params, base.optimizer.lr)]
                    load_run_config(self.spec.base.run_config, overrides, arch=self.spec.base.arch,
                                    store=self.spec.store)
                except ConfigError as exc:
                    raise ConfigError(f"{source}: space.{name} ({parameter.key}) = {value!r}: {exc}") from None

    def _representative(self) -> dict[str, Any]:
        """Some valid value of every parameter, to check one of them at a time."""
        chosen = {}
        for name, parameter in self.spec.space.items():
            if parameter.values is not None:
                chosen[name] = parameter.values[0]
            else:
                mid = math.sqrt(parameter.low * parameter.high) if parameter.log else (parameter.low + parameter.high) / 2
                chosen[name] = int(mid) if parameter.integer else mid
        return chosen


def _categorical(trial, name: str, choices: list) -> Any:
    try:
        return trial.suggest_categorical(name, choices)
    except ValueError as exc:  # Optuna: an enqueued value that is not one of the choices
        raise ConfigError(f"{name}: {exc}; expected one of {choices}") from None
