"""Deterministic generator of a synthetic catalog in exactly the official challenge layout.

Why: the real files cannot be redistributed, yet every stage, test and benchmark needs input with
the real shape and the real problems. The generator plants the study's problems with a known
ground truth (``defects.json``) so cleaning stages can be scored for precision and recall:

* the 27 codes in the official proportions; French titles from class vocabularies plus words shared
  within confusable families, brands, colours, sizes and units; a share of "hard" rows whose words
  come from a sibling class (the image still shows the true class, so fusion has something to add);
* HTML descriptions with entities, missing in ~35% of rows; ~15% English, ~3% German, ~1% other
  languages; a few mojibake rows; exact duplicate texts, some with a conflicting label;
* label noise: a few percent of the labelled rows get a sibling class's label (``Y_train`` only);
* class-dependent images (shape, hue, texture, with overlap between families) and planted defects:
  exact duplicate files, near duplicates (re-encoded, cropped, resized; same and cross class),
  blur, red cast, product drawn small inside a wide white border.

Every row draws from its own RNG seeded by ``(seed, row)``, so output is byte-identical for a seed
whatever the number of worker processes.

Modules: :mod:`.config` (the ``sample`` params), :mod:`.vocabulary` (word lists), :mod:`.labels`
(proportions, families, languages), :mod:`.texts`, :mod:`.images` (clean photos), :mod:`.defects`
(planted image defects and their plan), :mod:`.tables` (the X/Y tables and text truth),
:mod:`.noise` (the switched labels), :mod:`.render` (JPEG files in workers), :mod:`.writer` (CSVs,
``defects.json``) and :mod:`.generate` (``write_sample``, what the stage calls).
"""
