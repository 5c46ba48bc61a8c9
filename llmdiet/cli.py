"""The ``llmdiet`` command: ``llmdiet <subcommand> [options]``; ``llmdiet <subcommand> --help`` for each."""

from __future__ import annotations

import importlib
import logging
import os
import sys

# subcommand -> (module with a ``main(argv)``, one-line help)
SUBCOMMANDS = {
    "distill": ("llmdiet.distill.job", "knowledge distillation of a teacher into a student (Seq2SeqTrainer)"),
    "eval": ("llmdiet.evaluation.harness", "score a model on eval sets: BLEU, chrF, ROUGE-L, timing, size, memory"),
    "compare": ("llmdiet.evaluation.compare", "side-by-side table and plots over eval run directories"),
    "quantize": ("llmdiet.quantize.job", "quantize a model (dynamic/static int8, ONNX Runtime, CTranslate2, GPU int8)"),
    "prune": ("llmdiet.prune.job", "prune a model (magnitude, Wanda, 2:4, width, depth, vocabulary trimming)"),
    "alpha-sweep": ("llmdiet.study.alpha_sweep", "distil once per alpha, evaluate every student, compare"),
    "bit-sweep": ("llmdiet.study.bit_sweep", "2-8-bit RTN vs GPFQ sweep of teacher and student weights"),
    "study": ("llmdiet.study.command", "the whole study from one YAML: jobs, statistics, figures, STUDY.md verdict"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean a user mistake: reported as one line, without a traceback."""
    from llmdiet.artifacts import BackendError
    from llmdiet.config import ConfigError
    from llmdiet.data import DataError
    from llmdiet.modeling import ModelLoadError

    return (BackendError, ConfigError, DataError, ModelLoadError)


def configure_logging(verbose: bool = False) -> None:
    """llmdiet's own progress at INFO; other libraries only at WARNING, and their Python warnings hidden.

    ``--verbose`` (or ``LLMDIET_LOG_LEVEL=INFO``/``DEBUG``) shows every library's INFO lines and warnings again
    (e.g. ONNX Runtime's quantizer logs ~75 INFO lines per model; torch/transformers tracer warnings).
    """
    import warnings

    level_name = os.environ.get("LLMDIET_LOG_LEVEL", "INFO" if verbose else "").upper()
    level = getattr(logging, level_name, None) if level_name else None
    logging.basicConfig(
        level=level or logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    logging.getLogger("llmdiet").setLevel(level or logging.INFO)
    if level is None or level > logging.INFO:
        warnings.filterwarnings("ignore", module=r"^(?!llmdiet)")
        for name in ("torchao", "torch.utils._pytree", "transformers", "optimum", "onnxruntime"):
            logging.getLogger(name).setLevel(logging.ERROR if name.startswith("torch") else logging.WARNING)
        # transformers reports tensor-parallel sharding plans on single-process loads (not sharded: nothing to do);
        # the logger is transformers.integrations.tensor_parallel on 4.57 and transformers.distributed on 5.x
        for name in ("transformers.distributed", "transformers.integrations.tensor_parallel"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # third-party progress bars ("Writing model shards", datasets' map/filter): llmdiet logs its own progress
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        for module, call in (
            ("transformers.utils.logging", "disable_progress_bar"),
            ("datasets", "disable_progress_bars"),
        ):
            if module.split(".")[0] in sys.modules:  # already imported (tests, the API): switch them off there too
                getattr(importlib.import_module(module), call)()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        from llmdiet import __version__

        print(f"llmdiet {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in SUBCOMMANDS:
        lines = [
            "usage: llmdiet <subcommand> [options]   (also: python -m llmdiet; llmdiet --version)",
            "",
            "subcommands:",
        ]
        lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
        print("\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown subcommand '{argv[0]}'", file=sys.stderr)
            return 2
        return 0
    verbose = "--verbose" in argv
    argv = [a for a in argv if a != "--verbose"]
    configure_logging(verbose)
    module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
    if verbose:  # the commands that print one progress line per step show their libraries' own output instead
        os.environ["LLMDIET_VERBOSE"] = "1"
    try:
        return module.main(argv[1:]) or 0
    except user_errors() as err:  # user mistakes: a clear message, no traceback
        if os.environ.get("RANK", "0") == "0":  # under accelerate launch: once, not once per process
            print(f"llmdiet {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"llmdiet {argv[0]}: interrupted; what was finished is kept (finished batches, checkpoints, jobs): "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except OSError as err:  # disk full, read-only directory, ...: one line, and how to resume
        print(f"llmdiet {argv[0]}: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # safetensors and other Rust-backed writers report a full disk in their own type
        if "No space left on device" not in str(err) and "os error 28" not in str(err):
            raise
        import errno

        print(
            f"llmdiet {argv[0]}: error: {os_error_line(OSError(errno.ENOSPC, 'No space left on device'))}",
            file=sys.stderr,
        )
        return 2
    finally:
        os.environ.pop("LLMDIET_VERBOSE", None)


def os_error_line(err: OSError) -> str:
    """One line for an operating-system error: what failed, where, and what to do."""
    import errno

    where = f"{err.filename}: " if getattr(err, "filename", None) else ""
    hint = {
        errno.ENOSPC: "the disk is full: free space (or choose an output directory on another disk), then run "
        "the same command again to resume; finished work is kept",
        errno.EROFS: "the file system is read-only: choose a writable output directory",
        errno.EACCES: "permission denied: choose a directory you can write to",
        errno.EDQUOT: "disk quota exceeded: free space, then run the same command again to resume",
    }.get(err.errno or 0, "run the same command again once this is fixed; finished work is kept")
    return f"{where}{err.strerror or err}; {hint}"


if __name__ == "__main__":
    sys.exit(main())
