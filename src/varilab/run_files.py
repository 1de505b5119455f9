"""The names of a run folder's files, with no imports, so that the command line and the run folder's mechanics
name them without loading PyTorch."""
CONFIG = "config.json"  # family, format version and options
CHECKPOINT = "checkpoint.safetensors"  # weights, optimiser state and counters of the last finished epoch
WEIGHTS = "model.safetensors"  # the trained weights
METRICS = "metrics.jsonl"  # one line per epoch
STEPS = "steps.jsonl"  # training logs every few steps, so that short runs draw a curve too
REPORT = "report.html"
