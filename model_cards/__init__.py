"""Model card templates (Jinja2 Markdown) for `perceptclip_hf.hub.model_card`; installed as package data."""
