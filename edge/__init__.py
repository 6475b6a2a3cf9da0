"""The gateway daemon: sources, detectors, local rules, outbox, uplink. Imports only ``models``."""
