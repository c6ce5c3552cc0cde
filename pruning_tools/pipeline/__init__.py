"""``pruning-tools prune``: for each trial, level and strategy -> ratios -> surgery + fine-tune -> measure
-> record; its config, its report (Table 1) and where the work runs (in process, local pool, Ray)."""
