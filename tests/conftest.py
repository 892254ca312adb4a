import sys
from pathlib import Path

# Test helpers (the NumPy oracle) live next to the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))
