"""``rakuten compare A B``: did run B beat run A on the same test rows, per model and for the fusion?

Why: ``dvc metrics diff`` prints B's score minus A's, but on a few thousand test rows most such
differences are noise. Both runs predict the SAME test rows, so a paired bootstrap (each resample
scores A and B on the same rows) gives the difference an interval much narrower than the two
scores' own intervals. The classes whose F1 moved most say where the change came from.

Runs are read from their per-row prediction tables (``reports/probs/<name>.parquet``, DVC outputs) at
a git revision, a DVC experiment name or ``workspace``; everything after :func:`load_run` is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from rakuten.contracts import registry
from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS, PROBA_COLUMNS, codes_to_indices, indices_to_codes
from rakuten.contracts.model_files import probs_path
from rakuten.core.config import ConfigError, check_value, iter_knobs
from rakuten.core.errors import PipelineError
from rakuten.evaluation.bootstrap import BootstrapConfig, PairedDifference, full_scores, paired_difference

#: the current working tree instead of a revision (as in ``dvc exp show``)
WORKSPACE = "workspace"
#: params.yaml section whose bootstrap knobs (resamples, level, seed) are the command's defaults
SECTION = "evaluate"
#: how many classes are listed per name by default
TOP_CLASSES = 5
K = len(CLASS_CODES)


@dataclass(frozen=True)
class Run:
    """One side of a comparison: the revision as given, the commit it resolved to (None: the working
    tree) and its prediction tables by name (registered models, ``fusion``)."""

    rev: str
    commit: str | None
    tables: Mapping[str, pd.DataFrame]


@dataclass(frozen=True)
class ClassShift:
    """One class's test F1 in both runs and its change ``b - a``; ``support``: its test rows."""

    code: int
    f1_a: float
    f1_b: float
    change: float
    support: int


@dataclass(frozen=True)
class NameComparison:
    """One model (or the fusion) in both runs: weighted F1, the paired difference ``b - a`` (its
    ``share_a_wins`` is the share of resamples where B is better), rows predicted differently and the
    classes whose F1 moved most."""

    name: str
    rows: int
    weighted_f1_a: float
    weighted_f1_b: float
    difference: PairedDifference
    changed_rows: int
    classes: tuple[ClassShift, ...]


@dataclass(frozen=True)
class Comparison:
    """Run A against run B: revisions as given and their commits (None: the working tree), the bootstrap
    used, one result per name present in both runs, and the names only one run holds."""

    rev_a: str
    rev_b: str
    commit_a: str | None
    commit_b: str | None
    config: BootstrapConfig
    results: tuple[NameComparison, ...]
    only_a: tuple[str, ...] = ()
    only_b: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------- the figures


