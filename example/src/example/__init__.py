"""example: an experiment on seedbed. The recipe is train.py; your components beside it."""
