import sys
from pathlib import Path

# Test helpers (the NumPy oracle) live next to the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_terminal_summary(terminalreporter):
    """Report how many fuzz cases ran (tests/test_fuzz.py counts them)."""
    fuzz = sys.modules.get("test_fuzz")
    cases = getattr(fuzz, "CASES", None)
    if cases:
        total = sum(v for k, v in cases.items() if ":" not in k)
        detail = ", ".join(f"{k} {v}" for k, v in sorted(cases.items()))
        terminalreporter.write_line(f"fuzz cases run: {total} ({detail})")
