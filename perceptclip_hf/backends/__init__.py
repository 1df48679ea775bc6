"""Where a model's forward pass runs: PyTorch, or the model exported for ONNX Runtime or OpenVINO, at a precision.

- ``graph.py``: the model with LoRA merged as one graph (normalised pixels in, the first head's logits out, a
  dynamic batch axis) written as ONNX, its int8 quantisation, OpenVINO IR.
- ``layout.py``: the export folder (``onnx/model.onnx``, ``onnx/model_quantized.onnx``,
  ``openvino/openvino_model.xml``), the record ``perceptclip_export.json``, which file runs a backend at a precision.
- ``runtimes.py``: the backends and their precisions, and the sessions that run an export (imported when used:
  the extras ``[onnx]`` and ``[openvino]``).
- ``agreement.py``: how close a backend's outputs are to PyTorch fp32 on the same pixels, and the gate a lower
  precision must pass.
- ``sessions.py``: a loaded model on a backend: its folder's export, else one made once and cached.
- ``probe.py``: ``--backend auto``, the fastest backend and precision that passes the gate, measured once per
  machine and model.

Nothing here imports onnxruntime or openvino at import time.
"""
