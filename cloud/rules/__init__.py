"""Rules that turn data into decisions: the libraries, one module per family (cold chain, maintenance), that the
packs (``cloud/packs``) apply to their kinds of asset; the runner that schedules the packs; edge local rules as
alerts; and their explanation. Each alert a rule raises carries its evidence (rule, window, values, thresholds)
so an auditor can see why."""
