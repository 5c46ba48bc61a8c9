"""llmdiet's bleu as a Hugging Face `evaluate` metric module, loadable offline from a path:

    import evaluate
    from llmdiet.evaluation.metrics import metric_module_path
    evaluate.load(metric_module_path("bleu")).compute(predictions=["Le chat dort."], references=["Le chat dort."])

Corpus BLEU from sacrebleu with its defaults (13a tokenizer, exp smoothing): the number llmdiet eval reports.
"""

from llmdiet.evaluation.metrics import evaluate_metric_class

LlmdietBleu = evaluate_metric_class("bleu", "LlmdietBleu", __doc__)
