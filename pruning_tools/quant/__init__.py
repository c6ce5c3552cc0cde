"""Quantisation and export: FP32/FP16/INT8 ONNX models, the constrained precision bisection, TensorRT
engine builds and ``pruning-tools export`` (a prune run -> a sha256-checked engine zoo)."""
