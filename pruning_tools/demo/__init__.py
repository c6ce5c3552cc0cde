"""``pruning-tools demo``: the whole offline pipeline and the live node end to end, as resumable stages,
with a report (markdown, JSON, plots)."""
