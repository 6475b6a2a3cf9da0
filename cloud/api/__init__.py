"""The operators' API (FastAPI): routes translate HTTP to calls on the stores and registry."""
