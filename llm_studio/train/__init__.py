"""The training engine: the recipe (one run, top to bottom), optimizer/schedule, evaluation metrics,
checkpoints + resume, distributed setup. Entry: `llm_studio.train.launch.train_command`."""
