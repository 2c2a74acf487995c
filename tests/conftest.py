import sys
from pathlib import Path

# The end-to-end tests share a few steps (support.py) beside them.
sys.path.insert(0, str(Path(__file__).parent))
