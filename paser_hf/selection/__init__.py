"""PASER selection (paper Sec. 3, Algorithm 1) and the baselines it is compared with."""
