"""Regenerate the embedded demo corpora (written for llmdiet; not real translation data).

The sentences are built from small hand-written English/French/Korean templates so
that a tiny model can learn them in a couple of CPU minutes. They exist to exercise
the pipeline offline; scores on them say nothing about real translation quality.

Like real parallel text, the French side is not a function of the English side: an English subject or
adverbial has several correct French translations ("The teacher" -> "Le professeur", "La professeure" or
"L'enseignant"; "every morning" -> "chaque matin" or "tous les matins"), drawn at random per row with fixed
weights. No model can predict which one a reference uses, so even a perfect model scores well below BLEU
100 in-domain, and quantization and distillation deltas become measurable (since version 3 of the corpus).

Both corpora list the same 2,400 sentences ("meanings": subject, verb, object, adverbial) in one seeded order:
row i of ``demo_en_fr.jsonl`` and row i of ``demo_ko_en.jsonl`` share their English side. Each meaning has one
role, so no test or dev sentence occurs, in any language or direction, in training (version 4 of the corpus;
version 3 shuffled the two corpora independently, and 273 of 600 en-fr test sources were ko-en training targets):
[0, 1000) training (every direction), [1000, 1600) the en-fr test set, [1600, 1800) the fr-en test set,
[1800, 2000) the en-fr dev set (checkpoint, alpha and method selection), [2000, 2200) the ko-en test set
(of ``demo_ko_en.jsonl``), [2200, 2400) spare.

    python llmdiet/demo/data/make_demo_data.py   # rewrites the .jsonl files beside it
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# (english, french, number)
# A French side is a list of (translation, weight): one is drawn per row.
SUBJECTS = [
    ("The teacher", [("Le professeur", 0.6), ("La professeure", 0.25), ("L'enseignant", 0.15)], "sg"),
    ("My sister", [("Ma sœur", 1.0)], "sg"),
    ("Our neighbour", [("Notre voisin", 0.7), ("Notre voisine", 0.3)], "sg"),
    ("The journalist", [("Le journaliste", 0.7), ("La journaliste", 0.3)], "sg"),
    ("The children", [("Les enfants", 1.0)], "pl"),
    ("The students", [("Les étudiants", 0.7), ("Les étudiantes", 0.3)], "pl"),
    ("My parents", [("Mes parents", 1.0)], "pl"),
    ("The farmers", [("Les agriculteurs", 0.7), ("Les paysans", 0.3)], "pl"),
    ("The doctor", [("Le médecin", 0.75), ("La médecin", 0.25)], "sg"),
    ("My brother", [("Mon frère", 1.0)], "sg"),
]
# (en sg, en pl, fr sg, fr pl, [(object en, object fr), ...])
VERBS = [
    (
        "reads",
        "read",
        "lit",
        "lisent",
        [
            ("a book", "un livre"),
            ("the newspaper", "le journal"),
            ("a long letter", "une longue lettre"),
            ("the report", "le rapport"),
        ],
    ),
    (
        "writes",
        "write",
        "écrit",
        "écrivent",
        [
            ("a letter", "une lettre"),
            ("an article", "un article"),
            ("a short story", "une courte histoire"),
            ("the report", "le rapport"),
        ],
    ),
    (
        "buys",
        "buy",
        "achète",
        "achètent",
        [
            ("bread", "du pain"),
            ("fresh vegetables", "des légumes frais"),
            ("a new car", "une nouvelle voiture"),
            ("flowers", "des fleurs"),
        ],
    ),
    (
        "prepares",
        "prepare",
        "prépare",
        "préparent",
        [("dinner", "le dîner"), ("a cake", "un gâteau"), ("coffee", "du café"), ("the lesson", "la leçon")],
    ),
    (
        "sees",
        "see",
        "voit",
        "voient",
        [
            ("the sea", "la mer"),
            ("the mountains", "les montagnes"),
            ("a film", "un film"),
            ("the castle", "le château"),
        ],
    ),
    (
        "loves",
        "love",
        "aime",
        "aiment",
        [("music", "la musique"), ("the city", "la ville"), ("the cinema", "le cinéma"), ("summer", "l'été")],
    ),
]
ADVERBIALS = [
    ("", [("", 1.0)]),
    (" every morning", [(" chaque matin", 0.7), (" tous les matins", 0.3)]),
    (" in the evening", [(" le soir", 0.7), (" en soirée", 0.3)]),
    (" on Sundays", [(" le dimanche", 0.7), (" tous les dimanches", 0.3)]),
    (" at the market", [(" au marché", 1.0)]),
    (" in Paris", [(" à Paris", 1.0)]),
    (" today", [(" aujourd'hui", 1.0)]),
    (" at home", [(" à la maison", 0.7), (" chez nous", 0.3)]),
    (" tonight", [(" ce soir", 1.0)]),
    (" with friends", [(" avec des amis", 0.8), (" avec des copains", 0.2)]),
]

# Korean -> English: the same sentences as the English side of the En->Fr corpus (subject, adverbial,
# object, verb: Korean is subject-object-verb). Rows [0, 1000) teach the demo models Korean->English;
# rows [1000, 1200) are the held-out demo-ko-en set.
KO_SUBJECTS = {
    "The teacher": "선생님은",
    "My sister": "제 여동생은",
    "Our neighbour": "우리 이웃은",
    "The journalist": "기자는",
    "The children": "아이들은",
    "The students": "학생들은",
    "My parents": "제 부모님은",
    "The farmers": "농부들은",
    "The doctor": "의사는",
    "My brother": "제 남동생은",
}
KO_VERBS = {
    "reads": "읽습니다",
    "writes": "씁니다",
    "buys": "삽니다",
    "prepares": "준비합니다",
    "sees": "봅니다",
    "loves": "좋아합니다",
}
KO_OBJECTS = {
    "a book": "책을",
    "the newspaper": "신문을",
    "a long letter": "긴 편지를",
    "the report": "보고서를",
    "a letter": "편지를",
    "an article": "기사를",
    "a short story": "짧은 이야기를",
    "bread": "빵을",
    "fresh vegetables": "신선한 채소를",
    "a new car": "새 차를",
    "flowers": "꽃을",
    "dinner": "저녁 식사를",
    "a cake": "케이크를",
    "coffee": "커피를",
    "the lesson": "수업을",
    "the sea": "바다를",
    "the mountains": "산을",
    "a film": "영화를",
    "the castle": "성을",
    "music": "음악을",
    "the city": "도시를",
    "the cinema": "영화관을",
    "summer": "여름을",
}
KO_ADVERBIALS = {
    "": "",
    " every morning": "매일 아침 ",
    " in the evening": "저녁에 ",
    " on Sundays": "일요일마다 ",
    " at the market": "시장에서 ",
    " in Paris": "파리에서 ",
    " today": "오늘 ",
    " at home": "집에서 ",
    " tonight": "오늘 밤 ",
    " with friends": "친구들과 ",
}


def _draw(rng: random.Random, choices: list[tuple[str, float]]) -> str:
    return rng.choices([text for text, _ in choices], weights=[w for _, w in choices])[0]


def meanings() -> list[tuple]:
    """Every (subject, verb, object, adverbial) combination once, in one seeded order shared by both corpora."""
    out = [
        (subject, verb, obj, adverbial)
        for subject, verb, adverbial in itertools.product(SUBJECTS, VERBS, ADVERBIALS)
        for obj in verb[4]
    ]
    random.Random(0).shuffle(out)
    return out


def en_fr_pairs() -> list[dict]:
    """Row i of the English-French corpus; its English side is row i of the Korean-English corpus."""
    pairs, rng = [], random.Random(2)
    for (s_en, s_fr, num), (v_sg, v_pl, f_sg, f_pl, _), (o_en, o_fr), (a_en, a_fr) in meanings():
        verb_en, verb_fr = (v_sg, f_sg) if num == "sg" else (v_pl, f_pl)
        subject, adverbial = _draw(rng, s_fr), _draw(rng, a_fr)
        pairs.append({"en": f"{s_en} {verb_en} {o_en}{a_en}.", "fr": f"{subject} {verb_fr} {o_fr}{adverbial}."})
    return pairs


def ko_en_pairs() -> list[dict]:
    pairs = []
    for (s_en, _, num), (v_sg, v_pl, _, _, _), (o_en, _), (a_en, _) in meanings():
        verb_en = v_sg if num == "sg" else v_pl
        korean = f"{KO_SUBJECTS[s_en]} {KO_ADVERBIALS[a_en]}{KO_OBJECTS[o_en]} {KO_VERBS[v_sg]}."
        pairs.append({"ko": korean, "en": f"{s_en} {verb_en} {o_en}{a_en}."})
    return pairs


def most_frequent_variant(english: str) -> str:
    """The French a perfect model would write for ``english``: every subject and adverbial in its most
    frequent variant (the corpus's best achievable output; scored by ``oracle`` tests and docs)."""
    for (s_en, s_fr, num), (v_sg, v_pl, f_sg, f_pl, objects), (a_en, a_fr) in itertools.product(
        SUBJECTS, VERBS, ADVERBIALS
    ):
        verb_en, verb_fr = (v_sg, f_sg) if num == "sg" else (v_pl, f_pl)
        for o_en, o_fr in objects:
            if english == f"{s_en} {verb_en} {o_en}{a_en}.":
                best = lambda choices: max(choices, key=lambda c: c[1])[0]  # noqa: E731
                return f"{best(s_fr)} {verb_fr} {o_fr}{best(a_fr)}."
    raise KeyError(english)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write_jsonl(HERE / "demo_en_fr.jsonl", en_fr_pairs())
    write_jsonl(HERE / "demo_ko_en.jsonl", ko_en_pairs())
    print("wrote", HERE / "demo_en_fr.jsonl", "and", HERE / "demo_ko_en.jsonl")
