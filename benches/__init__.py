"""Benchmarks (``anju bench NAME``, registered in ``anju.bench``), apart from the runtime code:
a bench may import ``backend``, ``gateway`` and ``anju``; none of those imports a bench."""
