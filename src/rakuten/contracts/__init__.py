"""What stages hand each other: the 27 classes, the scores, the model files, the embeddings table, the registry of
models, the saved preprocessing.
"""
