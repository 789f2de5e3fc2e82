"""The run: the session around a recipe, resume, the command line and Hydra set-up."""
