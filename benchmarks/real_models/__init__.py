"""The real-model suite of ``benchmarks/real_models.py`` (issue 17, item 3).

* :mod:`.models`: the models, written once for Pyro and NumPyro with pyro-api's dispatch,
  and the real datasets they run on (shipped inside statsmodels and scikit-learn);
* :mod:`.laplace`: the Laplace baseline, a compiled damped Newton in JAX;
* :mod:`.harness`: the guide, NUTS and Laplace on one model's datasets, and the metrics.
"""
