"""The gradient-quality study behind ``tbptt-bench gradients``: how good is each style's gradient?

Per task (its spec in ``tasks/<name>.toml``: task parameters, cell, the quick preset's first
hidden size, optimizer and learning rate):

1. **Checkpoints.** Train TF-style(``TRAIN_N``) for a small budget of updates on the task's own
   training streams; keep the parameters at 0, 10, 50 and 100 % of the budget.
2. **Window.** A fixed window of ``window`` steps from a held-out stream (seed ``WINDOW_SEED``),
   entered with the state after ``burn`` steps run at the checkpoint's parameters (burned in).
3. **Exact gradient** g* of the window's mean loss. Every gradient below is a weighted sum of the
   window's (loss, cell) contributions (``WindowContributions``, computed once per checkpoint;
   the weights follow the style's depths or, for random styles, the engine's own draws), which the
   tests pin to ``style_gradient`` (the engine at lr = 0) draw for draw; adaptive runs the engine.
4. **Every style family and n** (``STYLE_FAMILIES``, n in ``ns``): its gradient g (random styles:
   ``draws`` draws, mean ḡ). Recorded: cosine to g* (random: mean over single draws, and of the
   mean), relative bias ||E[g] - g*|| / ||g*||, relative std sqrt(E||g - ḡ||^2) / ||g*|| (0 for
   deterministic styles), and cost = backprop steps per loss step (``window_backprop_steps``
   summed over the window's updates, / (T B); random styles: mean over the draws).
5. **Depth profile.** The depth-d contribution to g*: ||G(d) - G(d-1)|| / ||g*|| with G(d) the
   gradient with every loss backpropagated at most d steps (Williams–Peng(d) at lr = 0; G(0) the
   readout-only part), and the state-gradient profile mean_b ||dl_T/dh_{T-d}|| of the window's
   last loss; with W_hh's spectral radius.

Records: ``<results>/<device_tag>/gradients/gradients.json`` (meta + every row) and CSV copies
(``styles.csv``, ``depth.csv``) — read by ``report/gradients.py`` without torch.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import styles as S
from ..engine.adaptive import choose_k, decay_profile
from ..engine.train import evaluate_stream, train_stream
from ..errors import BenchError
from ..models import make_model
from ..runs import envinfo
from .gradient import WindowContributions, is_random, style_gradient, window_backprop_steps

__all__ = ["STUDY_SIZES", "STYLE_FAMILIES", "StudyError", "StudySize", "run_study"]


class StudyError(BenchError):
    """The study was asked for something it cannot do (an unknown task)."""


TRAIN_N = 10  #: the checkpoints' training style: TF-style(10)
WINDOW_SEED = 2_000_003  #: the held-out stream the window is cut from (never a training seed)
CHECKPOINTS = (0.0, 0.1, 0.5, 1.0)

#: family -> constructor of the style at truncation length n (None: not defined at this n).
STYLE_FAMILIES: dict[str, Callable[[int], S.Style | None]] = {
    "tf_style": lambda n: S.tf_style(n),
    "williams_peng": lambda n: S.williams_peng(n),
    "overlapping": lambda n: S.overlapping(n // 2, n) if n >= 4 else None,  # (1, n) is Williams–Peng
    "one_step": lambda n: S.one_step(n),
    "random_depth": lambda n: S.random_depth(n) if n >= 2 else None,
    "random_full": lambda n: S.random(1.0 - 1.0 / n) if n >= 2 else None,  # notes' form, E[depth] n
    "artbp": lambda n: S.artbp(n) if n >= 2 else None,
}
#: adaptive TBPTT is not indexed by n: one row per target bias (its K is chosen on the window).
ADAPTIVE_DELTAS = (0.1, 0.01)


@dataclass(frozen=True)
class StudySize:
    updates: int  #: training budget (TF-style updates) whose 0/10/50/100 % are the checkpoints
    batch: int  #: rows of the training streams and of the window
    row_len: int  #: steps per training row
    window: int  #: T of the measured window
    burn: int  #: steps run before the window
    ns: tuple[int, ...]  #: truncation lengths
    draws: int  #: draws per random style
    max_depth: int  #: depth profile up to this d


STUDY_SIZES = {
    "full": StudySize(updates=200, batch=16, row_len=500, window=64, burn=200, ns=(2, 4, 8, 16), draws=100,
                      max_depth=32),
    "smoke": StudySize(updates=10, batch=4, row_len=40, window=12, burn=8, ns=(2, 4), draws=8, max_depth=6),
}  # fmt: skip


def _spectral_radius(model) -> float | None:
    W = dict(model.named_parameters()).get("W_hh")
    if W is None or W.shape[0] != W.shape[1]:
        return None  # gated cells stack their gates' matrices: no single recurrence matrix
    return float(torch.linalg.eigvals(W.detach().double()).abs().max())


def _load_spec(specs: Path, task: str):
    from ..runs.spec import load_spec

    path = specs / f"{task}.toml"
    if not path.is_file():
        raise StudyError(f"task {task!r} is not allowed: no spec {path} (known: {', '.join(_known(specs))})")
    return load_spec(path)


def _known(specs: Path) -> list[str]:
    return sorted(p.stem for p in specs.glob("*.toml"))


def _checkpoints(spec, task, size: StudySize, seed: int) -> tuple[object, list[tuple[float, dict]]]:
    """Train TF-style(TRAIN_N) for ``size.updates`` updates; parameters at each checkpoint."""
    from ..runs.harness import OPTIMIZERS

    quick = spec.presets.get("quick")
    hidden = (quick.hidden_sizes if quick and quick.hidden_sizes else spec.hidden_sizes)[0]
    torch.manual_seed(seed)
    model = make_model(
        spec.cell,
        task.input_size,
        hidden,
        task.output_size,
        generator=torch.Generator().manual_seed(seed),
        **task.model_kwargs(),
    )
    opt = getattr(torch.optim, OPTIMIZERS[spec.optimizer])(model.parameters(), lr=spec.lrs[0])
    marks = {max(1, round(f * size.updates)): f for f in CHECKPOINTS if f > 0}
    snaps: list[tuple[float, dict]] = []
    done = [0]

    def snap(frac: float) -> None:
        snaps.append((frac, {n: p.detach().clone() for n, p in model.named_parameters()}))

    def on_update(_rec) -> None:
        done[0] += 1
        if done[0] in marks:
            snap(marks[done[0]])
        if done[0] >= size.updates:
            raise _Enough

    snap(0.0)
    epoch = 0
    try:
        while True:
            s = task.make_train(seed, epoch, size.batch, size.row_len)
            train_stream(model, s.x, s.y, S.tf_style(TRAIN_N), opt, loss=task.loss, callback=on_update)
            epoch += 1
    except _Enough:
        pass
    return model, snaps


class _Enough(Exception):
    pass


def _flat(g: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([g[n].reshape(-1) for n in names])


def _fnorm(v: torch.Tensor) -> float:
    return float(v.double().norm())


def _fcos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = _fnorm(a), _fnorm(b)
    return float((a.double() * b.double()).sum()) / (na * nb) if na > 0 and nb > 0 else float("nan")


def _style_rows(
    model, x, y, h0, loss, size: StudySize, wc: WindowContributions, g_star, base: dict
) -> list[dict]:
    """One row per (family, n) and per adaptive delta. Gradients are weighted sums of the window's
    contributions (``WindowContributions``: the engine's draws, pinned to ``style_gradient``)."""
    rows = []
    T, B = x.shape[0], x.shape[1]
    g_norm = _fnorm(g_star)
    entries: list[tuple[str, int | None, S.Style]] = [
        (fam, n, st) for n in size.ns for fam, make in STYLE_FAMILIES.items() if (st := make(n)) is not None
    ]
    # adaptive's K may reach half the window (K = T would be full BPTT on it, telling nothing)
    k_max = max(T // 2, 6)
    entries += [("adaptive", None, S.adaptive(d, k_max=k_max, period=T, tau=4)) for d in ADAPTIVE_DELTAS]
    for fam, n, style in entries:
        t0 = time.perf_counter()
        row = dict(base, family=fam, n=n, style=style.spec, label=style.label)
        if is_random(style):
            gen = torch.Generator().manual_seed(12345)
            draws, costs = [], []
            for _ in range(size.draws):
                state = gen.get_state()
                draws.append(wc.gradient(wc.draw_weights(style, gen)))
                gen.set_state(state)  # the cost of this very draw (same generator calls)
                costs.append(sum(window_backprop_steps(style, T, B, gen)) / (T * B))
            G = torch.stack(draws).double()
            mean = G.mean(0)
            var = float(((G - mean) ** 2).sum(1).sum()) / max(len(draws) - 1, 1)
            row.update(
                cos=sum(_fcos(d, g_star) for d in draws) / len(draws),
                cos_of_mean=_fcos(mean, g_star),
                rel_bias=_fnorm(mean - g_star) / g_norm,
                rel_std=math.sqrt(var) / g_norm,
                se_rel_bias=math.sqrt(var / len(draws)) / g_norm,
                cost=sum(costs) / len(costs),
                draws=size.draws,
            )
        else:
            if isinstance(style, S.AdaptiveTBPTT):  # K from the window's own decay profile
                phi, cum = decay_profile(model, x[: style.k_max], y[: style.k_max], h0, loss)
                K = choose_k(phi, cum, style.tau, style.delta, style.k_max)
                row["K"] = K
                g = _flat(style_gradient(model, x, y, style, loss, h0=h0), wc.names).to(g_star.dtype)
                cost = sum(window_backprop_steps(style.for_k(K), T, B)) / (T * B)
            else:
                g = wc.gradient(wc.depth_weights(style.depths(T)))
                cost = sum(window_backprop_steps(style, T, B)) / (T * B)
            c = _fcos(g, g_star)
            row.update(cos=c, cos_of_mean=c, rel_bias=_fnorm(g - g_star) / g_norm, rel_std=0.0,
                       se_rel_bias=0.0, cost=cost, draws=1)  # fmt: skip
        row["seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
    return rows


def _depth_rows(
    model, x, y, h0, loss, size: StudySize, wc: WindowContributions, g_star, base: dict
) -> list[dict]:
    """Depth-d contribution ||G(d) - G(d-1)|| / ||g*||: the cells d - 1 steps behind each loss,
    summed over the losses (G(d) = Williams–Peng(d) at fixed parameters); and the last loss's
    state gradient ||dl_T/dh_{T-d+1}|| (the state whose cell is the d-th one a loss traverses)."""
    g_norm = _fnorm(g_star)
    D = min(size.max_depth, x.shape[0])
    phi, _ = decay_profile(model, x, y, h0, loss)
    rows = []
    for d in range(1, D + 1):
        contrib = torch.diagonal(wc.C, offset=-(d - 1), dim1=0, dim2=1).sum(-1)  # sum_s C[s, s-d+1]
        rows.append(dict(base, depth=d, contrib=_fnorm(contrib) / g_norm, state_grad=phi[d - 1]))
    return rows


def run_study(
    tasks: Sequence[str] | None,
    results: str | Path,
    *,
    specs: str | Path = "tasks",
    smoke: bool = False,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Run the study for ``tasks`` (all specs when empty); write the records; return their folder."""
    from ..tasks import make_task

    specs, results = Path(specs), Path(results)
    names = list(tasks) if tasks else _known(specs)
    size = STUDY_SIZES["smoke" if smoke else "full"]
    spec_list = [_load_spec(specs, t) for t in names]
    env = envinfo.collect("cpu")
    out = results / envinfo.device_tag(env) / "gradients"
    style_rows, depth_rows, meta_tasks = [], [], []
    t_start = time.perf_counter()
    for name, spec in zip(names, spec_list):
        t0 = time.perf_counter()
        task = make_task(spec.task, **dict(spec.task_params))
        model, snaps = _checkpoints(spec, task, size, seed)
        held = task.make_train(WINDOW_SEED, 0, size.batch, size.burn + size.window)
        for frac, params in snaps:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(params[n])
            _, h0 = evaluate_stream(model, held.x[: size.burn], held.y[: size.burn], task.loss)
            x, y = held.x[size.burn :], held.y[size.burn :]
            wc = WindowContributions(model, x, y, task.loss, h0)
            g_star = wc.gradient(wc.depth_weights(S.full().depths(x.shape[0])))  # the exact gradient
            rho = _spectral_radius(model)
            base = dict(task=name, checkpoint=frac, spectral_radius=rho)
            style_rows += _style_rows(model, x, y, h0, task.loss, size, wc, g_star, base)
            depth_rows += _depth_rows(model, x, y, h0, task.loss, size, wc, g_star, base)
        meta_tasks.append(
            dict(task=name, cell=spec.cell, hidden_size=model.hidden_size, loss=task.loss,
                 optimizer=spec.optimizer, lr=spec.lrs[0], seconds=round(time.perf_counter() - t0, 1))
        )  # fmt: skip
        if log:
            log(f"gradients: {name} done in {time.perf_counter() - t0:.1f} s")
    meta = dict(
        kind="gradient_study",
        size="smoke" if smoke else "full",
        sizes=size.__dict__ | {"ns": list(size.ns)},
        train_style=S.tf_style(TRAIN_N).spec,
        checkpoints=list(CHECKPOINTS),
        window_seed=WINDOW_SEED,
        seed=seed,
        tasks=meta_tasks,
        seconds=round(time.perf_counter() - t_start, 1),
        torch=torch.__version__,
        device_tag=envinfo.device_tag(env),
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradients.json").write_text(
        json.dumps(dict(meta=meta, styles=style_rows, depth=depth_rows), indent=1)
    )
    for fname, rows in (("styles.csv", style_rows), ("depth.csv", depth_rows)):
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(out / fname, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
    return out
