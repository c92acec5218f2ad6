"""DictAS: class-generalizable few-shot anomaly segmentation by dictionary lookup (ICCV 2025)."""
