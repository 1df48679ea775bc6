"""``perceptclip export``: a model folder that also holds the model exported for ONNX Runtime or OpenVINO, each
export validated against PyTorch fp32 on real images before it is written (:mod:`.job`)."""
