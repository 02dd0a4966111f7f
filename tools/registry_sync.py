"""The parts of ``dvc.yaml`` that repeat per registered model, generated from :mod:`rakuten.contracts.registry`.

Why: DVC cannot expand a list into deps or plots (``${fusion.models}`` in ``deps:`` is "Cannot interpolate
data of type 'list'", and ``foreach`` only generates whole stages), so these lists are written out; this
module writes them from the registry, so adding a model never means editing them by hand:

- ``artifacts:``: one entry per model (``models/<name>``, its ``desc``, labels from its modality), then fusion;
- the ``fusion``, ``evaluate`` and ``submission`` deps on ``reports/probs/<name>.parquet``, one per model,
  at the place of the first one (the lines around them are kept);
- ``evaluate``'s dep on ``models/<image model>``, the model its report explains (``report_image``);
- ``evaluate``'s ``plots:``: one confusion matrix per model, the chosen fusion and each fusion strategy, then the
  risk-coverage curve of the review threshold.

``python -m tools.registry_sync --write`` rewrites them (nothing else changes); without ``--write`` it exits 1
naming what differs (``tests/integration/test_registry_sync.py`` checks the committed file).
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Sequence

from rakuten.contracts import registry
from rakuten.core.knob_yaml import scalar
from rakuten.fusion.model import modality_inputs
from rakuten.fusion.strategies import STRATEGIES

REPO = Path(__file__).resolve().parents[1]
#: the stages that read every model's probability table
PROBS_STAGES = ("fusion", "evaluate", "submission")
#: the stage whose report explains the image model (its ``models/<name>`` dep)
REPORT_STAGE = "evaluate"
FUSION_ARTIFACT = {
    "desc": "late fusion of the model probabilities, strategy chosen on out-of-fold val weighted F1",
    "labels": ["text", "image", "fusion"],
}
PROBS_DEP = re.compile(r"^\s+- reports/probs/(?P<name>[A-Za-z0-9_.-]+)\.parquet\s*(#.*)?$")
MODEL_DEP = re.compile(r"^\s+- models/(?P<name>[A-Za-z0-9_.-]+)/?\s*(#.*)?$")


def labels(modality: str) -> list[str]:
    """An artifact's labels: the inputs its modality reads, then the modality when it is not one of them."""
    inputs = list(modality_inputs(modality))
    return inputs if modality in inputs else [*inputs, modality]


def artifacts_block(models: Sequence[registry.ModelSpec]) -> list[str]:
    """The entries under ``artifacts:`` (without that line): every model, then fusion."""
    out = []
    entries = [(m.name, m.desc, labels(m.modality)) for m in models]
    for name, desc, tags in [*entries, ("fusion", FUSION_ARTIFACT["desc"], FUSION_ARTIFACT["labels"])]:
        out += [f"  {name}:\n", f"    path: models/{name}\n", "    type: model\n"]
        out += [f"    desc: {scalar(desc)}\n"] if desc else []
        out.append(f"    labels: [{', '.join(tags)}]\n")
    return out


def plots_block(models: Sequence[registry.ModelSpec], indent: int) -> list[str]:
    """``evaluate``'s plots: a confusion matrix per model, the chosen fusion and every strategy (one anchor),
    then the fused model's risk-coverage curve (one per run, whatever the models)."""
    pad = " " * indent
    names = [*(m.name for m in models), "fusion", *(f"fusion_{s}" for s in STRATEGIES)]
    out = [
        f"{pad}- reports/plots/confusion_{names[0]}.csv: &confusion\n",
        f"{pad}    template: confusion\n",
        f"{pad}    x: actual\n",
        f"{pad}    y: predicted\n",
        f"{pad}    cache: false\n",
    ]
    out += [f"{pad}- reports/plots/confusion_{name}.csv: *confusion\n" for name in names[1:]]
    return out + [
        f"{pad}- reports/plots/risk_coverage.csv:   # precision of the auto-accepted test rows against their share\n",
        f"{pad}    x: coverage\n",
        f"{pad}    y: precision\n",
        f"{pad}    cache: false\n",
    ]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _replace_deps(lines: list[str], pattern: re.Pattern, new: list[str], where: str) -> list[str]:
    """``lines`` (one stage's deps) with every line matching ``pattern`` (except fusion's own table) removed and
    ``new`` put at the place of the first; none to replace is an error naming ``where``."""
    hits = [i for i, line in enumerate(lines) if (m := pattern.match(line)) and m["name"] != "fusion"]
    if not hits:
        raise ValueError(f"dvc.yaml: {where}: no line to generate from the registry ({pattern.pattern})")
    pad = " " * _indent(lines[hits[0]])
    kept = [line for i, line in enumerate(lines) if i not in hits]
    at = hits[0]
    return kept[:at] + [f"{pad}- {dep}\n" for dep in new] + kept[at:]


