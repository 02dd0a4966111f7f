"""Word lists for the sample catalog: class-specific vocabulary in French, English and German,
confusable families of classes that share words, brands and filler phrases.

The lists are deliberately small and overlapping so that the generated problem is learnable but
not trivial, with the same confusions as the real catalog (new vs used books, board vs society
games, video games vs PC downloads...).
"""

from __future__ import annotations

# code -> {"fr": [...], "en": [...], "de": [...]} words specific to the class
CLASS_WORDS: dict[int, dict[str, list[str]]] = {
    10: {
        "fr": [
            "roman",
            "occasion",
            "poche",
            "auteur",
            "édition ancienne",
            "récit",
            "biographie",
            "policier",
            "collection folio",
            "bon état",
        ],
        "en": ["novel", "paperback", "used", "author", "second hand", "biography", "crime story"],
        "de": ["Roman", "Taschenbuch", "gebraucht", "Autor", "Biografie", "Krimi"],
    },
    40: {
        "fr": [
            "manette",
            "câble",
            "chargeur",
            "casque gamer",
            "clavier",
            "souris",
            "adaptateur",
            "support",
            "écran",
            "import japon",
        ],
        "en": ["controller", "cable", "charger", "gaming headset", "keyboard", "mouse", "adapter"],
        "de": ["Controller", "Kabel", "Ladegerät", "Headset", "Tastatur", "Maus"],
    },
    50: {
        "fr": [
            "housse",
            "protection",
            "station de charge",
            "volant",
            "grip",
            "skin",
            "sacoche",
            "joystick",
            "batterie",
        ],
        "en": ["case", "protective cover", "charging dock", "steering wheel", "grip", "skin", "carry bag"],
        "de": ["Hülle", "Schutzhülle", "Ladestation", "Lenkrad", "Tasche", "Akku"],
    },
    60: {
        "fr": ["console", "pack console", "édition limitée", "go", "portable", "rétro", "mini", "bundle"],
        "en": ["console", "handheld", "retro console", "limited edition", "bundle", "mini"],
        "de": ["Konsole", "Handheld", "Retro", "Sonderedition", "Bundle"],
    },
    1140: {
        "fr": ["figurine", "statuette", "pop", "vinyl", "personnage", "articulée", "manga", "collector", "résine"],
        "en": ["figure", "statue", "vinyl", "character", "action figure", "collectible"],
        "de": ["Figur", "Statue", "Sammelfigur", "Actionfigur", "Vinyl"],
    },
    1160: {
        "fr": ["carte", "booster", "rare", "holo", "yu-gi-oh", "magic", "pokémon", "deck", "carte brillante"],
        "en": ["card", "booster", "rare", "holo", "trading card", "deck", "foil"],
        "de": ["Karte", "Sammelkarte", "Booster", "selten", "Deck"],
    },
    1180: {
        "fr": [
            "warhammer",
            "figurines à peindre",
            "wargame",
            "escouade",
            "socle",
            "space marine",
            "jeu de figurines",
            "armée",
        ],
        "en": ["wargame", "miniatures", "squad", "space marine", "army", "paint set"],
        "de": ["Tabletop", "Miniaturen", "Armee", "Trupp", "Bemalset"],
    },
    1280: {
        "fr": ["déguisement", "poupée", "peluche", "costume", "jouet", "enfant", "princesse", "doudou", "dînette"],
        "en": ["costume", "doll", "plush", "toy", "kids", "princess", "dress up"],
        "de": ["Kostüm", "Puppe", "Plüsch", "Spielzeug", "Kinder", "Prinzessin"],
    },
    1281: {
        "fr": ["jeu de société", "plateau", "dés", "stratégie", "famille", "cartes à jouer", "extension", "joueurs"],
        "en": ["board game", "dice", "strategy", "family game", "party game", "players"],
        "de": ["Gesellschaftsspiel", "Brettspiel", "Würfel", "Strategie", "Familienspiel", "Spieler"],
    },
    1300: {
        "fr": [
            "drone",
            "radiocommandé",
            "modélisme",
            "hélicoptère",
            "voiture rc",
            "hélice",
            "télécommande",
            "maquette",
            "train électrique",
        ],
        "en": ["drone", "remote control", "rc car", "helicopter", "propeller", "model kit"],
        "de": ["Drohne", "ferngesteuert", "Modellbau", "Hubschrauber", "Propeller", "Bausatz"],
    },
    1301: {
        "fr": ["chaussettes", "paire", "bébé", "naissance", "antidérapantes", "coton", "taille 0-6 mois"],
        "en": ["socks", "pair", "baby", "newborn", "anti slip", "cotton"],
        "de": ["Socken", "Paar", "Baby", "Neugeborene", "rutschfest", "Baumwolle"],
    },
    1302: {
        "fr": [
            "trampoline",
            "ballon",
            "balançoire",
            "toboggan",
            "tente",
            "vélo enfant",
            "trottinette",
            "maillot",
            "plein air",
        ],
        "en": ["trampoline", "ball", "swing", "slide", "tent", "outdoor", "scooter"],
        "de": ["Trampolin", "Ball", "Schaukel", "Rutsche", "Zelt", "Roller"],
    },
    1320: {
        "fr": ["poussette", "biberon", "tétine", "siège auto", "bavoir", "lit parapluie", "chancelière", "gigoteuse"],
        "en": ["stroller", "baby bottle", "pacifier", "car seat", "bib", "travel cot"],
        "de": ["Kinderwagen", "Babyflasche", "Schnuller", "Autositz", "Lätzchen"],
    },
    1560: {
        "fr": [
            "armoire",
            "commode",
            "chaise",
            "table basse",
            "bibliothèque",
            "canapé",
            "meuble tv",
            "tabouret",
            "étagère",
        ],
        "en": ["wardrobe", "chest of drawers", "chair", "coffee table", "sofa", "shelf"],
        "de": ["Schrank", "Kommode", "Stuhl", "Couchtisch", "Sofa", "Regal"],
    },
    1920: {
        "fr": [
            "housse de couette",
            "oreiller",
            "drap",
            "taie",
            "parure de lit",
            "couverture",
            "plaid",
            "coussin",
            "matelas",
        ],
        "en": ["duvet cover", "pillow", "bed sheet", "pillowcase", "blanket", "throw"],
        "de": ["Bettbezug", "Kissen", "Bettlaken", "Kissenbezug", "Decke"],
    },
    1940: {
        "fr": ["café", "chocolat", "bonbons", "épices", "thé", "biscuits", "confiserie", "bio", "sachet"],
        "en": ["coffee", "chocolate", "candy", "spices", "tea", "cookies", "organic"],
        "de": ["Kaffee", "Schokolade", "Bonbons", "Gewürze", "Tee", "Kekse"],
    },
    2060: {
        "fr": [
            "décoration",
            "vase",
            "cadre photo",
            "sticker mural",
            "guirlande",
            "bougie",
            "horloge",
            "miroir",
            "lampe",
        ],
        "en": ["decoration", "vase", "photo frame", "wall sticker", "candle", "wall clock", "mirror"],
        "de": ["Dekoration", "Vase", "Bilderrahmen", "Wandtattoo", "Kerze", "Wanduhr", "Spiegel"],
    },
    2220: {
        "fr": ["chien", "chat", "collier", "laisse", "croquettes", "niche", "aquarium", "litière", "griffoir"],
        "en": ["dog", "cat", "collar", "leash", "pet food", "aquarium", "litter"],
        "de": ["Hund", "Katze", "Halsband", "Leine", "Futter", "Aquarium"],
    },
    2280: {
        "fr": ["revue", "journal", "magazine", "numéro", "hebdomadaire", "mensuel", "paris match", "le monde"],
        "en": ["magazine", "newspaper", "issue", "weekly", "monthly"],
        "de": ["Zeitschrift", "Zeitung", "Ausgabe", "Wochenblatt"],
    },
    2403: {
        "fr": ["lot", "bd", "bande dessinée", "mangas", "lot de livres", "série complète", "albums", "volumes"],
        "en": ["lot", "comics", "bundle of books", "complete series", "volumes"],
        "de": ["Konvolut", "Comics", "Bücherpaket", "Serie", "Bände"],
    },
    2462: {
        "fr": ["jeu occasion", "ps2", "ps3", "wii", "gamecube", "xbox 360", "jeu complet", "boîte", "notice"],
        "en": ["used game", "ps2", "ps3", "wii", "gamecube", "complete in box"],
        "de": ["Spiel gebraucht", "ps2", "ps3", "wii", "komplett"],
    },
    2522: {
        "fr": ["cahier", "stylo", "agenda", "classeur", "papier", "cartouche", "enveloppe", "trousse", "feutres"],
        "en": ["notebook", "pen", "planner", "binder", "paper", "ink cartridge", "envelope"],
        "de": ["Heft", "Kugelschreiber", "Kalender", "Ordner", "Papier", "Patrone"],
    },
    2582: {
        "fr": ["salon de jardin", "parasol", "transat", "hamac", "banc", "bain de soleil", "pergola", "résine tressée"],
        "en": ["garden furniture", "parasol", "sun lounger", "hammock", "bench", "pergola"],
        "de": ["Gartenmöbel", "Sonnenschirm", "Liege", "Hängematte", "Bank", "Pergola"],
    },
    2583: {
        "fr": ["piscine", "pompe", "filtre", "spa", "chlore", "bâche", "robot piscine", "liner", "échelle", "skimmer"],
        "en": ["pool", "pump", "filter", "hot tub", "chlorine", "pool cover", "pool robot"],
        "de": ["Pool", "Pumpe", "Filter", "Whirlpool", "Chlor", "Abdeckung"],
    },
    2585: {
        "fr": ["perceuse", "visseuse", "scie", "outil", "tournevis", "ponceuse", "clé", "établi", "tuyau d'arrosage"],
        "en": ["drill", "screwdriver", "saw", "tool", "sander", "wrench", "garden hose"],
        "de": ["Bohrmaschine", "Schrauber", "Säge", "Werkzeug", "Schleifer", "Schlüssel"],
    },
    2705: {
        "fr": ["livre", "neuf", "broché", "relié", "essai", "guide", "méthode", "parution", "isbn"],
        "en": ["book", "new", "hardcover", "guide", "handbook", "essay"],
        "de": ["Buch", "neu", "gebunden", "Ratgeber", "Handbuch"],
    },
    2905: {
        "fr": ["jeu pc", "téléchargement", "code", "steam", "clé d'activation", "windows", "dlc", "version numérique"],
        "en": ["pc game", "download", "steam key", "activation code", "digital edition"],
        "de": ["PC-Spiel", "Download", "Aktivierungscode", "digitale Version"],
    },
}

