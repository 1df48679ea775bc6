"""Training (`perceptclip train`, `train.py`): the recipe's options (`recipe`, `recipe_help`), what a group of
datasets implies and the model it builds (`task`), the Trainer glue (`trainer`), the experiment over splits and
learning rates (`experiment`), the run's log (`run_log`) and reports (`run_reports`), in the folders of
:mod:`perceptclip_hf.run_layout`."""
