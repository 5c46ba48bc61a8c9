"""The study's data checks before any job runs: no training or dev row is a test row (by row range), and no
training, replay or dev sentence occurs in a test set (by content)."""

from __future__ import annotations

from dataclasses import replace

from llmdiet.config import ConfigError
from llmdiet.study.config import StudyConfig


def check_no_leaks(cfg: StudyConfig, datas: list) -> None:
    """Refuse, in one line, a study whose training or dev rows are test rows, or whose dev set is a test set."""
    from llmdiet.evaluation.eval_sets import named_test_sets, overlapping_sets, resolve_eval_set

    tests = [resolve_eval_set(s) for s in cfg.eval.sets]
    known = {(t.name, t.source_key(), t.start, t.stop) for t in tests}
    tests += [t for t in named_test_sets() if (t.name, t.source_key(), t.start, t.stop) not in known]
    problems = sorted({p for data in datas for p in data.leaks(tests)})
    if cfg.eval.dev:
        dev = resolve_eval_set(cfg.eval.dev)
        if cfg.eval.dev in cfg.eval.sets:
            problems.append(f"eval.dev {cfg.eval.dev} is also a test set")
        hits = overlapping_sets(dev.source_key(), dev.start, dev.stop, [t for t in tests if t.name != dev.name])
        if hits:
            problems.append(f"eval.dev {cfg.eval.dev} shares rows with {', '.join(hits)}")
    if problems:
        raise ConfigError(
            f"{cfg.path}: selection would use test rows: {'; '.join(problems)}. Give the students dev "
            "rows of their own (distill.eval_start / eval_rows) and a dev set disjoint from every test "
            "set (eval.dev)"
        )
    check_no_shared_sentences(cfg, datas, tests)


def check_no_shared_sentences(cfg: StudyConfig, datas: list, tests: list) -> None:
    """The content check (:mod:`llmdiet.evaluation.overlap`) at plan time, for what is read from local files: every
    student's training, replay and dev rows against the study's test sets and eval.dev, and eval.dev against the
    test sets. Hub data is checked by each training job when it starts (it needs the hub)."""
    from llmdiet.distill.replay import load_replay
    from llmdiet.distill.run import check_test_overlap, load_splits
    from llmdiet.evaluation.eval_sets import resolve_eval_set
    from llmdiet.evaluation.overlap import find_overlaps, held_out_texts

    local_tests = [t for t in tests if t.file is not None]
    dev = resolve_eval_set(cfg.eval.dev) if cfg.eval.dev else None
    if dev is not None and dev.file is not None:
        hits = find_overlaps(dev.load(), f"eval.dev {dev.name}", held_out_texts(local_tests, skip={dev.name}))
        if hits:
            raise ConfigError(f"{cfg.path}: {'; '.join(h.describe(len(dev.load())) for h in hits)}")
    held = local_tests + ([replace(dev, role="dev")] if dev is not None and dev.file is not None else [])
    seen = set()
    for data in datas:
        key = (
            data.source_key(),
            data.train_start,
            data.train_rows,
            data.dev_start,
            data.eval_rows,
            str(data.replay_set),
        )
        if not data.data_files or key in seen:
            continue
        seen.add(key)
        train, dev_rows, _ = load_splits(data)
        replay = load_replay(data.replay_set, data.replay_fraction, len(train), cfg.seed) if data.replay_set else []
        try:
            check_test_overlap(data, train, dev_rows, replay, sets=held)
        except ConfigError as err:
            raise ConfigError(f"{cfg.path}: distill data: {err}") from None