# families of classes that share vocabulary (the real catalog's main confusions)
FAMILIES: list[dict] = [
    {
        "classes": [10, 2705, 2403, 2280],
        "fr": ["livre", "tome", "édition", "auteur", "histoire", "volume"],
        "en": ["book", "volume", "edition", "story"],
        "de": ["Buch", "Band", "Ausgabe", "Geschichte"],
    },
    {
        "classes": [40, 50, 60, 2462, 2905],
        "fr": ["jeu vidéo", "nintendo", "playstation", "xbox", "switch", "ps4", "jeu"],
        "en": ["video game", "nintendo", "playstation", "xbox", "switch", "game"],
        "de": ["Videospiel", "nintendo", "playstation", "xbox", "Spiel"],
    },
    {
        "classes": [1140, 1160, 1180, 1281, 1280, 1300, 1302],
        "fr": ["jeu", "jouet", "enfant", "figurines", "cartes", "collection", "cadeau"],
        "en": ["game", "toy", "kids", "figures", "cards", "gift"],
        "de": ["Spiel", "Spielzeug", "Kinder", "Figuren", "Karten", "Geschenk"],
    },
    {
        "classes": [1560, 2582, 2060, 1920, 2583, 2585],
        "fr": ["table", "chaise", "jardin", "coussin", "bois", "métal", "maison", "extérieur"],
        "en": ["table", "chair", "garden", "cushion", "wood", "metal", "home"],
        "de": ["Tisch", "Stuhl", "Garten", "Kissen", "Holz", "Metall"],
    },
    {
        "classes": [1301, 1320, 1280, 1920],
        "fr": ["bébé", "naissance", "enfant", "doux", "coton"],
        "en": ["baby", "newborn", "soft", "cotton"],
        "de": ["Baby", "weich", "Baumwolle"],
    },
    {
        "classes": [2522, 1940, 2220, 2060],
        "fr": ["lot", "pack", "accessoire", "qualité", "pratique"],
        "en": ["pack", "accessory", "quality", "handy"],
        "de": ["Set", "Zubehör", "Qualität", "praktisch"],
    },
]

