"""llmdiet."""
