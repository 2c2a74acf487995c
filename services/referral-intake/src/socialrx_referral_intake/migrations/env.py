from socialrx_shared.migrations import run_env
from socialrx_referral_intake.store import metadata

run_env(metadata)
