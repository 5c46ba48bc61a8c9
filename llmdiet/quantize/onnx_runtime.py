"""ONNX Runtime methods: ``onnx-fp32`` (export only), ``onnx-dynamic-int8`` and ``onnx-static-int8``.

Export goes through optimum: ``ORTModelForSeq2SeqLM.from_pretrained(path, export=True, use_cache=True,
use_merged=False)`` gives three graphs, ``encoder_model.onnx``, ``decoder_model.onnx`` (first step)
and ``decoder_with_past_model.onnx`` (later steps, with the KV cache). Each is quantized on its own (an ``If``
node would block static quantization), then the two decoders are merged into ``decoder_model_merged.onnx``
with optimum's ``merge_decoders``, which stores each initializer the two graphs share (every weight: the
int8 codes and scales of a weight do not depend on which graph holds it) once. The artifact ships the encoder
and the merged decoder; before, the decoder weights were stored and loaded twice (the onnx-fp32 export of
flan-T5-small was 1.93x the PyTorch checkpoint). The backend runs the merged graph (``use_merged=True``);
artifacts written before the merge still load with their unmerged pair.

Each graph is quantized separately with ``ORTQuantizer`` and an ``AutoQuantizationConfig`` for the
CPU's instruction set (AVX-512 VNNI where present, else AVX-512, AVX2 or ARM64; recorded in the
artifact), per-channel int8 weights by default:

* dynamic: int8 weights, activations quantized per batch at run time (``IntegerOps``);
* static: int8 weights and activations with fixed ranges (QDQ format). The ranges come from MinMax
  calibration on *real* inputs of each graph, recorded while the fp32 export translates the
  calibration sources with greedy ``generate``. decoder-with-past feeds (one per example and step)
  are reservoir-sampled down to ``max_step_samples`` so memory stays bounded for large models.
  Only weight-bearing nodes are quantized: ``MatMul`` with a constant weight (the Linear layers)
  and ``Gather`` on a constant table (embeddings, relative-attention bias). optimum's default
  static op list also quantizes the activation-by-activation attention MatMuls, Where, Reshape,
  Transpose, ...: on the demo teacher that gave 98.6% teacher-forced argmax agreement with fp32 and
  a largest logit error of 0.44 x max|logit|, against 99.8% and 0.23 with weight-bearing nodes only.
  Static int8 for seq2seq is not officially supported upstream; the tests check it runs and stays close.

  **T5-safe by default**: the feed-forward output projections (``DenseReluDense/wo``) stay in float32. Their
  inputs are the gated-GELU activations, which in real flan-T5 checkpoints reach magnitudes no fixed int8
  range covers (transformers keeps ``wo`` in fp32 for the same overflow in fp16); random-init weights and the
  demo models cannot show the failure, so it is excluded by recipe, not by measurement. ``--static_keep_float
  none`` quantizes them too (the earlier recipe; faster, at the risk of degenerate output on real weights, which
  ``llmdiet eval`` flags).
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from pathlib import Path

from llmdiet.artifacts import BackendError
from llmdiet.compat import T5_TYPES

logger = logging.getLogger(__name__)

ENCODER = "encoder_model.onnx"
DECODER = "decoder_model.onnx"
DECODER_WITH_PAST = "decoder_with_past_model.onnx"
ONNX_FILES = (ENCODER, DECODER, DECODER_WITH_PAST)  # what the export writes and the quantizer reads
DECODER_MERGED = "decoder_model_merged.onnx"
ARTIFACT_ONNX_FILES = (ENCODER, DECODER_MERGED)  # what an artifact ships
EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf caps a single .onnx file at 2 GB


ISA_TARGETS = ("avx512_vnni", "avx512", "avx2", "arm64")


def cpu_instruction_set() -> str:
    """The best optimum ``AutoQuantizationConfig`` target for this CPU: avx512_vnni, avx512, avx2 or arm64.

    ``LLMDIET_ONNX_ISA`` overrides the detection (e.g. to build an AVX2 artifact on an AVX-512 machine).
    The choice changes the weight type: optimum's avx2 config stores UINT8 weights, the others INT8;
    the artifact records both (``instruction_set``, ``weight_type``).
    """
    import os
    import platform

    override = os.environ.get("LLMDIET_ONNX_ISA")
    if override:
        if override not in ISA_TARGETS:
            raise BackendError(f"LLMDIET_ONNX_ISA={override!r}: use one of {', '.join(ISA_TARGETS)}")
        return override
    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if "avx512_vnni" in flags:
        return "avx512_vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def quantization_config(static: bool, per_channel: bool, target: str | None = None):
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    target = target or cpu_instruction_set()
    factory = getattr(AutoQuantizationConfig, target, None)
    if factory is None:
        raise BackendError(f"the installed optimum has no AutoQuantizationConfig.{target}")
    return factory(is_static=static, per_channel=per_channel), target


T5_KEEP_FLOAT = {"wo": "/DenseReluDense/wo/"}  # --static_keep_float name -> ONNX node-name fragment


def weight_nodes(onnx_path: str | Path, keep_float: tuple[str, ...] = ()) -> list[str]:
    """Names of the nodes that hold weights: MatMul with a constant B, Gather on a constant table; minus the nodes
    whose name contains a fragment of ``keep_float`` (see :data:`T5_KEEP_FLOAT`), which stay float32."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    constants = {init.name for init in graph.initializer}
    fragments = [T5_KEEP_FLOAT[name] for name in keep_float]
    return [
        node.name
        for node in graph.node
        if (
            (node.op_type == "MatMul" and node.input[1] in constants)
            or (node.op_type == "Gather" and node.input[0] in constants)
        )
        and not any(f in node.name for f in fragments)
    ]


