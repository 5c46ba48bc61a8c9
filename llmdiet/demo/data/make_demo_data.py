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

# Korean -> English: the same sentences as the English side of the En->Fr corpus (subject, adverbial,
# object, verb: Korean is subject-object-verb). Rows [0, 1000) teach the demo models Korean->English;
# rows [1000, 1200) are the held-out demo-ko-en set.
KO_SUBJECTS = {"The teacher": "선생님은", "My sister": "제 여동생은", "Our neighbour": "우리 이웃은",
               "The journalist": "기자는", "The children": "아이들은", "The students": "학생들은",
               "My parents": "제 부모님은", "The farmers": "농부들은"}
KO_VERBS = {"reads": "읽습니다", "writes": "씁니다", "buys": "삽니다", "prepares": "준비합니다", "sees": "봅니다",
            "loves": "좋아합니다"}
KO_OBJECTS = {"a book": "책을", "the newspaper": "신문을", "a long letter": "긴 편지를", "the report": "보고서를",
              "a letter": "편지를", "an article": "기사를", "a short story": "짧은 이야기를", "bread": "빵을",
              "fresh vegetables": "신선한 채소를", "a new car": "새 차를", "flowers": "꽃을", "dinner": "저녁 식사를",
              "a cake": "케이크를", "coffee": "커피를", "the lesson": "수업을", "the sea": "바다를",
              "the mountains": "산을", "a film": "영화를", "the castle": "성을", "music": "음악을",
              "the city": "도시를", "the cinema": "영화관을", "summer": "여름을"}
KO_ADVERBIALS = {"": "", " every morning": "매일 아침 ", " in the evening": "저녁에 ", " on Sundays": "일요일마다 ",
                 " at the market": "시장에서 ", " in Paris": "파리에서 ", " today": "오늘 "}


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
    for (s_en, _, num), (v_sg, v_pl, _, _, objects), (a_en, _) in itertools.product(SUBJECTS, VERBS, ADVERBIALS):
        for o_en, _ in objects:
            verb_en = v_sg if num == "sg" else v_pl
            korean = f"{KO_SUBJECTS[s_en]} {KO_ADVERBIALS[a_en]}{KO_OBJECTS[o_en]} {KO_VERBS[v_sg]}."
            pairs.append({"ko": korean, "en": f"{s_en} {verb_en} {o_en}{a_en}."})
    random.Random(1).shuffle(pairs)
    return pairs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    write_jsonl(HERE / "demo_en_fr.jsonl", en_fr_pairs())
    write_jsonl(HERE / "demo_ko_en.jsonl", ko_en_pairs())
    print("wrote", HERE / "demo_en_fr.jsonl", "and", HERE / "demo_ko_en.jsonl")
