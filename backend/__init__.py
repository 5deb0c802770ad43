"""The anju backend: ingest into PostgreSQL/TimescaleDB, the alerting core, delivery, the API.

Needs the ``backend`` extra (aiomqtt, FastAPI, psycopg, numpy).
"""

import os

# The rules use numpy on windows of tens of readings, where OpenBLAS's thread pool does not
# speed anything up and its threads only take CPU from the backend's own (set before numpy
# is first imported; an explicit setting is kept).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