def merge_decoder_graphs(directory: str | Path) -> dict:
    """Merge ``decoder_model.onnx`` and ``decoder_with_past_model.onnx`` in ``directory`` into ``decoder_model_merged.onnx``
    (shared initializers stored once) and delete the two; returns the sizes before and after."""
    from optimum.onnx.graph_transformations import merge_decoders

    directory = Path(directory)
    before = sum(
        f.stat().st_size
        for f in directory.iterdir()
        if f.name.startswith(DECODER) or f.name.startswith(DECODER_WITH_PAST)
    )  # with external data files
    try:
        merge_decoders(
            directory / DECODER, directory / DECODER_WITH_PAST, save_path=directory / DECODER_MERGED, strict=False
        )
    except Exception as err:  # optimum raises plain ValueErrors/RuntimeErrors from onnx checks
        raise BackendError(f"{directory}: merging the decoder graphs failed: {str(err).splitlines()[0]}") from None
    for name in (DECODER, DECODER_WITH_PAST):
        # the graph and its external-data files (``<name>_data`` from the export, ``<name>.data`` from the quantizer);
        # the merged graph holds the weights itself or, over 2 GB, in its own decoder_model_merged.onnx_data
        for leftover in directory.glob(f"{name}*"):
            leftover.unlink()
    after = sum(f.stat().st_size for f in directory.iterdir() if f.name.startswith(DECODER_MERGED))
    return {"unmerged_decoder_bytes": before, "merged_decoder_bytes": after}


def export_onnx(model_path: str, out: str | Path) -> Path:
    """Export ``model_path`` to the three unmerged ONNX graphs in ``out`` (plus config files)."""
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    try:
        model = ORTModelForSeq2SeqLM.from_pretrained(model_path, export=True, use_cache=True, use_merged=False)
    except (OSError, ValueError, KeyError) as err:
        raise BackendError(f"ONNX export of '{model_path}' failed: {str(err).splitlines()[0]}") from None
    model.save_pretrained(out)
    missing = [f for f in ONNX_FILES if not (Path(out) / f).is_file()]
    if missing:
        raise BackendError(f"ONNX export of '{model_path}' did not produce {missing}")
    return Path(out)