BRANDS = [
    "Lego",
    "Playmobil",
    "Sony",
    "Hasbro",
    "Mattel",
    "Bosch",
    "Ikea",
    "Intex",
    "Bestway",
    "Hachette",
    "Gallimard",
    "Bandai",
    "Funko",
    "Nintendo",
    "Ravensburger",
    "Makita",
    "Clairefontaine",
    "Vtech",
    "Chicco",
    "Trixie",
    "Gifi",
    "Maisons du Monde",
    "Asmodee",
    "Syma",
    "Panini",
    "Glénat",
    "Ubisoft",
]

COLOURS = {
    "fr": ["noir", "blanc", "rouge", "bleu", "vert", "gris", "rose", "jaune"],
    "en": ["black", "white", "red", "blue", "green", "grey", "pink", "yellow"],
    "de": ["schwarz", "weiß", "rot", "blau", "grün", "grau", "rosa", "gelb"],
}

UNITS = ["cm", "mm", "m", "kg", "g", "ml", "L", "W", "V", "mAh", "Go", "pcs"]

# function-word phrases that make a title read as its language
TITLE_GLUE = {
    "fr": ["pour", "avec", "de", "et", "en", "le", "la", "les", "des", "nouveau", "lot de"],
    "en": ["for", "with", "the", "and", "of", "new", "set of", "brand new"],
    "de": ["für", "mit", "der", "die", "und", "das", "neu", "Set aus"],
}

