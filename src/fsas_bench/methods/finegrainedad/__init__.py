"""FineGrainedAD (multi-level fine-grained prompt alignment); PromptAD (``methods/promptad``) reuses its parts."""
