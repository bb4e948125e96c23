"""The linear-regression benchmark, one module per question (its command:
``benchmarks/linear_regression.py``)."""
