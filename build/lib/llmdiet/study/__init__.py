"""Studies: experiments built from distill, quantize and evaluate.

- ``alpha_sweep.py``: one student per alpha, each evaluated, then compared.
- ``bit_sweep.py``: 2–8-bit RTN vs GPFQ weights of teacher and students.

The top layer: may import every other part of llmdiet; nothing imports it but the CLI.
"""
