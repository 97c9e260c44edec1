"""The pure domain: event payloads, the order lifecycle, rules, indicators, scoring.

Nothing under this package may import an I/O framework (FastAPI, Starlette,
SQLAlchemy, asyncpg, aiokafka, httpx), read the environment or read the clock:
time and policy values come in as arguments. import-linter enforces this.
"""
