"""llmdiet's rougeL as a Hugging Face `evaluate` metric module, loadable offline from a path:

    import evaluate
    from llmdiet.evaluation.metrics import metric_module_path
    evaluate.load(metric_module_path("rougeL")).compute(predictions=["Le chat dort."], references=["Le chat dort."])

Corpus ROUGE-L F1 x 100 (mean over sentences) with llmdiet's Unicode word tokenizer: the number llmdiet eval reports.
"""

from llmdiet.evaluation.metrics import evaluate_metric_class

LlmdietRougeL = evaluate_metric_class("rougeL", "LlmdietRougeL", __doc__)
