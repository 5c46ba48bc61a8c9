"""The named eval sets (``NAME.yaml``; README.md has the schema). Data, not code: this file lets the wheel ship the
folder as the package ``llmdiet.eval_sets`` (pyproject.toml ``package-dir``), while the checkout keeps it at the top."""
