"""Benchmarks of the figures SPEC.md holds Daypass to, each against the API server's own floor.

Every script runs on the local control plane (or the cluster of --kubeconfig), starts the
operator as a process of its own, and writes its figures to bench/results/ and the terminal.
Measuring is all they do: they never change the operator, and never assert a timing.
"""
