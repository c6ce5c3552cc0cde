"""Channel surgery: the pruning space (coupled channel groups, per-layer ratios -> sparsity) and the
physical removal of channels with Torch-Pruning, stepwise with fine-tuning (stage 3)."""
