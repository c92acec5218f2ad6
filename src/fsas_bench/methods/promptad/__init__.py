"""PromptAD (prompt learning with one-class semantic concatenation and explicit anomaly margin, CVPR 2024)."""
