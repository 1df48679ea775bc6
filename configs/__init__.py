"""The paper's training recipes (YAML), installed as package data: `perceptclip train --config quickstart`."""
