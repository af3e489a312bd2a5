"""Samplers as data: A1111's sampler and schedule-type names -> a diffusers scheduler and its options.

A fresh scheduler is built for every request (schedulers keep per-run state). A name that diffusers
cannot honour exactly is listed as unavailable with the reason; it is never swapped for another.
This module imports no torch, so validation and ``python app.py samplers`` stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Schedule:
    name: str
    label: str
    aliases: tuple[str, ...]
    options: dict[str, Any]  # scheduler config options that make this schedule
    needs: str | None = None  # the scheduler __init__ parameter it relies on


SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    Schedule("automatic", "Automatic", ("auto",), {}),
    Schedule("uniform", "Uniform", ("normal",), {"timestep_spacing": "linspace"}, "timestep_spacing"),
    Schedule("karras", "Karras", (), {"use_karras_sigmas": True}, "use_karras_sigmas"),
    Schedule("exponential", "Exponential", (), {"use_exponential_sigmas": True}, "use_exponential_sigmas"),
    Schedule("sgm_uniform", "SGM Uniform", ("sgm uniform",), {"timestep_spacing": "trailing"}, "timestep_spacing"),
)}


@dataclass(frozen=True)
class Sampler:
    name: str
    aliases: tuple[str, ...]
    scheduler: str | None  # diffusers class name; None = unavailable
    options: dict[str, Any] = field(default_factory=dict)
    default_schedule: str = "uniform"
    schedules: tuple[str, ...] = ("automatic", "uniform", "karras", "exponential", "sgm_uniform")
    uniform_spacing: str = "linspace"  # what "Uniform" means for this scheduler's timesteps
    unavailable: str | None = None
    stochastic: bool = False

    @property
    def available(self) -> bool:
        return self.unavailable is None


_ALL = ("automatic", "uniform", "karras", "exponential", "sgm_uniform")
_NO_SIGMAS = ("automatic", "uniform", "sgm_uniform")

SAMPLERS: tuple[Sampler, ...] = (
    Sampler("DPM++ 2M", ("k_dpmpp_2m",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "dpmsolver++", "solver_order": 2}, "karras", _ALL),
    Sampler("DPM++ SDE", ("k_dpmpp_sde",), "DPMSolverSDEScheduler", {}, "karras", _ALL, stochastic=True),
    Sampler("DPM++ 2M SDE", ("k_dpmpp_2m_sde",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}, "exponential", _ALL, stochastic=True),
    Sampler("DPM++ 3M SDE", ("k_dpmpp_3m_sde",), "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}, "exponential", _ALL, stochastic=True),
    Sampler("DPM++ 2S a", ("k_dpmpp_2s_a",), None, unavailable=(
        "diffusers has no ancestral single-step DPM++ solver (DPMSolverSinglestepScheduler adds no noise, "
        "so it would be a different sampler)")),
    Sampler("Euler a", ("k_euler_a", "k_euler_ancestral"), "EulerAncestralDiscreteScheduler", {}, "uniform",
            _NO_SIGMAS, stochastic=True),
    Sampler("Euler", ("k_euler",), "EulerDiscreteScheduler", {}, "uniform", _ALL),
    Sampler("LMS", ("k_lms",), "LMSDiscreteScheduler", {}, "uniform", _ALL),
    Sampler("Heun", ("k_heun",), "HeunDiscreteScheduler", {}, "uniform", _ALL),
    Sampler("DPM2", ("k_dpm_2",), "KDPM2DiscreteScheduler", {}, "karras", _ALL),
    Sampler("DPM2 a", ("k_dpm_2_a",), "KDPM2AncestralDiscreteScheduler", {}, "karras", _ALL, stochastic=True),
    Sampler("DDIM", ("ddim",), "DDIMScheduler", {}, "uniform", _NO_SIGMAS, uniform_spacing="leading"),
    Sampler("PLMS", ("plms",), "PNDMScheduler", {"skip_prk_steps": True}, "uniform", _NO_SIGMAS,
            uniform_spacing="leading"),
    Sampler("UniPC", ("unipc",), "UniPCMultistepScheduler", {}, "uniform", _ALL),
    Sampler("LCM", ("lcm",), "LCMScheduler", {}, "uniform", _NO_SIGMAS, uniform_spacing="leading",
            stochastic=True),
)


class UnknownSampler(ValueError):
    pass


def _norm(name: str) -> str:
    return " ".join(str(name).strip().lower().split())


def find_sampler(name: str) -> Sampler:
    wanted = _norm(name)
    for sampler in SAMPLERS:
        if wanted == _norm(sampler.name) or wanted in sampler.aliases:
            return sampler
    raise UnknownSampler(f"unknown sampler {name!r}; choose one of: {', '.join(available_sampler_names())}")


def find_schedule(name: str) -> Schedule:
    wanted = _norm(name)
    for schedule in SCHEDULES.values():
        if wanted in (schedule.name, _norm(schedule.label)) or wanted in schedule.aliases:
            return schedule
    raise UnknownSampler(f"unknown schedule type {name!r}; choose one of: "
                         f"{', '.join(s.label for s in SCHEDULES.values())}")


def resolve(sampler_name: str, schedule_name: str = "Automatic") -> tuple[Sampler, Schedule]:
    """Sampler and concrete schedule for a request; accepts old combined names ("DPM++ 2M Karras")."""
    try:
        sampler = find_sampler(sampler_name)
    except UnknownSampler:
        sampler = None
        for schedule in SCHEDULES.values():
            suffix = " " + _norm(schedule.label)
            if _norm(sampler_name).endswith(suffix) and schedule.name != "automatic":
                base = _norm(sampler_name)[: -len(suffix)]
                sampler = find_sampler(base)
                if find_schedule(schedule_name).name not in ("automatic", schedule.name):
                    raise UnknownSampler(f"sampler {sampler_name!r} names schedule {schedule.label!r} but "
                                         f"schedule type {schedule_name!r} was also given")
                schedule_name = schedule.label
                break
        if sampler is None:
            raise
    if not sampler.available:
        raise UnknownSampler(f"sampler {sampler.name!r} is unavailable: {sampler.unavailable}")
    schedule = find_schedule(schedule_name)
    if schedule.name == "automatic":
        schedule = SCHEDULES[sampler.default_schedule]
    if schedule.name not in sampler.schedules:
        labels = ", ".join(SCHEDULES[s].label for s in sampler.schedules)
        raise UnknownSampler(f"schedule type {schedule.label!r} is not available with {sampler.name}; "
                             f"choose one of: {labels}")
    return sampler, schedule


def available_sampler_names() -> list[str]:
    return [s.name for s in SAMPLERS if s.available]


def build_scheduler(sampler: Sampler, schedule: Schedule, base_config: dict[str, Any], seed: int = 0):
    """A fresh diffusers scheduler for one request."""
    import diffusers

    cls = getattr(diffusers, sampler.scheduler)
    options: dict[str, Any] = dict(sampler.options)
    options.update(schedule.options)
    if schedule.name == "uniform":
        options["timestep_spacing"] = sampler.uniform_spacing
    elif "timestep_spacing" not in options:
        options["timestep_spacing"] = sampler.uniform_spacing
    if sampler.scheduler == "DPMSolverSDEScheduler":
        options["noise_sampler_seed"] = seed
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config(config, **options)


def sampler_table() -> list[dict[str, Any]]:
    """For ``python app.py samplers`` and the API: every sampler, available or not, with why."""
    return [{"name": s.name, "aliases": list(s.aliases), "available": s.available,
             "default_schedule": SCHEDULES[s.default_schedule].label if s.available else None,
             "schedules": [SCHEDULES[k].label for k in s.schedules] if s.available else [],
             "scheduler": s.scheduler, "options": dict(s.options), "unavailable_reason": s.unavailable}
            for s in SAMPLERS]
