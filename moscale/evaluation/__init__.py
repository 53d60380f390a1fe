"""Evaluation: the paper's metrics, the T2M and contrastive evaluators, semantic accuracy, and the protocol."""
