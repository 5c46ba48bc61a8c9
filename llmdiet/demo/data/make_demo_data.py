"""Regenerate the embedded demo corpora (written for llmdiet; not real translation data).

The sentences are built from small hand-written English/French/Korean templates so
that a tiny model can learn them in a couple of CPU minutes. They exist to exercise
the pipeline offline; scores on them say nothing about real translation quality.

    python llmdiet/demo/data/make_demo_data.py   # rewrites the .jsonl files beside it
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

HERE = Path(__file__).parent

# (english, french, number)
SUBJECTS = [
    ("The teacher", "Le professeur", "sg"),
    ("My sister", "Ma sœur", "sg"),
    ("Our neighbour", "Notre voisin", "sg"),
    ("The journalist", "Le journaliste", "sg"),
    ("The children", "Les enfants", "pl"),
    ("The students", "Les étudiants", "pl"),
    ("My parents", "Mes parents", "pl"),
    ("The farmers", "Les agriculteurs", "pl"),
]
# (en sg, en pl, fr sg, fr pl, [(object en, object fr), ...])
VERBS = [
    ("reads", "read", "lit", "lisent",
     [("a book", "un livre"), ("the newspaper", "le journal"), ("a long letter", "une longue lettre"), ("the report", "le rapport")]),
    ("writes", "write", "écrit", "écrivent",
     [("a letter", "une lettre"), ("an article", "un article"), ("a short story", "une courte histoire"), ("the report", "le rapport")]),
    ("buys", "buy", "achète", "achètent",
     [("bread", "du pain"), ("fresh vegetables", "des légumes frais"), ("a new car", "une nouvelle voiture"), ("flowers", "des fleurs")]),
    ("prepares", "prepare", "prépare", "préparent",
     [("dinner", "le dîner"), ("a cake", "un gâteau"), ("coffee", "du café"), ("the lesson", "la leçon")]),
    ("sees", "see", "voit", "voient",
     [("the sea", "la mer"), ("the mountains", "les montagnes"), ("a film", "un film"), ("the castle", "le château")]),
    ("loves", "love", "aime", "aiment",
     [("music", "la musique"), ("the city", "la ville"), ("the cinema", "le cinéma"), ("summer", "l'été")]),
]
ADVERBIALS = [
    ("", ""),
    (" every morning", " chaque matin"),
    (" in the evening", " le soir"),
    (" on Sundays", " le dimanche"),
    (" at the market", " au marché"),
    (" in Paris", " à Paris"),
    (" today", " aujourd'hui"),
]

# Korean -> English (out-of-domain for a model trained on English -> French).
KO_SUBJECTS = [("선생님은", "The teacher", "sg"), ("제 여동생은", "My sister", "sg"),
               ("아이들은", "The children", "pl"), ("학생들은", "The students", "pl")]
KO_VERBS = [
    ("읽습니다", "reads", "read", [("책을", "a book"), ("신문을", "the newspaper")]),
    ("씁니다", "writes", "write", [("편지를", "a letter"), ("기사를", "an article")]),
    ("삽니다", "buys", "buy", [("빵을", "bread"), ("꽃을", "flowers")]),
    ("봅니다", "watches", "watch", [("영화를", "a film"), ("바다를", "the sea")]),
]
KO_ADVERBIALS = [("", ""), ("매일 아침 ", " every morning"), ("저녁에 ", " in the evening"), ("오늘 ", " today")]


def en_fr_pairs() -> list[dict]:
    pairs = []
    for (s_en, s_fr, num), (v_sg, v_pl, f_sg, f_pl, objects), (a_en, a_fr) in itertools.product(
        SUBJECTS, VERBS, ADVERBIALS
    ):
        for o_en, o_fr in objects:
            verb_en, verb_fr = (v_sg, f_sg) if num == "sg" else (v_pl, f_pl)
            pairs.append({"en": f"{s_en} {verb_en} {o_en}{a_en}.", "fr": f"{s_fr} {verb_fr} {o_fr}{a_fr}."})
    random.Random(0).shuffle(pairs)
    return pairs


def ko_en_pairs() -> list[dict]:
    pairs = []
    for (s_ko, s_en, num), (v_ko, v_sg, v_pl, objects), (a_ko, a_en) in itertools.product(
        KO_SUBJECTS, KO_VERBS, KO_ADVERBIALS
    ):
        for o_ko, o_en in objects:
            verb_en = v_sg if num == "sg" else v_pl
            pairs.append({"ko": f"{s_ko} {a_ko}{o_ko} {v_ko}.", "en": f"{s_en} {verb_en} {o_en}{a_en}."})
    random.Random(0).shuffle(pairs)
    return pairs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write_jsonl(HERE / "demo_en_fr.jsonl", en_fr_pairs())
    write_jsonl(HERE / "demo_ko_en.jsonl", ko_en_pairs())
    print("wrote", HERE / "demo_en_fr.jsonl", "and", HERE / "demo_ko_en.jsonl")
