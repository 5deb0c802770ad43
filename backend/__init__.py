"""The anju backend: ingest into PostgreSQL/TimescaleDB, the alerting core, delivery, the API.

Needs the ``backend`` extra (aiomqtt, FastAPI, psycopg, numpy).
"""