DESCRIPTION_SENTENCES = {
    "fr": [
        "Ce produit est idéal pour {w1} et {w2}.",
        "Livraison rapide et soignée, {w1} en très bon état.",
        "Découvrez notre {w1}, parfait pour toute la famille.",
        "Fabriqué avec des matériaux de qualité, ce {w1} est conçu pour durer.",
        "Les dimensions sont indiquées à titre indicatif : {n} {u}.",
        "Caractéristiques : {w1}, {w2}, couleur {c}.",
        "Il s'agit d'un article {w1} très apprécié de nos clients.",
        "Contenu du colis : un {w1} et sa notice en français.",
        "Idéal comme cadeau, ce {w1} plaira à coup sûr.",
        "Garantie deux ans, satisfait ou remboursé.",
    ],
    "en": [
        "This product is perfect for {w1} and {w2}.",
        "Fast and careful shipping, {w1} in very good condition.",
        "Discover our {w1}, the ideal choice for the whole family.",
        "Made with high quality materials, this {w1} is built to last.",
        "Dimensions are approximate: {n} {u}.",
        "Features: {w1}, {w2}, colour {c}.",
        "Package includes one {w1} and the user manual.",
        "It is a great gift and our customers love it.",
    ],
    "de": [
        "Dieses Produkt ist ideal für {w1} und {w2}.",
        "Schneller und sorgfältiger Versand, {w1} in sehr gutem Zustand.",
        "Entdecken Sie unser {w1}, perfekt für die ganze Familie.",
        "Aus hochwertigen Materialien hergestellt, ist dieses {w1} sehr langlebig.",
        "Die Maße sind ungefähre Angaben: {n} {u}.",
        "Lieferumfang: ein {w1} und die Bedienungsanleitung.",
        "Es ist ein tolles Geschenk und unsere Kunden lieben es.",
    ],
}

# a few rows in other languages (the real catalog has 31); short generic product sentences
OTHER_LANGUAGE_TITLES = {
    "es": [
        "Juego de mesa para toda la familia con cartas y dados",
        "Muñeca de colección nueva con su caja original y accesorios",
        "Libro de cocina española con recetas tradicionales de la abuela",
        "Mesa de jardín plegable de madera para la terraza y el balcón",
    ],
    "it": [
        "Gioco da tavolo per tutta la famiglia con carte e dadi",
        "Bambola da collezione nuova con la sua scatola originale",
        "Libro di cucina italiana con le ricette tradizionali della nonna",
        "Tavolo da giardino pieghevole in legno per la terrazza",
    ],
}
OTHER_LANGUAGE_CLASSES = {
    "es": [1281, 1280, 2705, 2582],
    "it": [1281, 1280, 2705, 2582],
}

HTML_ENTITIES = {
    "é": "&eacute;",
    "è": "&egrave;",
    "à": "&agrave;",
    "ç": "&ccedil;",
    "ê": "&ecirc;",
    "ô": "&ocirc;",
    "'": "&#39;",
    "&": "&amp;",
    "ü": "&uuml;",
    "ö": "&ouml;",
    "ä": "&auml;",
}
