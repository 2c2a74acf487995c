from socialrx_referral_intake.store import metadata
from socialrx_shared.migrations import run_env

run_env(metadata)
