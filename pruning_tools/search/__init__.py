"""Choosing per-layer ratios: stage 1 (gradient-L1 importance -> budgets), stage 2 (the environment,
its reward proxy and the PPO agent) and the strategies behind one interface (uniform ... full)."""
