"""``rakuten serve``: the trained pipeline as an HTTP service (FastAPI), with a web page to try it.

Why a service: a model people cannot try is a model they do not trust. The service answers with
exactly what ``rakuten predict`` computes: it builds catalog rows with ingest's own function, cleans
them as the models were trained (:class:`rakuten.serving.predict.Predictor`, loaded once at start) and
fuses the same models. Endpoints:

- ``GET /``: the web page (``rakuten/serving/static/index.html``, plain HTML + JS);
- ``POST /predict``: one product, JSON or a multipart form with an optional image (``single``);
- ``POST /predict/batch``: a CSV in the X_test layout and its images, the prediction CSV streamed
  back chunk by chunk (``batch``);
- ``GET /health``, ``GET /metadata`` (artifacts and their DVC hashes, the fused strategy, the params
  the models were trained with; ``metadata``), ``GET /docs`` (``routes``).

Every bad request gets a 4xx with one JSON line ``{"error": "..."}`` naming the field and what was
expected (``inputs``, ``errors``); an unexpected failure is a 500 with one line, logged, and the server
keeps serving. What a hostile client can cost is bounded (``limits``; :mod:`rakuten.serving.http_guards`;
docs/serve.md, "Resource limits"). Single products that wait at the same time are predicted together
(``batcher``). The modules: ``limits`` (the knobs, section ``serve``), ``app`` (the application built
from the routes), ``service`` (what the requests share), ``routes``, ``single``, ``batcher``, ``batch``,
``inputs``, ``errors``, ``metadata``, ``page``, and ``server`` (load, warm up, serve). Every module logs
to this package's logger, ``rakuten.serving.serve``, which the server rate-limits.
"""
