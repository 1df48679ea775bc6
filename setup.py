"""Packages found automatically, plus the two folders that install under other names: `modeling/` is the remote code
shipped to the Hub beside the weights (the package imports the very same files as `perceptclip_hf.modeling`), and
`model_cards/` / `configs/` hold the card templates and the paper's recipes. Everything else is in setup.cfg."""

from setuptools import find_packages, setup

MAPPED = {
    "perceptclip_hf.modeling": "modeling",
    "perceptclip_hf.model_cards": "model_cards",
    "perceptclip_hf.configs": "configs",
}

setup(packages=[*find_packages(include=["perceptclip_hf", "perceptclip_hf.*"]), *MAPPED], package_dir=MAPPED)
