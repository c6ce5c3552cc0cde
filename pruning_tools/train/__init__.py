"""Training and measuring detectors: the training loop, the dense baseline, mAP and KITTI AP evaluation,
FLOPs/latency measurement, and the condition policy's training on an engine zoo."""
