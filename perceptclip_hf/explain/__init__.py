"""Interpretability (paper sec. 6): attention-head importance and heatmaps (`interpretability.explain`), Grad-CAM for
convolutional backbones (`gradcam`), the figures (`heatmaps`)."""
