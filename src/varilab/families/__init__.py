"""The model families, one module or package each (vae, sae, diffusion/, codec/, ...), beside what they share: the
protocol (`Family`, `Command`, `Run`), the options (`option`, `TrainOptions`), the run folder's mechanics (`folder`)
and the registry (`registry`: names to families, `load(run_dir)`). Shared command modules that several families list
(attack/, collapse.py) are named in pyproject.toml's import contracts; families import each other through nothing else.
A new family is one module that builds a `Family` and calls `registry.register(family)`: README, "Adding a family".
"""
