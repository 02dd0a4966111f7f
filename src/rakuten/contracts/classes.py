"""The 27 product-type codes: canonical order, French labels and the official train counts.

Every probability table, confusion matrix and label encoder in the pipeline uses
``CLASS_CODES`` (codes sorted ascending) so that column ``i`` always means the same class.
"""

from __future__ import annotations

import numpy as np

#: code -> (French label from the study, count in the official X_train)
CLASS_INFO: dict[int, tuple[str, int]] = {
    10: ("Livre occasion", 3116),
    40: ("Jeu vidéo, accessoire tech", 2508),
    50: ("Accessoire console", 1681),
    60: ("Console de jeu", 832),
    1140: ("Figurine", 2671),
    1160: ("Carte collection", 3953),
    1180: ("Jeu de plateau (figurines, wargame)", 764),
    1280: ("Jouet enfant, déguisement", 4870),
    1281: ("Jeu de société", 2070),
    1300: ("Jouet tech (modélisme, drones)", 5045),
    1301: ("Paire de chaussettes (bébé)", 807),
    1302: ("Jeu d'extérieur, vêtement", 2491),
    1320: ("Autour du bébé", 3241),
    1560: ("Mobilier intérieur", 5073),
    1920: ("Chambre (linge de maison)", 4303),
    1940: ("Cuisine (épicerie)", 803),
    2060: ("Décoration intérieure", 4993),
    2220: ("Animal (animalerie)", 824),
    2280: ("Revues et journaux", 4760),
    2403: ("Magazines, livres, BD en lot", 4774),
    2462: ("Jeu vidéo d'occasion", 1421),
    2522: ("Bureautique et papeterie", 4989),
    2582: ("Mobilier extérieur", 2589),
    2583: ("Autour de la piscine", 10209),
    2585: ("Bricolage, outillage", 2496),
    2705: ("Livre neuf", 2761),
    2905: ("Jeu PC (téléchargement)", 872),
}

CLASS_CODES: tuple[int, ...] = tuple(sorted(CLASS_INFO))
CLASS_LABELS: dict[int, str] = {code: label for code, (label, _) in CLASS_INFO.items()}
OFFICIAL_TRAIN_COUNTS: dict[int, int] = {code: n for code, (_, n) in CLASS_INFO.items()}
N_CLASSES = len(CLASS_CODES)
#: probability column names, in canonical order (``p_10`` ... ``p_2905``)
PROBA_COLUMNS: tuple[str, ...] = tuple(f"p_{code}" for code in CLASS_CODES)
_CODE_TO_INDEX = {code: i for i, code in enumerate(CLASS_CODES)}


def class_proportions() -> np.ndarray:
    """Official train proportions in canonical order (sums to 1)."""
    counts = np.array([OFFICIAL_TRAIN_COUNTS[c] for c in CLASS_CODES], dtype=float)
    return counts / counts.sum()


def codes_to_indices(codes) -> np.ndarray:
    """Map product-type codes to column indices; raises ValueError naming the first unknown code."""
    codes = np.asarray(codes)
    out = np.empty(len(codes), dtype=np.int64)
    for i, code in enumerate(codes):
        try:
            out[i] = _CODE_TO_INDEX[int(code)]
        except (KeyError, ValueError, TypeError):
            shown = code.item() if hasattr(code, "item") else code
            raise ValueError(
                f"unknown product-type code {shown!r} at position {i}; expected one of the 27 codes"
            ) from None
    return out


def indices_to_codes(indices) -> np.ndarray:
    """Inverse of :func:`codes_to_indices`."""
    return np.asarray(CLASS_CODES, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]
