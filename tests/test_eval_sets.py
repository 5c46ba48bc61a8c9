"""Eval-set YAML files and local files: parsing, validation, rows, and clear errors."""

from __future__ import annotations

import json

import pytest

from llmdiet.config import ConfigError
from llmdiet.data import DataError, SkipReport
from llmdiet.demo import DEMO_EN_FR, DEMO_KO_EN
from llmdiet.evaluation.eval_sets import known_eval_sets, parse_eval_set_yaml, resolve_eval_set

SHIPPED = {"demo-en-fr", "demo-fr-en", "demo-ko-en", "pgv-en-fr", "pgv-fr-en", "opus100-ko-en"}


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_sets_are_declared_and_valid():
    known = known_eval_sets()
    assert SHIPPED <= set(known)
    for name in known:
        spec = parse_eval_set_yaml(known[name])
        assert spec.name == name and spec.version and spec.prefix.endswith(": ") and spec.direction
        assert (spec.file is None) != (spec.hub is None)


def test_offline_demo_sets_have_the_documented_rows():
    corpus, korean = lines(DEMO_EN_FR), lines(DEMO_KO_EN)
    en_fr = resolve_eval_set("demo-en-fr").load()
    assert len(en_fr) == 600 and [(r.source, r.target) for r in en_fr] == [
        (x["en"], x["fr"]) for x in corpus[1000:1600]
    ]
    fr_en = resolve_eval_set("demo-fr-en")
    rows = fr_en.load()
    assert fr_en.prefix == "translate French to English: "
    assert len(rows) == 200 and [(r.source, r.target) for r in rows] == [(x["fr"], x["en"]) for x in corpus[1600:1800]]
    dev = resolve_eval_set("demo-en-fr-dev")
    assert dev.role == "dev" and [(r.source, r.target) for r in dev.load()] == [
        (x["en"], x["fr"]) for x in corpus[1800:2000]
    ]
    ko_en = resolve_eval_set("demo-ko-en")
    assert ko_en.prefix == "translate Korean to English: " and ko_en.demo
    assert [(r.source, r.target) for r in ko_en.load()] == [(x["ko"], x["en"]) for x in korean[2000:2200]]


def test_hub_sets_are_pinned_and_fail_clearly_offline():
    pgv = resolve_eval_set("pgv-en-fr")
    assert pgv.hub == "Nicolas-BZRD/Parallel_Global_Voices_English_French"
    assert pgv.revision == "fddb328cad72d4e8eff6368bc2a8da9e86fd4c02" and (pgv.start, pgv.stop) == (10000, 12000)
    assert (pgv.source_column, pgv.reference_column, pgv.split) == ("en", "fr", "train")
    reverse = resolve_eval_set("pgv-fr-en")
    assert (reverse.source_column, reverse.reference_column) == ("fr", "en") and reverse.start == 10000
    korean = resolve_eval_set("opus100-ko-en")
    assert (korean.hub, korean.config, korean.split) == ("Helsinki-NLP/opus-100", "en-ko", "test")
    assert len(korean.revision) == 40 and korean.prefix == "translate Korean to English: "
    assert (
        pgv.fingerprint()
        == "Nicolas-BZRD/Parallel_Global_Voices_English_French@fddb328cad72d4e8eff6368bc2a8da9e86fd4c02"
    )
    with pytest.raises(DataError, match=r"needs the hub dataset .* Offline\? Use the offline sets \(demo-en-fr"):
        pgv.load()  # tests run with HF_DATASETS_OFFLINE=1


def test_unknown_name_lists_the_known_sets():
    with pytest.raises(
        ConfigError,
        match=r"unknown eval set 'pgv-en-de' \(known: demo-en-fr-dev, demo-en-fr, demo-fr-en-train, demo-fr-en, demo-ko-en-train, demo-ko-en",
    ):
        resolve_eval_set("pgv-en-de")


def write_yaml(tmp_path, name, text):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """version: 2
direction: en-fr
prefix: "translate English to French: "
source: {file: data.jsonl}
columns: {source: en, reference: fr}
rows: [1, 3]
"""


def test_yaml_set_with_relative_file_and_env_override(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"en": f"e{i}", "fr": f"f{i}"}) + "\n" for i in range(5)))
    write_yaml(tmp_path, "mini", GOOD)
    monkeypatch.setenv("LLMDIET_EVAL_SETS", str(tmp_path))
    assert list(known_eval_sets()) == ["mini"]
    spec = resolve_eval_set("mini")
    assert spec.version == "2" and spec.file == (tmp_path / "data.jsonl").resolve()
    assert [r.source for r in spec.load()] == ["e1", "e2"]
    assert spec.fingerprint().startswith("sha256:")
    # a YAML path works too, and an unknown name now lists the override's sets
    assert resolve_eval_set(str(tmp_path / "mini.yaml")).name == "mini"
    with pytest.raises(ConfigError, match=r"known: mini\)"):
        resolve_eval_set("demo-en-fr")


