"""Models share one small interface (``train``, ``predict_proba``, ``save``, ``load``) and one
output contract (:mod:`rakuten.contracts.model_files`), so stages and fusion treat them alike."""
