"""Models share one small interface (``train``, ``predict_proba``, ``save``, ``load``) and one
output contract (:mod:`rakuten.models.contract`), so stages and fusion treat them alike."""