def _lists(lines: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
    """``(stage, key)`` -> ``(first, end)``: the lines under each key of each stage (``deps:``, ``plots:``, ...),
    i.e. the more indented lines after it, trailing blank lines left out."""
    out: dict[tuple[str, str], tuple[int, int]] = {}
    in_stages, stage, key, start = False, "", "", 0
    for i, line in enumerate([*lines, "end:\n"]):
        text, indent = line.strip(), _indent(line)
        if not text or indent > 4:
            continue  # an item (or a comment, a blank line) of the current key
        if key:
            end = i
            while end > start and not lines[end - 1].strip():
                end -= 1
            out[(stage, key)], key = (start, end), ""
        if indent == 0:
            in_stages = text.startswith("stages:")
        elif indent == 2 and in_stages:
            stage = text.split(":")[0]
        elif indent == 4 and in_stages and not text.startswith("#"):
            key, start = text.split(":")[0], i + 1
    return out


def _block_end(lines: list[str], start: int) -> int:
    """The end of the top-level block starting at ``start``: the first line at indent 0 after it."""
    end = start + 1
    while end < len(lines) and not (lines[end].strip() and _indent(lines[end]) == 0):
        end += 1
    while lines[end - 1].strip() == "":  # blank lines between blocks stay outside
        end -= 1
    return end


def generate(text: str, models: Sequence[registry.ModelSpec], image_model: str) -> str:
    """``text`` (dvc.yaml) with its per-model parts generated from ``models``; every other line kept."""
    lines = text.splitlines(keepends=True)
    probs = [f"reports/probs/{m.name}.parquet" for m in models]
    # from the bottom up, so that the earlier ranges stay valid
    edits: list[tuple[int, int, list[str]]] = []
    sections = _lists(lines)
    missing = [
        f"{s}.{k}" for s, k in [*((s, "deps") for s in PROBS_STAGES), (REPORT_STAGE, "plots")] if (s, k) not in sections
    ]
    start = next((i for i, line in enumerate(lines) if line.startswith("artifacts:")), None)
    if missing or start is None:
        raise ValueError(f"dvc.yaml: no {missing[0] if missing else 'artifacts'} list to generate from the registry")
    for stage in PROBS_STAGES:
        first, end = sections[(stage, "deps")]
        deps = _replace_deps(lines[first:end], PROBS_DEP, probs, f"stage {stage} deps")
        if stage == REPORT_STAGE:
            deps = _replace_deps(deps, MODEL_DEP, [f"models/{image_model}"], f"stage {stage} deps (models/)")
        edits.append((first, end, deps))
    first, end = sections[(REPORT_STAGE, "plots")]
    edits.append((first, end, plots_block(models, _indent(lines[first]))))
    edits.append((start + 1, _block_end(lines, start), artifacts_block(models)))
    for first, end, new in sorted(edits, reverse=True):
        lines[first:end] = new
    return "".join(lines)


def expected(root: Path = REPO) -> str:
    """The project's dvc.yaml as the registry wants it."""
    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    return generate(text, list(registry.MODELS.values()), registry.report_image_model())


def main(argv: list[str] | None = None) -> int:
    """Without ``--write``: 1 and the differences when dvc.yaml does not follow the registry; with it: rewrite."""
    argv = sys.argv[1:] if argv is None else argv
    path = REPO / "dvc.yaml"
    current, wanted = path.read_text(encoding="utf-8"), expected(REPO)
    if "--write" in argv:
        path.write_text(wanted, encoding="utf-8")
        return 0
    if current != wanted:
        diff = difflib.unified_diff(current.splitlines(True), wanted.splitlines(True), "dvc.yaml", "registry")
        sys.stdout.write(
            "".join(diff) + "dvc.yaml differs from the registry: run `python -m tools.registry_sync --write`\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
