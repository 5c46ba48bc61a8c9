"""Reading parallel files: every format, and every bad-input case names file, line and field."""

import json

import pytest

from llmdiet.data import DataError, SkipReport, read_parallel_file, take_rows, tokenize_rows
from llmdiet.demo import DEMO_EN_FR


def write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reads_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [("Hello.", "Bonjour."), ("The château is old.", "Le château est vieux.")]
    jsonl = write(
        tmp_path / "a.jsonl", "".join(json.dumps({"en": s, "fr": t}, ensure_ascii=False) + "\n" for s, t in rows)
    )
    nested = write(
        tmp_path / "n.jsonl", "".join(json.dumps({"translation": {"en": s, "fr": t}}) + "\n" for s, t in rows)
    )
    tsv = write(tmp_path / "a.tsv", "en\tfr\n" + "".join(f"{s}\t{t}\n" for s, t in rows))
    headerless = write(tmp_path / "h.tsv", "".join(f"{s}\t{t}\n" for s, t in rows))
    csv_path = write(tmp_path / "a.csv", "id,en,fr\n" + "".join(f'{i},"{s}","{t}"\n' for i, (s, t) in enumerate(rows)))
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"en": [s for s, _ in rows], "fr": [t for _, t in rows]}), parquet)
    for path in (jsonl, nested, tsv, csv_path, parquet):
        got = read_parallel_file(path, "en", "fr")
        assert [(r.source, r.target) for r in got] == rows, path
    got = read_parallel_file(headerless, "source", "reference", header=False)
    assert [(r.source, r.target) for r in got] == rows
    assert got[1].origin == f"{headerless}:2"


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_parallel_file(tmp_path / "nope.jsonl", "en", "fr")


def test_missing_column_names_line_and_columns(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"en": "Hi.", "french": "Salut."}\n')
    with pytest.raises(DataError, match=r"a.jsonl:1: no field 'fr' \(fields present: \['en', 'french'\]\)"):
        read_parallel_file(path, "en", "fr")
    csv_path = write(tmp_path / "b.csv", "english,fr\nHi.,Salut.\n")
    with pytest.raises(
        DataError, match=r"b.csv:1: the header row has columns \['english', 'fr'\], not the requested \['en'\]"
    ):
        read_parallel_file(csv_path, "en", "fr")


def test_tsv_row_with_wrong_number_of_fields(tmp_path):
    path = write(tmp_path / "a.tsv", "en\tfr\nHi.\tSalut.\nOne\tTwo\tThree\nOk.\tD'accord.\n")
    with pytest.raises(DataError, match="a.tsv:3: expected 2 TSV fields, found 3"):
        read_parallel_file(path, "en", "fr")
    report = SkipReport()
    rows = read_parallel_file(path, "en", "fr", skip_bad_rows=True, report=report)
    assert [r.source for r in rows] == ["Hi.", "Ok."]
    assert report.reasons == {"wrong_field_count": 1}


def test_invalid_utf8_names_the_line(tmp_path):
    path = write(tmp_path / "a.jsonl", b'{"en": "Hi.", "fr": "Salut."}\n{"en": "Bad \xff byte", "fr": "x"}\n')
    with pytest.raises(DataError, match="a.jsonl:2: invalid UTF-8"):
        read_parallel_file(path, "en", "fr")
    report = SkipReport()
    assert len(read_parallel_file(path, "en", "fr", skip_bad_rows=True, report=report)) == 1
    assert report.reasons == {"invalid_utf8": 1}


@pytest.mark.parametrize("source,target,field", [("", "Salut.", "en"), ("Hi.", "   ", "fr"), (None, "x", "en")])
def test_empty_or_whitespace_fields(tmp_path, source, target, field):
    path = write(
        tmp_path / "a.jsonl", '{"en": "Fine.", "fr": "Bien."}\n' + json.dumps({"en": source, "fr": target}) + "\n"
    )
    with pytest.raises(DataError, match=f"a.jsonl:2: field '{field}'"):
        read_parallel_file(path, "en", "fr")
    report = SkipReport()
    rows = read_parallel_file(path, "en", "fr", skip_bad_rows=True, report=report)
    assert len(rows) == 1 and report.total == 1


def test_empty_file_and_all_rows_bad(tmp_path):
    with pytest.raises(DataError, match="no usable rows"):
        read_parallel_file(write(tmp_path / "e.jsonl", ""), "en", "fr")
    path = write(tmp_path / "b.jsonl", '{"en": "", "fr": "x"}\n')
    with pytest.raises(DataError, match=r"no usable rows \(1 skipped"):
        read_parallel_file(path, "en", "fr", skip_bad_rows=True)


def test_split_asking_for_more_rows_than_exist():
    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")
    assert len(rows) == 2400
    with pytest.raises(DataError, match=r"asked for rows \[2000, 3000\) but only 2400 usable rows exist"):
        take_rows(rows, 2000, 1000, "demo (evaluation split)")
    assert [r.source for r in take_rows(rows, 10, 3, "x")] == [r.source for r in rows[10:13]]


def test_tokenize_counts_truncation(tiny_tokenizer):
    rows = read_parallel_file(DEMO_EN_FR, "en", "fr")[:20]
    ds, stats = tokenize_rows(rows, tiny_tokenizer, "translate English to French: ", 8, 64)
    assert stats.sources == 20 and stats.targets == 0  # every prefixed source is longer than 8 tokens
    assert max(len(x) for x in ds["input_ids"]) == 8
    assert all(x[-1] == tiny_tokenizer.eos_token_id for x in ds["labels"])


