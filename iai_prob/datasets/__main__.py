"""Regenerate the shipped datasets: ``python -m iai_prob.datasets``."""

from pathlib import Path

from iai_prob.datasets import write_linear_regression_demo

if __name__ == "__main__":
    write_linear_regression_demo(Path(__file__).parent)