@pytest.mark.parametrize(
    "text, message",
    [
        (GOOD + "colour: red\n", r"unknown key\(s\) \['colour'\]"),
        (GOOD.replace("version: 2\n", ""), "missing required key 'version'"),
        (GOOD.replace("source: {file: data.jsonl}", "source: {file: data.jsonl, hub: a/b}"), "exactly one of 'file'"),
        (GOOD.replace("rows: [1, 3]", "rows: [3, 1]"), "'rows' must be"),
        (
            GOOD.replace("columns: {source: en, reference: fr}", "columns: {source: en}"),
            "columns: missing required key 'reference'",
        ),
        (GOOD.replace('prefix: "translate English to French: "', "prefix: 3"), "'prefix' must be str"),
        ("name: other\n" + GOOD, "'name' is 'other' but the file is named 'bad.yaml'"),
        ("version: [1\n", "invalid YAML"),
    ],
)
def test_bad_yaml_is_refused_naming_the_file(tmp_path, text, message):
    path = write_yaml(tmp_path, "bad", text)
    with pytest.raises(ConfigError, match=message) as err:
        parse_eval_set_yaml(path)
    assert str(path) in str(err.value)


def test_local_files_jsonl_csv_and_headerless_tsv(tmp_path):
    jsonl = tmp_path / "set.jsonl"
    jsonl.write_text(json.dumps({"source": "Hello.", "reference": "Bonjour."}) + "\n", encoding="utf-8")
    spec = resolve_eval_set(str(jsonl), prefix="translate English to German: ")
    assert spec.name == "set" and spec.prefix == "translate English to German: "
    assert [(r.source, r.target) for r in spec.load()] == [("Hello.", "Bonjour.")]
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text('id,en,fr\n1,"Yes, sir.","Oui, monsieur."\n', encoding="utf-8")
    rows = resolve_eval_set(str(csv_file), source_column="en", reference_column="fr").load()
    assert [(r.source, r.target) for r in rows] == [("Yes, sir.", "Oui, monsieur.")]
    tsv = tmp_path / "corpus.tsv"
    tsv.write_text("The cat.\tLe chat.\nA dog.\tUn chien.\n", encoding="utf-8")
    assert [r.target for r in resolve_eval_set(str(tsv), header=False).load()] == ["Le chat.", "Un chien."]
    with pytest.raises(DataError, match=r"corpus.tsv:1: the header row has columns \['The cat.', 'Le chat.'\]"):
        resolve_eval_set(str(tsv)).load()  # never guessed: a headerless file must be declared


def test_local_file_errors_name_the_file_line_and_field(tmp_path):
    missing_columns = tmp_path / "cols.jsonl"
    missing_columns.write_text(json.dumps({"en": "a", "fr": "b"}) + "\n")
    with pytest.raises(DataError, match=r"cols.jsonl:1: no field 'source'"):
        resolve_eval_set(str(missing_columns)).load()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty.jsonl: no usable rows \(file is empty\)"):
        resolve_eval_set(str(empty)).load()
    blank_source = tmp_path / "blank.jsonl"
    blank_source.write_text(
        json.dumps({"source": "ok", "reference": "ok"}) + "\n" + json.dumps({"source": "  ", "reference": "x"}) + "\n"
    )
    with pytest.raises(DataError, match=r"blank.jsonl:2: field 'source' is empty"):
        resolve_eval_set(str(blank_source)).load()
    report = SkipReport()
    assert len(resolve_eval_set(str(blank_source)).load(skip_bad_rows=True, report=report)) == 1
    assert report.total == 1 and report.reasons["empty"] == 1
    with pytest.raises(DataError, match="eval set file not found"):
        resolve_eval_set(str(tmp_path / "nope.jsonl"))
    (tmp_path / "data.txt").write_text("a\tb\n")
    with pytest.raises(DataError, match="unknown eval set file type '.txt'"):
        resolve_eval_set(str(tmp_path / "data.txt"))


def test_rows_beyond_the_file_are_an_error(tmp_path):
    (tmp_path / "data.jsonl").write_text(json.dumps({"en": "a", "fr": "b"}) + "\n")
    path = write_yaml(tmp_path, "short", GOOD)
    with pytest.raises(DataError, match=r"eval set 'short'.*asked for rows \[1, 3\) but only 1"):
        parse_eval_set_yaml(path).load()
