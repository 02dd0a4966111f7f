"""The ``label_audit`` stage: flag training rows whose label looks wrong, and let the models drop them.

Why: a few percent of a marketplace's labels are wrong, mostly a neighbouring class (a console game filed
as a console). Training on them costs some F1; finding them is confident learning (cleanlab) on
out-of-fold probabilities: each training row is predicted by models that never saw it, and a row whose
given label gets a low probability while another class gets a high one is flagged.

Modules: :mod:`.config` (the ``label_audit`` params), :mod:`.image_features` (a cheap image classifier on
colour and shape features: the text alone cannot tell a mislabelled row from a row whose title borrows a
neighbour's words), :mod:`.crossfit` (folds that keep duplicate groups together, out-of-fold probabilities,
pooling), :mod:`.issues` (cleanlab's flags and scores, the issue table, the ``training_split`` policy),
:mod:`.truth` (scoring the flags against the sample's planted noise) and :mod:`.audit` (what the stage calls).
"""
