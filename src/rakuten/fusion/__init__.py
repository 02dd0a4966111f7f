"""Late fusion of the models' class probabilities (the ``fusion`` stage)."""
