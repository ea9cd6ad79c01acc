"""The one training engine every command shares: optimiser and schedule, checkpoints, the fit loop, DDP."""
