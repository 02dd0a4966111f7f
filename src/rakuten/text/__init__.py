"""Product texts: HTML/encoding cleaning, language detection, translation, spaCy normalisation."""
