"""InCTRL (in-context residual learning, auxiliary training) with the InCTRL-Mx pixel map."""
