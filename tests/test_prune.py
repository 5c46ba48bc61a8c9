"""llmdiet prune (issue 30): every method's exactness claims on the demo teacher, and each family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmdiet import cli
from llmdiet.config import ConfigError
from llmdiet.data import read_parallel_file
from llmdiet.demo import DEMO_EN_FR
from llmdiet.prune.job import PruneArguments, prune

SOURCES = [
    "translate English to French: The children read a book.",
    "translate English to French: My sister walks to the market in the morning.",
    "translate English to French: We eat bread and cheese.",
    "translate English to French: The old man opens the window.",
]


def run(tmp_path, method: str, name: str | None = None, model=None, **options) -> dict:
    args = PruneArguments(
        model=str(model) if model else "llmdiet-demo:teacher",
        method=method,
        output_dir=str(tmp_path / (name or method.replace(":", "-"))),
        calibration_file=str(DEMO_EN_FR),
        max_calibration_samples=32,
        **options,
    )
    return prune(args)


def greedy(path, sources=SOURCES, max_new_tokens=24) -> list[list[int]]:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(path).eval()  # plain transformers, as a user loads it
    tok = AutoTokenizer.from_pretrained(path)
    batch = tok(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    return [tok.decode(row, skip_special_tokens=True) for row in ids]


@pytest.fixture(scope="module")
def teacher_outputs(demo_assets):
    return greedy(demo_assets.teacher)


def test_magnitude_50_percent_is_50_percent_zeros_in_every_matrix(tmp_path):
    report = run(tmp_path, "magnitude", sparsity=0.5)
    assert abs(report["sparsity"]["overall"] - 0.5) <= 0.005
    assert all(abs(s - 0.5) <= 0.005 for s in report["sparsity"]["per_layer"].values())
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "magnitude" / "model.safetensors"))
    q = weights["encoder.block.0.layer.0.SelfAttention.q.weight"]
    assert abs(float((q == 0).float().mean()) - 0.5) <= 0.005  # the zeros are in the saved file
    assert weights["shared.weight"].count_nonzero() == weights["shared.weight"].numel()  # embeddings stay dense


def test_sparse_file_loads_back_exactly_and_is_smaller(tmp_path):
    from safetensors.torch import load_file

    from llmdiet.prune.sparse_format import load_sparse

    report = run(tmp_path, "magnitude", sparsity=0.5)
    dense = load_file(str(tmp_path / "magnitude" / "model.safetensors"))
    back = load_sparse(tmp_path / "magnitude")
    assert set(back) >= set(dense) - {"lm_head.weight"} and all(
        torch.equal(back[k], v) for k, v in dense.items() if k in back
    )
    assert report["sparse_bytes"] < report["dense_bytes"]
    # 1 bit of mask + half the values: the prunable matrices take 1/32 + 1/2 of their dense bytes
    prunable = report["sparsity"]["weights"] * 4
    assert report["dense_bytes"] - report["sparse_bytes"] == pytest.approx(prunable * (0.5 - 1 / 32), rel=0.02)


def test_wanda_zeros_each_rows_lowest_activation_weighted_scores(tmp_path, demo_assets):
    report = run(tmp_path, "wanda", sparsity=0.5)
    assert abs(report["sparsity"]["overall"] - 0.5) <= 0.005
    from safetensors.torch import load_file

    wanda = load_file(str(tmp_path / "wanda" / "model.safetensors"))
    magnitude = run(tmp_path, "magnitude", sparsity=0.5) and load_file(
        str(tmp_path / "magnitude" / "model.safetensors")
    )
    w = wanda["decoder.block.1.layer.2.DenseReluDense.wo.weight"]
    assert all(int((row == 0).sum()) == w.shape[1] // 2 for row in w)  # per output row, exactly half
    assert not torch.equal(w == 0, magnitude["decoder.block.1.layer.2.DenseReluDense.wo.weight"] == 0)


@pytest.mark.parametrize("method,group", [("2:4", 4), ("4:8", 8)])
def test_n_m_keeps_n_of_every_m_consecutive_weights(tmp_path, method, group):
    report = run(tmp_path, method)
    assert report["sparsity"]["overall"] == pytest.approx(0.5, abs=1e-9)
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / method.replace(":", "-") / "model.safetensors"))[
        "encoder.block.2.layer.1.DenseReluDense.wi_0.weight"
    ]
    nonzero = (w != 0).reshape(w.shape[0], -1, group).sum(-1)
    assert int(nonzero.max()) <= group // 2


def test_width_and_depth_at_zero_give_the_same_outputs(tmp_path, demo_assets, teacher_outputs):
    run(tmp_path, "width", ffn_sparsity=0.0, head_sparsity=0.0)
    run(tmp_path, "depth", depth_sparsity=0.0)
    from safetensors.torch import load_file

    original = load_file(str(demo_assets.teacher / "model.safetensors"))
    for name in ("width", "depth"):
        pruned = load_file(str(tmp_path / name / "model.safetensors"))
        assert all(torch.equal(pruned[k], v) for k, v in original.items() if k in pruned)
        assert greedy(tmp_path / name) == teacher_outputs


def test_width_gives_a_smaller_dense_t5_that_plain_transformers_loads(tmp_path, demo_assets):
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    report = run(tmp_path, "width", ffn_sparsity=0.5, head_sparsity=0.25)
    config = AutoConfig.from_pretrained(tmp_path / "width")
    base = AutoConfig.from_pretrained(demo_assets.teacher)
    assert (config.d_ff, config.num_heads) == (base.d_ff // 2, base.num_heads - base.num_heads // 4)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "width")
    assert sum(p.numel() for p in model.parameters()) == report["parameters"][1] < report["parameters"][0]
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight
    assert bias.shape[1] == config.num_heads
    assert len(greedy(tmp_path / "width")) == len(SOURCES)


def test_without_a_calibration_file_the_hub_datasets_first_rows_calibrate(tmp_path, monkeypatch):
    """As llmdiet quantize: --calibration_dataset's first rows (the hub read is replaced by the demo rows here),
    giving the same pruned model as the same rows from a file."""
    import llmdiet.prune.calibration as calibration

    asked = {}

    def fake_hub(name, source_column, target_column, *, split, stop):
        asked.update(name=name, split=split, stop=stop, columns=(source_column, target_column))
        return read_parallel_file(DEMO_EN_FR, source_column, target_column)[:stop]

    monkeypatch.setattr(calibration, "read_hub_dataset", fake_hub)
    args = PruneArguments(
        model="llmdiet-demo:teacher", method="width", ffn_sparsity=0.5, output_dir=str(tmp_path / "hub"),
        calibration_dataset="someone/parallel", calibration_split="train", max_calibration_samples=32,
    )  # fmt: skip
    report = prune(args)
    assert asked == {"name": "someone/parallel", "split": "train", "stop": 32, "columns": ("en", "fr")}
    assert report["calibration"]["file"] == "someone/parallel[train]"
    run(tmp_path, "width", name="file", ffn_sparsity=0.5)
    from safetensors.torch import load_file

    hub, file = load_file(tmp_path / "hub" / "model.safetensors"), load_file(tmp_path / "file" / "model.safetensors")
    assert hub.keys() == file.keys() and all(torch.equal(hub[k], file[k]) for k in hub)


def test_depth_drops_the_least_influential_blocks_but_never_block_0(tmp_path):
    from transformers import AutoConfig

    report = run(tmp_path, "depth", depth_sparsity=0.34)
    config = AutoConfig.from_pretrained(tmp_path / "depth")
    assert (config.num_layers, config.num_decoder_layers) == (2, 2)
    for stack in ("encoder", "decoder"):
        kept, scores = report["kept_blocks"][stack], report["block_influence"][stack]
        dropped = [i for i in range(len(scores)) if i not in kept]
        assert 0 in kept and len(dropped) == 1 and scores[dropped[0]] == min(scores[1:])


def test_vocab_trimming_keeps_outputs_on_the_corpus(tmp_path, demo_assets, teacher_outputs):
    from transformers import AutoTokenizer

    report = run(tmp_path, "vocab", vocab_file=[str(DEMO_EN_FR)])
    old_size, new_size = report["vocab_size"]
    assert new_size < old_size
    assert greedy(tmp_path / "vocab") == teacher_outputs
    old, new = AutoTokenizer.from_pretrained(demo_assets.tokenizer), AutoTokenizer.from_pretrained(tmp_path / "vocab")
    texts = [r.target for r in read_parallel_file(DEMO_EN_FR, "en", "fr")[:300]]
    for text in texts:  # the same pieces on the corpus (BPE: the merges that build them still fire)
        assert new.convert_ids_to_tokens(new(text)["input_ids"]) == old.convert_ids_to_tokens(old(text)["input_ids"])


@pytest.fixture(scope="module")
def tiny_families(tmp_path_factory):
    from llmdiet.demo.families import build_family_pair

    root = tmp_path_factory.mktemp("prune-families")
    return {family: build_family_pair(family, root / family, teacher_steps=30) for family in ("mt5", "marian")}


def test_vocab_trimming_on_mt5_unigram(tmp_path, tiny_families):
    teacher = tiny_families["mt5"]["teacher"]
    sources = [r.source for r in read_parallel_file(DEMO_EN_FR, "en", "fr")[:8]]
    before = greedy(teacher, sources, max_new_tokens=12)
    report = run(tmp_path, "vocab", model=teacher, vocab_file=[str(DEMO_EN_FR)], source_prefix="")
    assert report["vocab_size"][1] < report["vocab_size"][0]
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    # the kept pieces, in the original's ids (the trimmed vocabulary keeps their order)
    trimmed_tok, original_tok = (
        AutoTokenizer.from_pretrained(tmp_path / "vocab"),
        AutoTokenizer.from_pretrained(teacher),
    )
    pieces = trimmed_tok.convert_ids_to_tokens(list(range(report["vocab_size"][1])))
    kept = original_tok.convert_tokens_to_ids(pieces)
    assert kept == sorted(kept) and len(set(kept)) == len(kept)
    # teacher-forced: the trimmed model's logits are the original's logits at the kept ids, on every sentence
    original = AutoModelForSeq2SeqLM.from_pretrained(teacher).eval()
    trimmed = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "vocab").eval()
    targets = [r.target for r in read_parallel_file(DEMO_EN_FR, "en", "fr")[:8]]
    with torch.no_grad():
        a = original(**original_tok(sources, text_target=targets, return_tensors="pt", padding=True)).logits
        b = trimmed(**trimmed_tok(sources, text_target=targets, return_tensors="pt", padding=True)).logits
    torch.testing.assert_close(b, a[..., kept], rtol=1e-5, atol=1e-5)
    # greedy outputs are identical wherever the original's output stays inside the kept vocabulary (a weak tiny
    # teacher, trained per CPU, may emit a piece the corpus never uses: that sentence cannot be kept identical)
    after = greedy(tmp_path / "vocab", sources, max_new_tokens=12)
    with torch.no_grad():
        batch = original_tok(sources, return_tensors="pt", padding=True)
        ids = original.generate(**batch, max_new_tokens=12, do_sample=False, num_beams=1).tolist()
    inside = [i for i, row in enumerate(ids) if set(row) <= set(kept)]
    assert len(inside) >= 4, f"only {len(inside)} of 8 outputs inside the kept vocabulary"
    assert [after[i] for i in inside] == [before[i] for i in inside]


def test_every_family_is_pruned_or_refused_in_one_line(tmp_path, tiny_families, capsys):
    marian = tiny_families["marian"]["teacher"]
    report = run(tmp_path, "magnitude", model=marian, sparsity=0.5, source_prefix="")
    assert abs(report["sparsity"]["overall"] - 0.5) <= 0.005
    capsys.readouterr()
    rc = cli.main(["prune", "--model", str(marian), "--method", "width", "--output_dir", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--method width does not handle marian models" in err


def test_bad_input_is_one_line(tmp_path, capsys):
    rc = cli.main(["prune", "--preset", "demo", "--method", "magnitude", "--sparsity", "1"])
    assert rc == 2 and "--sparsity must be < 1.0" in capsys.readouterr().err
    with pytest.raises(
        ConfigError, match="--method wanda reads activations and --calibration_dataset .*: give --calib"
    ):
        prune(PruneArguments(model="llmdiet-demo:teacher", method="wanda", output_dir=str(tmp_path / "x")))
    assert not (tmp_path / "x").exists()
    with pytest.raises(ConfigError, match="--method vocab needs --vocab_file"):
        run(tmp_path, "vocab")


def test_cli_writes_report_and_card(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["prune", "--preset", "demo", "--method", "width", "--ffn_sparsity", "0.5", "--output_dir", str(out)]
    assert cli.main(argv) == 0
    report = json.loads((out / "llmdiet_prune.json").read_text())
    assert report["method"] == "width" and report["d_ff"][1] == report["d_ff"][0] // 2
    assert "AutoModelForSeq2SeqLM.from_pretrained" in (out / "README.md").read_text()
    assert cli.main(argv) == 2 and "--overwrite_output_dir" in capsys.readouterr().err


def test_the_study_prunes_recovers_judges_and_quantizes_pruned_models(demo_assets, tmp_path):
    """The prune: section: pruned teachers as pruned and recovered by distillation join the verdict, the answer and
    prune-then-quantize; the vocabulary-trimmed model is refused a recovery it cannot have."""
    import yaml
    from test_study import tiny_config, write_config

    from llmdiet.study.config import load_study_config
    from llmdiet.study.plan import build_plan
    from llmdiet.study.report import collect

    config = tiny_config(
        demo_assets,
        tmp_path / "run",
        alphas=[0.5],
        quantize={"methods": ["dynamic-int8"], "students": ["width-50+distill"], "calibration_count": 8},
        bit_sweep={"models": []},
    )
    config["eval"].pop("draft", None)
    config["prune"] = {
        "variants": {
            "width-50": {"method": "width", "ffn_sparsity": 0.5},
            "magnitude-50": {"method": "magnitude", "sparsity": 0.5, "recover": ["none"]},
            "vocab": {"method": "vocab", "recover": ["none"]},
        }
    }
    path = write_config(tmp_path / "study.yaml", config)
    assert cli.main(["study", "--config", str(path)]) == 0
    plan = build_plan(load_study_config(path))
    assert {"prune/width-50", "recover/width-50+distill", "quantize/width-50+distill+dynamic-int8"} <= set(plan.jobs)
    data = collect(plan)
    labels = {label: m for label, m in data["models"].items()}
    for label in ("width-50", "width-50+distill", "magnitude-50", "vocab", "width-50+distill+dynamic-int8"):
        assert label in data["decisions"]["teacher"]["models"], label  # in the Holm family of the verdict
    assert labels["width-50"]["parameters"] < labels["teacher"]["parameters"]
    assert labels["width-50+distill"]["prune"]["recover"] == "distill"
    log = json.loads((tmp_path / "run" / "students" / "width-50+distill" / "training_log.json").read_text())
    assert log["pruned_from"]["method"] == "width"  # the lineage of the recovered student
    study_md = (tmp_path / "run" / "STUDY.md").read_text()
    assert "**Prune** (pruned models, as pruned and recovered)" in study_md and "**Prune, then quantize**" in study_md
    config["prune"]["variants"]["vocab"]["recover"] = ["distill"]
    bad = write_config(tmp_path / "bad.yaml", config)
    with pytest.raises(ConfigError, match="vocab.*cannot recover it; use recover: \\[none\\]"):
        load_study_config(bad)
    assert yaml.safe_load(path.read_text())["prune"]  # the config the study ran


def test_the_study_refuses_vocab_trimming_without_local_training_rows(tmp_path):
    """The reference config reads its rows from the hub: a vocab variant is refused at plan time (no file whose
    tokens it could keep), while width pruning plans with the hub dataset as its calibration rows."""
    from llmdiet.study.config import load_study_config
    from llmdiet.study.plan import build_plan

    reference = (Path(__file__).parents[1] / "recipes" / "configs" / "reference.yaml").read_text()
    path = tmp_path / "reference.yaml"
    path.write_text(reference.replace("# vocab: {method: vocab", "vocab: {method: vocab"))
    with pytest.raises(ConfigError, match=r"vocab\) keeps the tokens of local training rows; set distill.data_files"):
        build_plan(load_study_config(path))
    path.write_text(reference)
    plan = build_plan(load_study_config(path))
    calibration = plan.jobs["prune/width-50"].params["calibration"]
    assert calibration["file"] is None and calibration["dataset"][1] == "train"
