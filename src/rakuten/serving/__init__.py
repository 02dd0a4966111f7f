"""The product surface: the ``rakuten`` command, batch prediction, the HTTP service, the challenge submission."""
