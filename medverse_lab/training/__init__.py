"""Topology-aware training: the collator (masks and positions per example), the
flex_attention block mask, the trainer loop and its distributed helpers.

``ml.TopologyCollator`` plugs into ``transformers.Trainer`` and TRL; ``ml.train.train``
(this package's :mod:`.trainer`) is the loop that trained the teaching models.
"""
