from socialrx_shared.migrations import run_env
from socialrx_funding_ledger.store import metadata

run_env(metadata)
