"""Product photos: hashing and near-duplicate groups, quality detectors, cleaning, contact sheets."""
