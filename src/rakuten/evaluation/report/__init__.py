"""The error-analysis report ``reports/report.html``, written by the evaluate stage.

Why one self-contained file: it is mailed, attached to a pull request or opened on a laptop
without the repository or a network, so every image is an inline ``data:`` URI, the CSS is
inline, nothing is fetched and no script runs. Why deterministic bytes: the file is a DVC output,
so the same inputs must give the same file (no timestamps, no temporary paths, stable ordering,
fixed number formats, images re-encoded from their pixels only).

Sections (each built by one pure function of :mod:`.sections` from tables the stage already has;
:mod:`.page` puts them together):

1. metrics: every model and fusion strategy beside the study's figure (:mod:`rakuten.evaluation.evaluate`);
2. the fused model's 27 x 27 confusion matrix on test, row-normalised shading, counts as text;
3. its most confused class pairs with example products (thumbnail of the cleaned image, title);
4. per-class F1 bars of every model and of the fused model;
5. Grad-CAM overlays of the image model on the first correct and first wrong test products;
6. the image_clean stage's contact sheets.

Everything that comes from data (titles, labels, names) goes through :func:`html.escape`.

Modules: :mod:`.config` (the ``report`` knobs and the inputs), :mod:`.tables` (the rows each section
shows), :mod:`.markup` (escaping, number formats, inline pictures), :mod:`.sections`, :mod:`.page` (the
document, :func:`~rakuten.evaluation.report.page.build_report`) and :mod:`.image_model` (the model
Grad-CAM explains, from the registry).
"""