def test_hub_code_path_on_a_local_dataset_repo(tmp_path):
    """The default (hub) reader, pointed at a local folder laid out like the PGV dataset repo."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from llmdiet.data import read_hub_dataset

    (tmp_path / "data").mkdir()
    en = [f"Sentence number {i}." for i in range(30)]
    fr = [f"Phrase numéro {i}." for i in range(30)]
    fr[7] = " "
    pq.write_table(pa.table({"en": en, "fr": fr}), tmp_path / "data" / "train-00000-of-00001.parquet")
    rows = read_hub_dataset(str(tmp_path), "en", "fr", start=10, stop=20)
    assert [r.source for r in rows] == en[10:20] and rows[0].origin.endswith("[train]:row 10")
    with pytest.raises(DataError, match=r"row 7: field 'fr' is empty"):
        read_hub_dataset(str(tmp_path), "en", "fr", start=0, stop=10)
    with pytest.raises(DataError, match=r"has 30 rows; rows \[0, 40\) were asked for"):
        read_hub_dataset(str(tmp_path), "en", "fr", stop=40)
    with pytest.raises(DataError, match=r"no column\(s\) \['de'\]"):
        read_hub_dataset(str(tmp_path), "en", "de", stop=5)
    with pytest.raises(DataError, match="Offline\\?"):
        read_hub_dataset("no-such-user/no-such-dataset", "en", "fr", stop=5)


def test_artifact_size_ignores_checkpoints_and_eval_runs(tmp_path):
    from llmdiet.modeling import directory_bytes

    (tmp_path / "model.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_bytes(b"x" * 10)
    (tmp_path / "checkpoint-10").mkdir()
    (tmp_path / "checkpoint-10" / "model.safetensors").write_bytes(b"x" * 1000)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "eval_settings.json").write_bytes(b"x" * 1000)
    assert directory_bytes(tmp_path) == 110


def test_header_with_other_columns_is_never_read_as_data(tmp_path):
    """Before: a two-column TSV whose header named other columns was read as headerless (header = a pair)."""
    tsv = write(tmp_path / "a.tsv", "english\tfrench\nHello.\tBonjour.\n")
    with pytest.raises(DataError) as err:
        read_parallel_file(tsv, "source", "reference")
    msg = str(err.value)
    assert "a.tsv:1:" in msg and "['english', 'french']" in msg and "['source', 'reference']" in msg
    assert "--no_header" in msg and "\n" not in msg
    # declared headerless, the same file is two data rows (the "header" too, because the user said so)
    rows = read_parallel_file(tsv, "source", "reference", header=False)
    assert [(r.source, r.target) for r in rows] == [("english", "french"), ("Hello.", "Bonjour.")]
    csv_file = write(tmp_path / "a.csv", "english,french\nHello.,Bonjour.\n")
    with pytest.raises(DataError, match=r"a.csv:1: the header row has columns"):
        read_parallel_file(csv_file, "en", "fr")


def test_headerless_file_needs_two_columns(tmp_path):
    tsv = write(tmp_path / "h.tsv", "a\tb\nc\td\te\n")
    with pytest.raises(DataError, match="h.tsv:2: expected 2 TSV fields, found 3"):
        read_parallel_file(tsv, "source", "reference", header=False)


def test_csv_quoted_fields_with_embedded_newlines_commas_and_quotes(tmp_path):
    """Before: rejected line by line, and with --skip_bad_rows misaligned pairs were scored silently."""
    text = 'en,fr\n"Hello,\nworld.","Bonjour,\nle monde."\n"He said ""hi"".","Il a dit « salut »."\nPlain.,Simple.\n'
    path = write(tmp_path / "q.csv", text)
    rows = read_parallel_file(path, "en", "fr")
    assert [(r.source, r.target) for r in rows] == [
        ("Hello,\nworld.", "Bonjour,\nle monde."),
        ('He said "hi".', "Il a dit « salut »."),
        ("Plain.", "Simple."),
    ]
    assert [r.origin for r in rows] == [f"{path}:2-4", f"{path}:5", f"{path}:6"]  # both fields span lines
    report = SkipReport()
    assert len(read_parallel_file(path, "en", "fr", skip_bad_rows=True, report=report)) == 3 and report.total == 0


def test_csv_unterminated_quote_names_the_record_and_line(tmp_path):
    path = write(tmp_path / "bad.csv", 'en,fr\nOk.,Bien.\n"Open quote,Ouvert\nNext.,Suivant.\n')
    with pytest.raises(DataError, match=r"bad.csv:3: malformed CSV record"):
        read_parallel_file(path, "en", "fr")


def test_whitespace_only_tsv_rows_are_errors_or_counted_like_jsonl(tmp_path):
    """A TSV row empty or whitespace in both fields was dropped and not counted (skipped_rows.total 0); the same
    row in JSONL is an error. Now both: an error naming file:line and field, or counted with --skip_bad_rows;
    a truly blank line is no row in either."""
    from llmdiet.data import SkipReport

    path = write(tmp_path / "a.tsv", "en\tfr\nHi.\tSalut.\n  \t \n\nOk.\tD'accord.\n")
    with pytest.raises(DataError, match=r"a.tsv:3: field 'en' is empty or whitespace-only"):
        read_parallel_file(path, "en", "fr")
    report = SkipReport()
    rows = read_parallel_file(path, "en", "fr", skip_bad_rows=True, report=report)
    assert [r.source for r in rows] == ["Hi.", "Ok."] and report.total == 1
