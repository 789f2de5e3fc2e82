"""seedbed's Hydra plugin: the SLURM launcher whose requeued jobs resume (resuming_launcher)."""
