"""The report's trust sections: calibration (reliability diagrams before and after, ECE / NLL / Brier with
intervals) and the human-review threshold (coverage, precision, the risk-coverage curve).

Charts are inline SVG written with fixed number formats: no plotting library, and the same inputs give
the same bytes (the report is a DVC output).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from rakuten.evaluation.bootstrap import Estimate
from rakuten.evaluation.report.markup import esc, fmt

W, H, PAD = 260, 220, 34  # chart size and margin (px)


def _x(v: float) -> float:
    return PAD + v * (W - PAD - 8)


def _y(v: float) -> float:
    return H - PAD - v * (H - PAD - 8)


def _axes(x_label: str, y_label: str, lo: float = 0.0) -> str:
    """Frame, ticks at 0, .5, 1 of the unit square (y from ``lo``), axis labels."""
    ticks = "".join(
        f'<text x="{_x(t):.1f}" y="{H - PAD + 14}" text-anchor="middle">{t:g}</text>'
        f'<text x="{PAD - 4}" y="{_y(t) + 4:.1f}" text-anchor="end">{lo + t * (1 - lo):g}</text>'
        for t in (0.0, 0.5, 1.0)
    )
    return (
        f'<rect x="{PAD}" y="8" width="{W - PAD - 8}" height="{H - PAD - 8}" fill="none" stroke="#999"/>{ticks}'
        f'<text x="{(PAD + W) / 2:.1f}" y="{H - 4}" text-anchor="middle">{esc(x_label)}</text>'
        f'<text x="10" y="{(H - PAD) / 2:.1f}" text-anchor="middle" transform="rotate(-90 10 {(H - PAD) / 2:.1f})">'
        f"{esc(y_label)}</text>"
    )


def _line(y0: float, y1: float, colour: str, dash: str) -> str:
    """A dashed line across the chart, from x = 0 at height ``y0`` to x = 1 at ``y1`` (px)."""
    return (
        f'<line x1="{_x(0):.1f}" y1="{y0:.1f}" x2="{_x(1):.1f}" y2="{y1:.1f}" stroke="{colour}" '
        f'stroke-dasharray="{dash}"/>'
    )


def _svg(body: str, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" '
        f'aria-label="{esc(label)}" font-size="10">{body}</svg>'
    )


def reliability_svg(bins: pd.DataFrame, title: str) -> str:
    """A reliability diagram: per confidence bin a bar of its accuracy, a dot at its mean confidence, and
    the diagonal (perfect calibration). Empty bins are left blank."""
    bars = []
    for r in bins.itertuples(index=False):
        if r.count == 0:
            continue
        x0, x1 = _x(r.lo), _x(r.hi)
        top = _y(r.accuracy)
        bars.append(
            f'<rect x="{x0:.1f}" y="{top:.1f}" width="{x1 - x0 - 1:.1f}" height="{_y(0) - top:.1f}" fill="#1f77b4" '
            f'fill-opacity="0.75"><title>confidence {r.lo:.2f}-{r.hi:.2f}: {int(r.count)} rows, accuracy '
            f"{r.accuracy:.3f}, mean confidence {r.confidence:.3f}</title></rect>"
            f'<circle cx="{(x0 + x1) / 2:.1f}" cy="{_y(r.confidence):.1f}" r="2" fill="#d62728"/>'
        )
    diagonal = _line(_y(0), _y(1), "#555", "3 3")
    return _svg(_axes("top-label confidence", "accuracy") + diagonal + "".join(bars), title)


def risk_coverage_svg(curve: pd.DataFrame, target: float, coverage: float | None) -> str:
    """Precision of the accepted rows against coverage (most confident first), the target precision as a
    dashed line and the chosen operating point as a dot."""
    lo = float(np.floor(min(curve["precision"].min(), target) * 10) / 10)
    lo = min(lo, 0.9)

    def y(p: float) -> float:
        return _y((p - lo) / (1 - lo))

    points = " ".join(f"{_x(c):.1f},{y(p):.1f}" for c, p in zip(curve["coverage"], curve["precision"]))
    target_line = _line(y(target), y(target), "#d62728", "4 3")
    dot = ""
    if coverage is not None and coverage > 0:
        k = int(np.argmin(np.abs(curve["coverage"].to_numpy() - coverage)))
        dot = (
            f'<circle cx="{_x(coverage):.1f}" cy="{y(float(curve["precision"].iloc[k])):.1f}" r="3.5" fill="#2ca02c"/>'
        )
    body = _axes("coverage (share auto-accepted)", "precision of accepted", lo)
    return _svg(
        body + f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{points}"/>' + target_line + dot,
        "risk-coverage curve",
    )


def _with_interval(est: Estimate | None, pct: bool = False) -> str:
    if est is None:
        return "—"
    if pct:
        return f"{est.value:.1%} [{est.low:.1%}, {est.high:.1%}]"
    return f"{fmt(est.value)} [{fmt(est.low)}, {fmt(est.high)}]"


def calibration_html(
    calibration: Mapping[str, Mapping[str, Estimate]],
    reliability: Mapping[str, pd.DataFrame],
    method: str,
    level: float,
) -> str:
    """ECE / NLL / Brier of every model and the fused output (before and after calibration) on test, and
    the reliability diagrams of the fused output before and after."""
    if not calibration:
        return "<p>No calibration figures (run the fusion stage of this version).</p>"
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{_with_interval(block.get('ece'))}</td>"
        f"<td>{_with_interval(block.get('ece_floor'))}</td><td>{_with_interval(block.get('nll'))}"
        f"</td><td>{_with_interval(block.get('brier'))}</td></tr>"
        for name, block in calibration.items()
    )
    charts = "".join(
        f"<figure>{reliability_svg(bins, name)}<figcaption>{esc(name)}</figcaption></figure>"
        for name, bins in reliability.items()
    )
    return (
        f"<p>Top-label expected calibration error (ECE, equal-width bins), negative log-likelihood and Brier "
        f"score on test, with {level:.0%} bootstrap intervals. The fused output is calibrated on validation rows "
        f"only (method chosen out of fold: <b>{esc(method)}</b>); <code>fusion_uncalibrated</code> is the same "
        "model before calibration. Lower is better. <i>ECE floor</i>: the ECE a perfectly calibrated model "
        "with the same confidences would show on these rows (binned ECE is biased upward on a finite test "
        "set); an ECE within it is as calibrated as the rows can tell.</p>"
        '<table class="metrics"><thead><tr><th>model</th><th>ECE</th><th>ECE floor</th><th>NLL</th>'
        "<th>Brier</th></tr></thead>"
        f'<tbody>{rows}</tbody></table><div class="examples">{charts}</div>'
        "<p>Bars: accuracy per confidence bin; red dots: mean confidence in the bin; dashed: perfect calibration.</p>"
    )


def review_html(review: Mapping | None, curve: pd.DataFrame | None, level: float) -> str:
    """The review threshold chosen on val, what it delivers on test, and the test risk-coverage curve."""
    if review is None or curve is None:
        return "<p>No review threshold (run the fusion stage of this version).</p>"
    coverage = review.get("coverage")
    return (
        f"<p>Target precision of automatically accepted predictions: <b>{review['target_precision']:.2%}</b> "
        f"(review.target_precision). Threshold on the calibrated top probability, chosen on validation rows: "
        f"<b>{review['threshold']:.4f}</b>. On test, with {level:.0%} bootstrap intervals:</p>"
        f'<table class="metrics"><tbody><tr><td>coverage (accepted automatically)</td>'
        f"<td>{_with_interval(coverage, pct=True)}</td></tr><tr><td>precision of the accepted rows</td>"
        f"<td>{_with_interval(review.get('precision'), pct=True)}</td></tr></tbody></table>"
        f"<figure>{risk_coverage_svg(curve, review['target_precision'], None if coverage is None else coverage.value)}"
        "<figcaption>Test rows by falling confidence: precision of the accepted rows against the share "
        "accepted; dashed: the target; dot: the chosen threshold.</figcaption></figure>"
        "<p><code>rakuten predict</code> and the service return <code>needs_review</code> = top probability "
        "below the threshold.</p>"
    )
