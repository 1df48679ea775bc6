"""Publishing on the Hugging Face Hub and the official releases: a model source (`source`: what a `--model` value
names, read once), the official conversion and its cache (`official`), the repo folder and its one-commit upload
(`repo`), model cards (`model_card`) and the demo's Space folder (`space`)."""