class _RecordingSession:
    """Wraps an ``InferenceSession``: passes calls through and hands every input feed to ``sink``."""

    def __init__(self, session, sink):
        self._session = session
        self._sink = sink

    def run(self, output_names, input_feed, *args, **kwargs):
        self._sink(input_feed)
        return self._session.run(output_names, input_feed, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


class FeedRecorder:
    """Per-example input feeds of each graph: all encoder/first-step rows, a bounded sample of later steps."""

    def __init__(self, max_step_samples: int, seed: int = 0):
        self.feeds: dict[str, list[dict]] = {name: [] for name in ONNX_FILES}
        self.max_step_samples = max_step_samples
        self.step_rows_seen = 0
        self._rng = random.Random(seed)

    def sink(self, file_name: str):
        def record(feed: dict) -> None:
            batch = next(iter(feed.values())).shape[0]
            for row in range(batch):
                if file_name != DECODER_WITH_PAST:
                    self.feeds[file_name].append({k: v[row].copy() for k, v in feed.items()})
                    continue
                # reservoir sampling over all (example, step) pairs of the decoder-with-past graph
                self.step_rows_seen += 1
                kept = self.feeds[file_name]
                if len(kept) < self.max_step_samples:
                    kept.append({k: v[row].copy() for k, v in feed.items()})
                else:
                    slot = self._rng.randrange(self.step_rows_seen)
                    if slot < self.max_step_samples:
                        kept[slot] = {k: v[row].copy() for k, v in feed.items()}

        return record


def record_calibration_feeds(
    onnx_dir: str | Path,
    tokenizer,
    sources: list[str],
    batch_size: int = 16,
    max_new_tokens: int = 64,
    max_step_samples: int = 512,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Translate ``sources`` with the fp32 ONNX graphs and return the recorded per-example feeds of each graph."""
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM

    model = ORTModelForSeq2SeqLM.from_pretrained(onnx_dir, use_cache=True, use_merged=False, use_io_binding=False)
    recorder = FeedRecorder(max_step_samples, seed)
    for part, name in (
        (model.encoder, ENCODER),
        (model.decoder, DECODER),
        (model.decoder_with_past, DECODER_WITH_PAST),
    ):
        part.session = _RecordingSession(part.session, recorder.sink(name))
    with torch.inference_mode():
        for i in range(0, len(sources), batch_size):
            enc = tokenizer(sources[i : i + batch_size], return_tensors="pt", padding=True)
            model.generate(**enc, max_new_tokens=max_new_tokens, num_beams=1, do_sample=False)
    empty = [name for name, feeds in recorder.feeds.items() if not feeds]
    if empty:
        raise BackendError(
            f"calibration recorded no inputs for {empty} (every calibration translation ended after one token?); "
            "use longer or more calibration sources"
        )
    logger.info(
        "calibration feeds: %s (decoder-with-past sampled from %d example-steps)",
        {k: len(v) for k, v in recorder.feeds.items()},
        recorder.step_rows_seen,
    )
    return recorder.feeds


def _recipe(qconfig, target: str, static: bool, per_channel: bool, keep_float: tuple[str, ...]) -> dict:
    """The artifact fields that describe how the graphs were quantized."""
    return {
        "onnx_files": list(ARTIFACT_ONNX_FILES),
        "instruction_set": target,
        "per_channel": per_channel,
        "quantization": "static int8 (QDQ, MinMax calibration; weight-bearing MatMul/Gather nodes"
        + (f"; float32: {', '.join(keep_float)})" if keep_float else ")")
        if static
        else "dynamic int8 (IntegerOps)",
        "static_keep_float": list(keep_float) if static else None,
        "operators_quantized": list(qconfig.operators_to_quantize),
        "weight_type": qconfig.weights_dtype.name,
        "activation_type": qconfig.activations_dtype.name,
    }


def _calibrated_ranges(quantizer, qconfig, file_name: str, feeds: list[dict], augmented: Path, external: bool):
    """MinMax activation ranges of one graph over its recorded calibration feeds (onnx-static-int8)."""
    from onnxruntime.quantization import CalibrationMethod
    from optimum.onnxruntime.configuration import CalibrationConfig

    calibration = CalibrationConfig(
        dataset_name="llmdiet-recorded-feeds",
        dataset_config_name=file_name,
        dataset_split="calibration",
        dataset_num_samples=len(feeds),
        method=CalibrationMethod.MinMax,
        moving_average=False,
    )
    # ``fit`` only iterates over the dataset: a list of per-example feed dicts works like a Dataset.
    return quantizer.fit(
        dataset=feeds,
        calibration_config=calibration,
        onnx_augmented_model_name=augmented,
        operators_to_quantize=qconfig.operators_to_quantize,
        use_external_data_format=external,
    )


def quantize_onnx(
    model_path: str,
    out: str | Path,
    tokenizer,
    *,
    static: bool,
    per_channel: bool = True,
    calibration_sources: list[str] | None = None,
    calibration_batch_size: int = 16,
    calibration_max_new_tokens: int = 64,
    max_step_samples: int = 512,
    seed: int = 0,
    keep_float: tuple[str, ...] = ("wo",),
) -> dict:
    """Export and int8-quantize the three graphs into ``out``; returns artifact fields describing the recipe."""
    from optimum.onnxruntime import ORTQuantizer

    out = Path(out)
    calibration_limits = (calibration_batch_size, calibration_max_new_tokens)
    qconfig, target = quantization_config(static, per_channel)
    extra = _recipe(qconfig, target, static, per_channel, keep_float)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llmdiet-onnx-", dir=out) as tmp:
        logger.info("exporting %s to ONNX ...", model_path)
        export_dir = export_onnx(model_path, Path(tmp) / "fp32")
        logger.info("exported in %.0f s", time.perf_counter() - start)
        feeds: dict[str, list[dict]] = {}
        if static:
            if not calibration_sources:
                raise BackendError("onnx-static-int8 needs calibration sources (zero usable rows given)")
            logger.info("calibrating on %d sources (recording encoder/decoder inputs) ...", len(calibration_sources))
            feeds = record_calibration_feeds(
                export_dir, tokenizer, calibration_sources, *calibration_limits, max_step_samples, seed
            )
            extra["calibration_feeds"] = {name: len(v) for name, v in feeds.items()}
        for file_name in ONNX_FILES:
            logger.info("quantizing %s (%.0f s so far)", file_name, time.perf_counter() - start)
            quantizer = ORTQuantizer.from_pretrained(export_dir, file_name=file_name)
            external = (export_dir / file_name).stat().st_size > EXTERNAL_DATA_THRESHOLD
            ranges = None
            if static:
                qconfig.nodes_to_quantize = weight_nodes(export_dir / file_name, keep_float)
                extra.setdefault("static_quantized_nodes", {})[file_name] = len(qconfig.nodes_to_quantize)
                ranges = _calibrated_ranges(
                    quantizer, qconfig, file_name, feeds.pop(file_name), Path(tmp) / f"augmented_{file_name}", external
                )
            quantizer.quantize(
                qconfig,
                save_dir=out,
                file_suffix=None,
                calibration_tensors_range=ranges,
                use_external_data_format=external,
            )
        for name in ("config.json", "generation_config.json"):
            if (export_dir / name).is_file():
                shutil.copy2(export_dir / name, out / name)
    extra["decoder_merge"] = merge_decoder_graphs(out)
    tokenizer.save_pretrained(out)
    return extra


def export_onnx_fp32(model_path: str, out: str | Path, tokenizer) -> dict:
    """``onnx-fp32``: the unquantized export (the ONNX Runtime baseline for the int8 variants)."""
    export_onnx(model_path, out)
    merged = merge_decoder_graphs(out)
    tokenizer.save_pretrained(out)
    return {"onnx_files": list(ARTIFACT_ONNX_FILES), "decoder_merge": merged}


# ----------------------------------------------------------------------------- the registry's entry points


def make_fp32_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    return {"device": "cpu", **export_onnx_fp32(job.model, out, tokenizer)}


def make_int8_artifact(job, model, tokenizer, sources, out: Path, model_type: str) -> dict:
    """``onnx-dynamic-int8`` and ``onnx-static-int8`` (calibrated on ``sources``)."""
    return {
        "device": "cpu",
        **quantize_onnx(
            job.model,
            out,
            tokenizer,
            static=job.method == "onnx-static-int8",
            per_channel=True if job.per_channel is None else job.per_channel,
            calibration_sources=sources,
            calibration_batch_size=job.calibration_batch_size,
            calibration_max_new_tokens=job.calibration_max_new_tokens,
            seed=job.seed,
            # wo is T5's feed-forward output; other families have no such node (before: recorded, yet fc2 quantized)
            keep_float=tuple(job.static_keep_float) if model_type in T5_TYPES else (),
        ),
    }
