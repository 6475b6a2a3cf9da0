"""The cloud twin: ingest, stores, twin state, rules, alerts, API. Imports only ``models``."""
