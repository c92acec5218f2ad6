"""InCTRL (in-context residual learning, auxiliary training) with the InCTRL-Mx pixel map."""

from fsas_bench.methods.inctrl.config import InCTRLConfig, default_blocks
from fsas_bench.methods.inctrl.lightning_module import InCTRL
from fsas_bench.methods.inctrl.torch_model import InCTRLInputs, InCTRLModel, InCTRLOutput, inctrl_loss

__all__ = ["InCTRL", "InCTRLConfig", "InCTRLInputs", "InCTRLModel", "InCTRLOutput", "default_blocks", "inctrl_loss"]
