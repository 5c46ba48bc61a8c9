"""llmdiet's chrf as a Hugging Face `evaluate` metric module, loadable offline from a path:

    import evaluate
    from llmdiet.evaluation.metrics import metric_module_path
    metric = evaluate.load(metric_module_path("chrf"))
    metric.compute(predictions=["Le chat dort."], references=["Le chat dort."])   # {"chrf": 100.0, ...}

Corpus chrF from sacrebleu with its defaults (char 6-grams, beta 2): the number llmdiet eval reports.
The computation is llmdiet.evaluation.metrics (sacrebleu / rouge_score), so the numbers equal `llmdiet eval`'s.
"""

import datasets
import evaluate

from llmdiet.evaluation import metrics as _metrics

_DESCRIPTION = "Corpus chrF from sacrebleu with its defaults (char 6-grams, beta 2): the number llmdiet eval reports."
_KWARGS = """
Args:
    predictions: list of hypothesis strings.
    references: list of reference strings (one per prediction), or a list of one-element lists.
Returns:
    {"chrf": score on a 0-100 scale, plus the signature or tokenizer that says how it was computed}
"""


class LlmdietChrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS,
            features=[datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
                      datasets.Features({"predictions": datasets.Value("string"),
                                         "references": datasets.Sequence(datasets.Value("string"))})],
        )

    def _compute(self, predictions, references):
        refs = [r[0] if isinstance(r, (list, tuple)) else r for r in references]
        return _metrics.metric_for_evaluate("chrf", list(predictions), refs)
