"""Proxies beside the weight-space merge, scored on the same mixtures: the output-space proxy (the experts'
token distributions mixed, :mod:`mixlab.proxies.output`) and proxies fitted on a few true runs (a per-benchmark
affine calibration and a regression that takes proxy scores as features, :mod:`mixlab.proxies.fitted`)."""
