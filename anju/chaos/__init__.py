"""``anju chaos``: a city under fire (issue 16).

A whole city on this machine (private PostgreSQL and Mosquitto, the backend, real gateway
processes for some communities, simulated gateways for the rest, city-scale device
simulators), faults injected on a seeded schedule, and a verdict computed from the outside:
what the harness's own probe devices published and had acknowledged, against what PostgreSQL
holds and what the departments' subscriptions received.

It lives in ``anju`` (not ``device_simulators``) because it orchestrates every package, as
``anju demo`` does, and reuses the demo's pieces (``anju.demo``, ``anju.servers``).

- ``verdict``: the checks, pure functions over recorded data (unit tested on broken inputs).
- ``city``: the processes, the probes, the subscribers and the faults.
- ``run``: profiles, the schedule, the table, the HTML report and the JSON summary.
- ``storm``: ``anju bench storm``, the replay storm as a benchmark.
"""