def class_f1(y_true, y_pred) -> np.ndarray:
    """F1 of each of the 27 classes in canonical order (0 where a class is neither actual nor predicted)."""
    t, p = codes_to_indices(y_true), codes_to_indices(y_pred)
    cm = np.bincount(t * K + p, minlength=K * K).reshape(K, K)
    tp = np.diagonal(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    return np.divide(2 * tp, denom, out=np.zeros(K), where=denom > 0)


def class_shifts(y_true, pred_a, pred_b, top: int) -> tuple[ClassShift, ...]:
    """The ``top`` classes whose F1 changed most from A to B, by absolute change then class code;
    classes whose F1 did not change are never listed."""
    f1_a, f1_b = class_f1(y_true, pred_a), class_f1(y_true, pred_b)
    change = f1_b - f1_a
    support = np.bincount(codes_to_indices(y_true), minlength=K)
    moved = np.flatnonzero(change != 0)
    size = np.round(np.abs(change[moved]), 12)  # equal changes reached by different sums still tie
    order = moved[np.lexsort((np.asarray(CLASS_CODES)[moved], -size))][:top]
    return tuple(
        ClassShift(CLASS_CODES[i], float(f1_a[i]), float(f1_b[i]), float(change[i]), int(support[i])) for i in order
    )


def compare_predictions(
    name: str, y_true, pred_a, pred_b, cfg: BootstrapConfig, top: int = TOP_CLASSES
) -> NameComparison:
    """Scores of one name in both runs on the same rows, and the paired-bootstrap difference ``b - a``."""
    y_true, pred_a, pred_b = (np.asarray(x, dtype=np.int64) for x in (y_true, pred_a, pred_b))
    return NameComparison(
        name=name,
        rows=len(y_true),
        weighted_f1_a=full_scores(y_true, pred_a)["weighted_f1"],
        weighted_f1_b=full_scores(y_true, pred_b)["weighted_f1"],
        difference=paired_difference(y_true, pred_b, pred_a, cfg),
        changed_rows=int((pred_a != pred_b).sum()),
        classes=class_shifts(y_true, pred_a, pred_b, top),
    )


# ------------------------------------------------------------------------------------- the rows


def scored_rows(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """The labelled test rows of a prediction table, by row_id: ``row_id``, ``label``, ``predicted``."""
    missing = [c for c in ("row_id", "split", "prdtypecode", *PROBA_COLUMNS) if c not in table.columns]
    if missing:
        raise PipelineError(f"{where}: missing column {missing[0]}; expected row_id, split, prdtypecode, p_<code> x27")
    test = table[table["split"].astype(str) == "test"]
    if len(test) == 0:
        raise PipelineError(f"{where}: no test rows")
    if test["prdtypecode"].isna().any():
        raise PipelineError(
            f"{where}: test row_id {test.loc[test['prdtypecode'].isna(), 'row_id'].iloc[0]} has no label"
        )
    dup = test["row_id"].duplicated()
    if dup.any():
        raise PipelineError(f"{where}: row_id {test.loc[dup, 'row_id'].iloc[0]} appears twice among the test rows")
    out = pd.DataFrame(
        {
            "row_id": test["row_id"].to_numpy(dtype=np.int64),
            "label": test["prdtypecode"].to_numpy(dtype=np.int64),
            "predicted": indices_to_codes(test[list(PROBA_COLUMNS)].to_numpy().argmax(axis=1)),
        }
    )
    return out.sort_values("row_id", kind="stable").reset_index(drop=True)


def check_same_rows(a: pd.DataFrame, b: pd.DataFrame, what: str, rev_a: str, rev_b: str) -> None:
    """Refuse, in one line, two runs whose test rows (row_ids, then labels) differ: their scores are not paired."""
    ids_a, ids_b = set(a["row_id"].tolist()), set(b["row_id"].tolist())
    if ids_a != ids_b:
        odd = ids_a ^ ids_b
        first = min(odd)
        raise PipelineError(
            f"{rev_a} and {rev_b} have different test rows in {what}: {len(odd)} row_id{'s' * (len(odd) > 1)} "
            f"in one run only, first row_id {first} (only in {rev_a if first in ids_a else rev_b}); "
            "compare runs scored on the same test split"
        )
    differ = np.flatnonzero(a["label"].to_numpy() != b["label"].to_numpy())
    if len(differ):
        i = differ[0]
        raise PipelineError(
            f"{rev_a} and {rev_b} label their test rows differently in {what}: "
            f"{len(differ)} {'row differs' if len(differ) == 1 else 'rows differ'}, first row_id {a['row_id'].iat[i]} "
            f"(prdtypecode {a['label'].iat[i]} in {rev_a}, {b['label'].iat[i]} in {rev_b}); "
            "compare runs scored on the same test split"
        )


def compare_runs(run_a: Run, run_b: Run, cfg: BootstrapConfig, top: int = TOP_CLASSES) -> Comparison:
    """Every name present in both runs, compared on their shared test rows; runs whose test rows or labels
    differ are refused before anything is computed."""
    names = [n for n in run_a.tables if n in run_b.tables]
    if not names:
        raise PipelineError(
            f"{run_a.rev} and {run_b.rev} have no prediction table in common "
            f"({', '.join(run_a.tables) or 'none'} vs {', '.join(run_b.tables) or 'none'})"
        )
    pairs = {}
    for name in names:
        what = str(probs_path(name))
        a = scored_rows(run_a.tables[name], f"{what} at {run_a.rev}")
        b = scored_rows(run_b.tables[name], f"{what} at {run_b.rev}")
        check_same_rows(a, b, what, run_a.rev, run_b.rev)
        pairs[name] = (a, b)
    results = tuple(
        compare_predictions(name, a["label"], a["predicted"], b["predicted"], cfg, top)
        for name, (a, b) in pairs.items()
    )
    return Comparison(
        run_a.rev,
        run_b.rev,
        run_a.commit,
        run_b.commit,
        cfg,
        results,
        only_a=tuple(n for n in run_a.tables if n not in run_b.tables),
        only_b=tuple(n for n in run_b.tables if n not in run_a.tables),
    )


# ------------------------------------------------------------------------------------- reading a run


def run_names() -> tuple[str, ...]:
    """The prediction tables a run may hold: every registered model, then the fusion."""
    return (*registry.MODELS, "fusion")


def resolve_revision(repo: Path, rev: str) -> str | None:
    """The commit of ``rev`` (a git revision or a DVC experiment name, as ``dvc exp diff`` resolves them);
    None for ``workspace``."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo
    from dvc.scm import RevError, resolve_rev
    from scmrepo.git import Git

    try:
        with Repo(str(repo)) as project:
            if rev == WORKSPACE:
                return None
            if not isinstance(project.scm, Git) or project.scm.no_commits:
                raise PipelineError(f"{repo}: no git history; only `{WORKSPACE}` can be read")
            return resolve_rev(project.scm, rev)
    except NotDvcRepoError:
        raise PipelineError(
            f"{repo}: not a DVC project (no .dvc folder); run from the project or pass --repo"
        ) from None
    except RevError:
        raise PipelineError(
            f"{rev}: neither a git revision nor a DVC experiment of {repo} (`dvc exp show` lists the experiments)"
        ) from None


def load_run(repo: Path, rev: str, names: Sequence[str] = ()) -> Run:
    """The prediction tables ``names`` (default :func:`run_names`) of ``rev`` that it holds, read from the
    DVC cache at its commit (or the working tree for ``workspace``)."""
    from dvc.exceptions import DvcException
    from dvc.fs import DVCFileSystem

    commit = resolve_revision(repo, rev)
    fs = DVCFileSystem(repo=str(repo), rev=commit)
    tables = {}
    try:
        for name in names or run_names():
            path = probs_path(name).as_posix()
            if not fs.exists(path):
                continue
            try:
                with fs.open(path, "rb") as fh:
                    tables[name] = pd.read_parquet(fh)
            except (DvcException, OSError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise PipelineError(
                    f"{path} at {rev}: cannot be read ({reason}); not in the DVC cache: `dvc pull` or "
                    "`dvc exp pull` brings it if that revision was built and pushed"
                ) from None
    finally:
        fs.close()
    return Run(rev, commit, tables)


def configured(params: Mapping[str, Any] | None, source: str) -> BootstrapConfig:
    """The bootstrap knobs of the ``evaluate`` section of ``params`` where it sets them, else the declared
    defaults; a bad value is one line naming the key."""
    section = (params or {}).get(SECTION)
    if not isinstance(section, Mapping):
        return BootstrapConfig()
    try:
        given = {
            name: check_value(BootstrapConfig, name, section[name], f"{SECTION}.{name}")
            for name, _, _ in iter_knobs(BootstrapConfig)
            if name in section
        }
    except ConfigError as exc:
        raise PipelineError(f"{source}: {exc}") from None
    return replace(BootstrapConfig(), **given)


# ------------------------------------------------------------------------------------- rendering


def _side(rev: str, commit: str | None) -> str:
    return rev if commit is None or commit.startswith(rev) else f"{rev} ({commit[:7]})"


def render(result: Comparison) -> str:
    """The comparison as text: one row per name, then the classes that moved most per name."""
    cfg = result.config
    pct = f"{cfg.level:.0%}"
    lines = [
        f"A = {_side(result.rev_a, result.commit_a)}, B = {_side(result.rev_b, result.commit_b)}: weighted F1 "
        f"on the same test rows; B - A with its {pct} paired-bootstrap interval ({cfg.resamples} resamples, "
        f"seed {cfg.seed})",
        "",
        f"{'name':<12} {'rows':>6} {'F1 A':>7} {'F1 B':>7} {'B - A':>8}  {pct + ' interval':<20} "
        f"{'B better':>8} {'changed':>8}",
    ]
    for r in result.results:
        d = r.difference
        lines.append(
            f"{r.name:<12} {r.rows:>6} {r.weighted_f1_a:>7.4f} {r.weighted_f1_b:>7.4f} {d.value:>+8.4f}  "
            f"{f'[{d.low:+.4f}, {d.high:+.4f}]':<20} {d.share_a_wins:>8.1%} {r.changed_rows:>8}"
        )
    lines += ["", "B better: share of resamples where B scores higher; changed: test rows predicted differently"]
    for side, names in (("A", result.only_a), ("B", result.only_b)):
        if names:
            lines.append(f"only in {side}, not compared: {', '.join(names)}")
    moved = [r for r in result.results if r.classes]
    if moved:
        lines += ["", "classes whose F1 moved most (B - A):"]
    for r in moved:
        lines.append(f"  {r.name}")
        for c in r.classes:
            lines.append(
                f"    {c.code:>4} {CLASS_LABELS[c.code][:34]:<34} {c.f1_a:.4f} -> {c.f1_b:.4f} {c.change:+.4f} "
                f"({c.support} test rows)"
            )
    return "\n".join(lines) + "\n"


def as_dict(result: Comparison) -> dict[str, Any]:
    """The comparison as JSON-ready data (figures rounded to 6 places, as in metrics.json)."""
    return {
        "a": {"rev": result.rev_a, "commit": result.commit_a},
        "b": {"rev": result.rev_b, "commit": result.commit_b},
        "bootstrap": {"resamples": result.config.resamples, "level": result.config.level, "seed": result.config.seed},
        "only_in_a": list(result.only_a),
        "only_in_b": list(result.only_b),
        "results": {
            r.name: {
                "rows": r.rows,
                "weighted_f1_a": round(r.weighted_f1_a, 6),
                "weighted_f1_b": round(r.weighted_f1_b, 6),
                "difference": round(r.difference.value, 6),
                "difference_low": round(r.difference.low, 6),
                "difference_high": round(r.difference.high, 6),
                "share_b_wins": round(r.difference.share_a_wins, 6),
                "changed_rows": r.changed_rows,
                "classes": [
                    {
                        "prdtypecode": c.code,
                        "label": CLASS_LABELS[c.code],
                        "f1_a": round(c.f1_a, 6),
                        "f1_b": round(c.f1_b, 6),
                        "change": round(c.change, 6),
                        "support": c.support,
                    }
                    for c in r.classes
                ],
            }
            for r in result.results
        },
    }


def to_json(result: Comparison) -> str:
    return json.dumps(as_dict(result), indent=2, ensure_ascii=False) + "\n"
