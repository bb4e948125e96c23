"""Regenerate the shipped datasets: ``python -m iai_prob.datasets``."""

from pathlib import Path

from iai_prob.datasets import write_linear_regression_demo, write_schools_demo

if __name__ == "__main__":
    write_linear_regression_demo(Path(__file__).parent)
    write_schools_demo(Path(__file__).parent)
