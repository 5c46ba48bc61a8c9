"""llmdiet's chrf as a Hugging Face `evaluate` metric module, loadable offline from a path:

    import evaluate
    from llmdiet.evaluation.metrics import metric_module_path
    evaluate.load(metric_module_path("chrf")).compute(predictions=["Le chat dort."], references=["Le chat dort."])

Corpus chrF from sacrebleu with its defaults (char 6-grams, beta 2): the number llmdiet eval reports.
"""

from llmdiet.evaluation.metrics import evaluate_metric_class

LlmdietChrf = evaluate_metric_class("chrf", "LlmdietChrf", __doc__)
