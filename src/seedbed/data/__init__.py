"""Data: datasets addressed by (epoch, index), their splits, and the batches of an epoch.

`arrays` holds in-memory datasets (synthetic sets, a user's .npz) and the
train/val/test split; `loader` serves an epoch's batches, in an order that is a
function of (data seed, epoch) alone.
"""
