"""Training machinery shared by the models: the loop (single process or DistributedDataParallel),
checkpoints with resume, periodic evaluation, metrics and sample pictures."""
