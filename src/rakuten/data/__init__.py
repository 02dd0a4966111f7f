"""The catalog: the official file layout, the generated sample, the duplicate-aware split."""
