"""WinCLIP / WinCLIP+ (training-free, zero- and few-shot)."""
