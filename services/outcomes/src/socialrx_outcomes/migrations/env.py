from socialrx_shared.migrations import run_env
from socialrx_outcomes.store import metadata

run_env(metadata)
