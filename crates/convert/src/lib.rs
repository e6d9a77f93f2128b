//! deposium-convert: safetensors → ONNX graph, quantizers.
