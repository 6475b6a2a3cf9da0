"""Rules that turn data into decisions, one module per family (cold chain, maintenance). Each alert a
rule raises carries its evidence (rule, window, values, thresholds) so an auditor can see why."""
