"""The graph IR, its importers (TFLite, Keras) and the plan writer."""

from layertune.graph.ir import Graph, Node, Tensor

__all__ = ["Graph", "Node", "Tensor"]
