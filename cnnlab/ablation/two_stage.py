"""Seeds where a claim needs them: a two-stage plan (after Stein 1945), no peeking loop.

Stage 1 (the pilot) is the grid's own seeds. The runner then judges every claim once on the
pilot; for each inconclusive one it takes the estimate and std of its paired differences and
sizes the second stage from the pilot's spread as Stein's two-stage design does, for a stated
power: the fewest seeds n with which a run whose true effect and std are the pilot's is decided
with probability 80% (`cnnlab.stats.seeds_needed`: exact for Normal differences, the t
interval's random width included), at most `two_stage.max_seeds`. Both configurations the claim
compares get seeds up to n (new seed values after the pilot's largest), claims in config order
while the pilot's measured cell times fit `two_stage.budget_s`. The plan is saved once
(seeds_plan.json) and reused by resumes and shards; every claim is judged once more on all
seeds. Each of the two looks uses level 1 - α/2 (Bonferroni), so a verdict that either look
could have made is wrong with probability at most α.
"""

import dataclasses
import json
from pathlib import Path

from cnnlab.ablation.claims import INCONCLUSIVE, Claim
from cnnlab.ablation.grid import label
from cnnlab.ablation.result import CellResult
from cnnlab.errors import ConfigError
from cnnlab.records import write_json_atomic

PLAN = "seeds_plan.json"
ALPHA = 0.05


@dataclasses.dataclass(frozen=True)
class TwoStage:
    """config.two_stage, checked: off when max_seeds is 0 or the grid states no claims."""

    max_seeds: int
    budget_s: float
    pilot: tuple  # the grid's seed values

    @property
    def on(self) -> bool:
        return self.max_seeds > 0

    @property
    def level(self) -> float:
        return 1 - ALPHA / 2 if self.on else 1 - ALPHA

    @classmethod
    def of(cls, config, pilot_seeds) -> "TwoStage":
        max_seeds, budget = config.two_stage.max_seeds, config.two_stage.budget_s
        if isinstance(max_seeds, bool) or not isinstance(max_seeds, int) or max_seeds < 0:
            raise ConfigError(f"config.two_stage.max_seeds={max_seeds!r} must be an int >= 0")
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget < 0:
            raise ConfigError(f"config.two_stage.budget_s={budget!r} must be seconds >= 0")
        pilot = tuple(pilot_seeds)
        if max_seeds:
            if not all(isinstance(s, int) and not isinstance(s, bool) for s in pilot):
                raise ConfigError(
                    f"config.two_stage needs integer seeds on the grid's seed axis; got {pilot}"
                )
            if max_seeds <= len(pilot):
                raise ConfigError(
                    f"config.two_stage.max_seeds={max_seeds} must exceed the grid's "
                    f"{len(pilot)} pilot seeds {list(pilot)} (or be 0 to turn it off)"
                )
            if not config.claims:
                max_seeds = 0  # seeds are added for claims; with none there is nothing to do
        return cls(max_seeds, float(budget), pilot)


def make_plan(ts: TwoStage, claims: list[Claim], pilot_verdicts, pilot: list[CellResult]):
    """-> {'claims': [why each claim got seeds or not], 'cells': [overrides to train]}."""
    # a grid of products may give its configurations different pilot seeds: each is counted on
    # its own and gets first the grid's seeds it lacks (so that the compared configurations
    # stay paired), then new values after the pilot's largest
    seeds = [*sorted(ts.pilot), *(max(ts.pilot) + 1 + i for i in range(ts.max_seeds))]
    by_config: dict[tuple, list[CellResult]] = {}
    for r in pilot:
        by_config.setdefault(_key(r.overrides), []).append(r)
    have = {k: len(rs) for k, rs in by_config.items()}
    target: dict[tuple, int] = {}  # configuration -> seeds in all
    spent, notes = 0.0, []
    for c, v in zip(claims, pilot_verdicts, strict=True):
        note = {"claim": c.text, "pilot_verdict": v.verdict, "pilot_seeds": v.ci.n}
        notes.append(note)
        if v.verdict != INCONCLUSIVE:
            note["why"] = "decided by the pilot"
            continue
        n = min(v.seeds_needed or ts.max_seeds, ts.max_seeds)
        note["seeds_needed"] = v.seeds_needed
        sides = [_key(dict(c.where) | {c.axis: getattr(c, s)}) for s in "ab"]
        cost = 0.0
        for name in sides:
            cells = by_config.get(name, [])
            add = max(0, n - max(target.get(name, 0), have.get(name, 0)))
            walls = [r.timing.get("wall_s", 0.0) for r in cells if r.done and r.timing]
            cost += add * (sum(walls) / len(walls) if walls else 0.0)
        if ts.budget_s and spent + cost > ts.budget_s:
            note["why"] = (
                f"not extended: {n} seeds would take ~{cost:.0f} s more, past the budget "
                f"({ts.budget_s:.0f} s, {spent:.0f} s already planned)"
            )
            continue
        spent += cost
        note["why"] = f"extended to {n} seeds (~{cost:.0f} s)"
        note["seeds"] = n
        for name in sides:
            target[name] = max(target.get(name, 0), n)
    cells = []
    for name, n in target.items():
        template = by_config[name][0].overrides
        own = {r.overrides.get("seed") for r in by_config[name]}
        for seed in [s for s in seeds if s not in own][: n - have[name]]:
            cells.append({**template, "seed": seed})
    return {"level": ts.level, "budget_s": ts.budget_s, "estimated_s": round(spent, 1),
            "claims": notes, "cells": cells}  # fmt: skip


def _key(overrides: dict) -> tuple:
    """A configuration (every axis but the seed) as sorted (key, value label) pairs."""
    return tuple(sorted((k, label(v)) for k, v in overrides.items() if k != "seed"))


def load_plan(workdir: Path) -> dict | None:
    path = Path(workdir) / PLAN
    return json.loads(path.read_text()) if path.exists() else None


def save_plan(workdir: Path, plan: dict) -> None:
    write_json_atomic(Path(workdir) / PLAN, plan)


def plan_cells(plan: dict) -> list[dict]:
    """The planned cells' overrides with their values as the grid gives them (tuples)."""
    tupled = lambda v: tuple(v) if isinstance(v, list) else v
    return [{k: tupled(v) for k, v in o.items()} for o in plan["cells"]]
