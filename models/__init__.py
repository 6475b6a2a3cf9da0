"""The contract: wire messages, topic names and the asset-type catalogue. Imports nothing of ours."""
